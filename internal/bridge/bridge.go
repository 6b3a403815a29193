// Package bridge serves a Nitro Enclave's kmsproxyd API on an address of the
// parent instance.
//
// From the parent, kmsproxyd is reachable only over vsock, which the AWS CLI,
// the SDKs of other languages and Prometheus cannot dial. The bridge listens
// on loopback TCP or a unix socket and relays every HTTP request (the KMS API
// on POST /, /metrics, /readyz, /v1/...) to the enclave unchanged, so those
// tools work with an endpoint override (aws --endpoint-url http://127.0.0.1:PORT).
//
// Whoever can reach the bridge can ask the enclave for plaintext, subject to
// kmsproxyd's parent listener policy. CheckListen therefore refuses addresses
// other machines can reach unless the operator says otherwise.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// Limits of the bridge's own HTTP server, chosen to match kmsproxyd's (the
// bridge must not accept what the enclave would refuse, nor hold
// connections it would drop).
const (
	// MaxRequestBody is kmsproxyd's request body limit
	// (kmsapi.MaxRequestBody, 64 KiB); larger bodies are refused
	// here without reaching the enclave. The largest control body (a
	// credentials push, internal/credentials.MaxPushBody) is 24 KiB.
	MaxRequestBody = kmsapi.MaxRequestBody
	// MaxHeaderBytes bounds request headers (SDK requests carry under 2 KiB;
	// kmsproxyd allows 16 KiB).
	MaxHeaderBytes = 16 << 10
	// ReadHeaderTimeout drops clients that dribble headers.
	ReadHeaderTimeout = 5 * time.Second
	// IdleTimeout closes idle client connections.
	IdleTimeout = 2 * time.Minute
	// ShutdownTimeout is how long Serve waits for requests in flight after
	// its context ends. kmsproxyd answers within its --request-timeout
	// (10 s by default).
	ShutdownTimeout = 15 * time.Second
	// DefaultResponseTimeout bounds the wait for the enclave's answer to one
	// request: kmsproxyd's default --request-timeout (10 s) with a margin
	// for a longer setting.
	DefaultResponseTimeout = time.Minute
	// upstreamIdle is how long an idle connection to the enclave is kept:
	// less than kmsproxyd's two-minute idle timeout, so the bridge closes
	// first and never reuses a connection the enclave is closing.
	upstreamIdle = 90 * time.Second
	// upstreamIdleConns is how many idle connections to the enclave are
	// kept for reuse.
	upstreamIdleConns = 64
)

// upstreamHost names the enclave in relayed requests' URLs and Host header;
// it is never resolved (every connection goes to the enclave address), and
// kmsproxyd ignores it.
const upstreamHost = "kmsproxy.enclave"

// ErrRemoteListen is the kind of error CheckListen returns for an address
// other machines could reach.
var ErrRemoteListen = errors.New("refusing a listen address reachable from other machines")

