// Package proxy is the heart of kmsproxyd: the HTTP handler that speaks the
// KMS JSON 1.1 API to the parent instance and to apps inside the enclave,
// adds the enclave's attestation (Recipient) to the operations that return
// secrets, relays every call to KMS through the upstream client, opens the
// CiphertextForRecipient envelope inside the enclave and answers as KMS would
// have answered a caller without Recipient.
//
// Each listener has its own policy rules (internal/policy): what operations
// it may call, on which keys, with which encryption context, whether it may
// receive plaintext, push credentials, or read the control endpoints. Each
// also has its own budgets, so that one listener's callers cannot starve
// the other's: in-flight requests, open connections, and NSM attestations
// for remote verifiers. Every KMS answer that names a key is checked against
// kmsproxyd's own region and the policy's pinned accounts, regions and keys
// before anything of it leaves.
package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"golang.org/x/net/netutil"
	"golang.org/x/time/rate"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/recipient"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// HTTP server limits for both listeners. A KMS request is one small JSON
// body (kmsapi.MaxRequestBody); AWS SDKs send a few hundred bytes of headers.
const (
	// MaxHeaderBytes bounds request headers (SDK requests carry < 2 KiB:
	// Authorization, X-Amz-* and a User-Agent).
	MaxHeaderBytes = 16 << 10
	// ReadHeaderTimeout drops clients that dribble headers (slowloris).
	ReadHeaderTimeout = 5 * time.Second
	// IdleTimeout closes keep-alive connections nobody uses.
	IdleTimeout = 2 * time.Minute
	// bodyReadTimeout bounds reading one request body.
	bodyReadTimeout = 10 * time.Second
)

// Config wires a Server.
type Config struct {
	Policy    *policy.Policy
	Recipient *recipient.Manager
	Upstream  *upstream.Client
	// Credentials reports readiness of the upstream credentials. It must
	// be the provider Upstream signs with: the decrypt cache keeps each
	// answer only while these credentials stay the ones that obtained it.
	Credentials credentials.Provider
	// Push receives PUT /v1/credentials; nil unless --credentials=push.
	Push *credentials.Push
	// Attester serves POST /v1/attestation for remote verifiers.
	Attester attestation.Attester
	// MaxInflight bounds concurrent KMS API requests on each listener whose
	// policy sets no max_inflight; beyond it callers get
	// ThrottlingException.
	MaxInflight int
	// RequestTimeout bounds a whole request, upstream retries included.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	// Version and Settings are shown by /v1/info (Settings: the effective
	// configuration, which the caller must keep free of secrets).
	Version  string
	Settings map[string]any
}

// Server serves the kmsproxyd API. It is safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	// listeners holds each listener's rules and budgets, by name.
	listeners map[string]*listenerHandler
	// decrypts holds one token per envelope being decrypted (GOMAXPROCS).
	decrypts chan struct{}
	started  time.Time
	// acceptance tracks KMS refusing the enclave's attestation (/readyz).
	acceptance acceptance
	// home is the partition and region of every key ARN KMS may answer
	// with: the region the upstream client signs for, fixed at start.
	home policy.Home
}

// Requested attestation documents (POST /v1/attestation) each cost an NSM
// call, which the enclave's own documents share: each listener may ask for
// AttestationBurst documents at once and then one every
// AttestationInterval; beyond that it gets ThrottlingException. A remote
// verifier needs one document per session; the NSM answers in milliseconds,
// so a listener at this rate keeps it busy well under 1% of the time.
const (
	AttestationBurst    = 10
	AttestationInterval = 500 * time.Millisecond
)

// New returns a Server.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Policy == nil:
		return nil, errors.New("proxy: no policy")
	case cfg.Recipient == nil:
		return nil, errors.New("proxy: no recipient key manager")
	case cfg.Upstream == nil:
		return nil, errors.New("proxy: no upstream client")
	case cfg.Credentials == nil:
		return nil, errors.New("proxy: no credentials provider")
	case cfg.Attester == nil:
		return nil, errors.New("proxy: no attester")
	case cfg.MaxInflight <= 0:
		return nil, errors.New("proxy: max inflight must be positive")
	case cfg.RequestTimeout <= 0:
		return nil, errors.New("proxy: request timeout must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		decrypts:  make(chan struct{}, runtime.GOMAXPROCS(0)),
		started:   time.Now(),
		listeners: make(map[string]*listenerHandler, len(policy.Listeners)),
		home:      policy.HomeOf(cfg.Upstream.Region()),
	}
	for _, name := range policy.Listeners {
		rules := cfg.Policy.Rules(name)
		s.listeners[name] = &listenerHandler{
			s:            s,
			name:         name,
			rules:        rules,
			inflight:     make(chan struct{}, rules.InflightLimit(cfg.MaxInflight)),
			attestations: rate.NewLimiter(rate.Every(AttestationInterval), AttestationBurst),
		}
	}
	s.metrics = newMetrics(s)
	for name, l := range s.listeners {
		if dc := l.rules.DecryptCache; dc != nil {
			l.cache = newDecryptCache(dc, s.metrics.cacheFor(name))
		}
	}
	cfg.Recipient.SetEvents(recipientEvents(s.log, s.metrics))
	return s, nil
}

// recipientEvents are the hooks that make key generation, rotation and NSM
// attestation show in the metrics and logs.
func recipientEvents(log *slog.Logger, m *Metrics) recipient.Events {
	return recipient.Events{
		Attested: func(d time.Duration, err error) {
			m.nsm.Observe(d.Seconds())
			if err != nil {
				m.nsmFails.Inc()
				log.Warn("attestation failed", "step", stepAttestation, "err", err)
			}
		},
		Rotated: func(fp string) {
			m.rotations.Inc()
			log.Info("recipient key rotated", "key_fingerprint", fp)
		},
		KeyGenerated: func(d time.Duration, err error) {
			if err != nil {
				log.Error("recipient key generation failed", "err", err)
				return
			}
			log.Debug("recipient key generated", "duration_ms", ms(d))
		},
	}
}

// listener returns the named listener's state; a name that is no listener
// gets deny-all rules.
func (s *Server) listener(name string) *listenerHandler {
	if l, ok := s.listeners[name]; ok {
		return l
	}
	return &listenerHandler{s: s, name: name, rules: s.cfg.Policy.Rules(name), inflight: make(chan struct{}),
		attestations: rate.NewLimiter(0, 0)}
}

// Handler returns the HTTP handler for one listener ("parent" or "local").
func (s *Server) Handler(listener string) http.Handler {
	l := s.listener(listener)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{$}", l.serveAPI)
	mux.HandleFunc("/{$}", l.serveAPI) // wrong method: answered KMS-style
	mux.HandleFunc("GET /healthz", l.control("healthz", s.serveHealthz))
	mux.HandleFunc("GET /readyz", l.control("readyz", s.serveReadyz))
	mux.HandleFunc("GET /metrics", l.control("metrics", s.metrics.handlerFor(l.name, l.rules.MetricsAllListeners)))
	mux.HandleFunc("GET /v1/info", l.control("info", s.serveInfo))
	mux.HandleFunc("POST /v1/attestation", l.control("attestation", l.serveAttestation))
	mux.HandleFunc("PUT /v1/credentials", l.serveCredentials)
	// The same paths with another method: 405 with Allow, not 404.
	for path, allow := range map[string]string{
		"/healthz": "GET", "/readyz": "GET", "/metrics": "GET", "/v1/info": "GET",
		"/v1/attestation": "POST", "/v1/credentials": "PUT",
	} {
		mux.HandleFunc(path, methodNotAllowed(allow))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.UnknownOperation, Message: "no such endpoint", Status: http.StatusNotFound})
	})
	return l.recoverer(mux)
}

// HTTPServer returns an http.Server with kmsproxyd's limits serving the
// named listener's Handler. Serve it on LimitListener(listener, ln), which
// holds the listener to its connection limit.
func (s *Server) HTTPServer(listener string, errorLog *slog.Logger) *http.Server {
	conns := s.metrics.conns.WithLabelValues(listener)
	return &http.Server{
		Handler:           s.Handler(listener),
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       bodyReadTimeout + ReadHeaderTimeout,
		WriteTimeout:      s.cfg.RequestTimeout + 5*time.Second,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(errorLog.Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Inc()
			case http.StateClosed, http.StateHijacked:
				conns.Dec()
			}
		},
	}
}

// LimitListener returns ln held to the named listener's connection limit
// (policy max_connections, policy.DefaultMaxConnections by default): at the
// limit, kmsproxyd accepts no further connection on that listener until one
// closes, and the ones waiting stay in the kernel's backlog, costing
// kmsproxyd nothing. Connections that dribble or stall are dropped by the
// server's header and read timeouts, which frees their place.
func (s *Server) LimitListener(listener string, ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, s.listener(listener).rules.ConnectionLimit())
}

// listenerHandler is one listener's rules and budgets.
type listenerHandler struct {
	s     *Server
	name  string
	rules *policy.Rules
	// inflight holds one token per KMS API request being served on this
	// listener (policy max_inflight, or Config.MaxInflight).
	inflight chan struct{}
	// attestations limits POST /v1/attestation on this listener.
	attestations *rate.Limiter
	// cache answers repeated Decrypt requests (policy decrypt_cache); nil
	// when the listener has none.
	cache *decryptCache
}

// Close zeroes and drops every answer the decrypt caches hold. Call it
// once the listeners have drained; a request served after it goes to KMS.
func (s *Server) Close() {
	for _, l := range s.listeners {
		if l.cache != nil {
			l.cache.close()
		}
	}
}

// recoverer turns a panic in a handler into KMSInternalException, logged
// with its stack but without the request, and keeps the daemon serving.
func (l *listenerHandler) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				l.s.log.Error("panic in handler", "listener", l.name, "path", r.URL.Path,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				l.s.metrics.panics.Inc()
				kmsapi.WriteError(w, kmsapi.Errorf(kmsapi.KMSInternal, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// control wraps a control endpoint with the listener's policy.
func (l *listenerHandler) control(name string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := l.rules.AllowControl(name); err != nil {
			writeControlDenied(w, err)
			return
		}
		h(w, r)
	}
}

// writeControlDenied answers a control endpoint the policy does not open to
// the listener: 403 Forbidden (the endpoint exists; this caller may not use
// it), in KMS's error shape with the policy's reason.
func writeControlDenied(w http.ResponseWriter, reason error) {
	e := kmsapi.PolicyDenied(reason)
	e.Status = http.StatusForbidden
	kmsapi.WriteError(w, e)
}

// methodNotAllowed answers a request to a known path with the wrong method.
// (Go's ServeMux would answer 405 itself, but the catch-all "/" pattern
// takes those requests first.)
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.UnknownOperation, Status: http.StatusMethodNotAllowed,
			Message: fmt.Sprintf("%s accepts only %s", r.URL.Path, allow)})
	}
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// withTimeout bounds a request by RequestTimeout.
func (s *Server) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}