// CheckListen accepts unix sockets and loopback TCP addresses
// (127.0.0.0/8, ::1, localhost). Any other TCP address, including an
// unspecified host (tcp://:8000, every interface), is refused unless
// allowRemote, because the bridge hands out what the enclave decrypts.
// vsock is refused: the bridge exists to leave vsock.
func CheckListen(a transport.Addr, allowRemote bool) error {
	switch a.Network {
	case transport.Unix:
		return nil
	case transport.VSOCK:
		return fmt.Errorf("the bridge listens on tcp://HOST:PORT or unix:///path, not %s", a)
	case transport.TCP:
	default:
		return fmt.Errorf("no listen address")
	}
	host, _, err := net.SplitHostPort(a.HostPort)
	if err != nil {
		return fmt.Errorf("bad listen address %s: %w", a, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	if allowRemote {
		return nil
	}
	what := "host " + host + " is not a loopback address"
	if host == "" {
		what = "it listens on every interface"
	}
	return fmt.Errorf("%w: %s: %s, and anyone who can connect to the bridge can ask the enclave for plaintext "+
		"(Decrypt, GenerateDataKey and GenerateRandom answer with secrets), so the parent would expose the enclave's secrets to the network; "+
		"listen on 127.0.0.1 or a unix socket, or pass --allow-remote if a firewall or security group limits who can connect", ErrRemoteListen, a, what)
}

// Config configures a Bridge.
type Config struct {
	// Enclave is kmsproxyd's address (vsock://CID:PORT from the parent).
	Enclave transport.Addr
	// ResponseTimeout bounds the wait for the enclave's answer;
	// DefaultResponseTimeout when zero.
	ResponseTimeout time.Duration
	// Logger receives one debug line per request and warnings for relay
	// failures; nil discards them. Bodies and credentials are never logged.
	Logger *slog.Logger
}

// Bridge relays HTTP requests to kmsproxyd. It is an http.Handler and is
// safe for concurrent use.
type Bridge struct {
	cfg   Config
	log   *slog.Logger
	tr    *http.Transport
	proxy *httputil.ReverseProxy
}

var _ http.Handler = (*Bridge)(nil)

// New returns a Bridge to cfg.Enclave. It does not connect until the first
// request.
func New(cfg Config) (*Bridge, error) {
	if cfg.Enclave.Network == "" {
		return nil, errors.New("bridge: no enclave address")
	}
	if cfg.Enclave.Network == transport.VSOCK && cfg.Enclave.CID == transport.AnyCID {
		return nil, fmt.Errorf("bridge: the enclave address %s has no CID", cfg.Enclave)
	}
	if cfg.ResponseTimeout <= 0 {
		cfg.ResponseTimeout = DefaultResponseTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: cfg, log: log}
	b.tr = &http.Transport{
		Proxy:                 nil,
		DialContext:           transport.DialFunc(cfg.Enclave),
		MaxIdleConns:          upstreamIdleConns,
		MaxIdleConnsPerHost:   upstreamIdleConns,
		IdleConnTimeout:       upstreamIdle,
		ResponseHeaderTimeout: cfg.ResponseTimeout,
		// Relay bytes as they are: no transparent gzip.
		DisableCompression: true,
	}
	target := &url.URL{Scheme: "http", Host: upstreamHost}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = upstreamHost
		},
		Transport:    b.tr,
		BufferPool:   copyBuffers,
		ErrorHandler: b.relayError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return b, nil
}

// copyBuffers recycles the buffers ReverseProxy copies answers through
// (32 KiB each, otherwise allocated per request). They carry plaintext
// answers, so Put clears them before they wait for reuse.
var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (bp *bufferPool) Get() []byte  { return *bp.p.Get().(*[]byte) }
func (bp *bufferPool) Put(b []byte) { clear(b); bp.p.Put(&b) }

var _ httputil.BufferPool = (*bufferPool)(nil)

// statusRecorder remembers the status written, for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ServeHTTP relays r to the enclave and its answer back.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	if r.ContentLength > MaxRequestBody {
		kmsapi.WriteError(rec, tooLarge())
	} else {
		r.Body = http.MaxBytesReader(rec, r.Body, MaxRequestBody)
		b.proxy.ServeHTTP(rec, r)
	}
	b.log.Debug("relayed", "method", r.Method, "path", r.URL.Path,
		"target", r.Header.Get(kmsapi.TargetHeader), "status", rec.status,
		"duration_ms", time.Since(start).Milliseconds())
}

func tooLarge() *kmsapi.Error {
	return kmsapi.Errorf(kmsapi.Validation, "request body over %d bytes", MaxRequestBody)
}

// relayError answers a request the bridge could not relay, in KMS's error
// shape so SDKs and the AWS CLI show the reason.
func (b *Bridge) relayError(w http.ResponseWriter, r *http.Request, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		kmsapi.WriteError(w, tooLarge())
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads an answer.
		w.WriteHeader(499)
		return
	}
	b.log.Warn("failed to relay a request to the enclave", "enclave", b.cfg.Enclave.String(),
		"method", r.Method, "path", r.URL.Path, "err", err)
	typ, status := kmsapi.KMSInternal, http.StatusBadGateway
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		typ, status = kmsapi.DependencyTimeout, http.StatusGatewayTimeout
	}
	kmsapi.WriteError(w, &kmsapi.Error{Type: typ, Status: status,
		Message: fmt.Sprintf("kmsproxyctl bridge: failed to reach the enclave at %s", b.cfg.Enclave)})
}

// Serve serves the bridge on ln until ctx ends, then stops accepting,
// lets requests in flight finish for up to ShutdownTimeout and returns nil.
// It returns an error if serving fails.
func (b *Bridge) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           b,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	defer b.tr.CloseIdleConnections()
	select {
	case err := <-errc:
		return fmt.Errorf("failed to serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc // http.ErrServerClosed
	if err != nil {
		return fmt.Errorf("failed to drain requests in flight within %s: %w", ShutdownTimeout, err)
	}
	return nil
}
