package devkms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// HTTP server limits. KMS clients send one small request per call; these
// bound slow or idle clients (devkms's own values, the same order as
// kmsproxyd's).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	// ShutdownTimeout is how long Serve waits for requests in flight after
	// its context is cancelled.
	ShutdownTimeout = 10 * time.Second
)

// Control endpoints, outside the KMS API.
const (
	HealthzPath = "/devkms/healthz"
	FaultsPath  = "/devkms/faults"
)

// Server is a devkms instance: an http.Handler answering the KMS JSON 1.1
// API and the /devkms/ control endpoints. It is safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	store     *store
	auth      *authenticator // nil: every caller is the account root
	imds      *imdsService   // nil: no IMDS stand-in
	iam       *identityPolicies
	recipient *recipientVerifier
	faults    faultInjector
	tlsConfig *tls.Config
	caPEM     []byte
	root      string // the account root principal
}

var _ http.Handler = (*Server)(nil)

// New builds a Server from cfg: it validates cfg, loads the credentials,
// trust roots and state file, applies the seed file and prepares TLS. It
// refuses a corrupt state file with a *StateError and leaves it untouched.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		lvl, _ := ParseLogLevel(cfg.LogLevel)
		s.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.root = fmt.Sprintf("arn:%s:iam::%s:root", partition(cfg.Region), cfg.AccountID)
	s.faults.set(cfg.Faults)

	creds := append([]Credential(nil), cfg.Credentials...)
	if cfg.CredentialsPath != "" {
		fc, err := LoadCredentials(cfg.CredentialsPath)
		if err != nil {
			return nil, err
		}
		creds = append(creds, fc...)
	}
	seen := map[string]bool{}
	for _, c := range creds {
		if seen[c.AccessKeyID] {
			return nil, fmt.Errorf("access key %s is configured twice", c.AccessKeyID)
		}
		seen[c.AccessKeyID] = true
	}
	if cfg.IMDS != "" {
		s.imds = newIMDSService(cfg, s.now, s.log)
	}
	if len(creds) > 0 || s.imds != nil {
		// The instance role's credentials mean something only when
		// signatures are checked: IMDS turns SigV4 verification on.
		s.auth = newAuthenticator(creds, cfg.Region, s.now)
		if s.imds != nil {
			s.auth.temporary = s.imds.creds.lookup
		}
	}

	iamConfigured := cfg.IAMPoliciesPath != "" || cfg.IAMPolicies != nil
	iam := map[string][]IAMPolicy{}
	for p, list := range cfg.IAMPolicies {
		iam[p] = append(iam[p], list...)
	}
	if cfg.IAMPoliciesPath != "" {
		fromFile, err := LoadIAMPolicies(cfg.IAMPoliciesPath)
		if err != nil {
			return nil, err
		}
		for p, list := range fromFile {
			if _, dup := iam[p]; dup {
				return nil, fmt.Errorf("IAM policies file %s: %s is also configured in code", cfg.IAMPoliciesPath, shorten(p))
			}
			iam[p] = list
		}
	}
	var err error
	if s.iam, err = newIdentityPolicies(iam, iamConfigured); err != nil {
		return nil, err
	}
	for _, w := range s.iam.warnings() {
		s.log.Warn("IAM policy warning", "warning", w)
	}

	roots := x509.NewCertPool()
	roots.AddCert(attestation.NitroRoot())
	for _, c := range cfg.TrustRoots {
		roots.AddCert(c)
	}
	for _, f := range cfg.TrustRootFiles {
		certs, err := loadTrustRoots(f)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	s.recipient = newRecipientVerifier(roots, cfg.MaxAttestationAge, s.now)

	s.store = newStore(cfg.Region, cfg.AccountID, cfg.StatePath)
	if cfg.StatePath != "" {
		if err := s.store.loadState(); err != nil {
			return nil, err
		}
	}
	if cfg.SeedPath != "" {
		seed, pos, err := loadSeed(cfg.SeedPath)
		if err != nil {
			return nil, err
		}
		if err := s.ApplySeed(seed); err != nil {
			var se *seedError
			if errors.As(err, &se) {
				return nil, pos.Errorf(se.path, "%s", se.reason)
			}
			return nil, err
		}
	}
	if cfg.StatePath != "" {
		// Write the state once at start so an unwritable path fails now,
		// not at the first CreateKey.
		if err := s.store.update(func(*snapshot) error { return nil }); err != nil {
			return nil, err
		}
	}

	switch {
	case cfg.TLSSelfSignedDir != "":
		tc, caPEM, err := selfSignedTLS(cfg.TLSSelfSignedDir, s.now())
		if err != nil {
			return nil, err
		}
		s.tlsConfig, s.caPEM = tc, caPEM
	case cfg.TLSCertFile != "":
		tc, err := loadTLSFiles(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, err
		}
		s.tlsConfig = tc
	}
	return s, nil
}

// SetFaults replaces the fault injection settings; safe to call while
// serving. Values outside the ranges Faults.Validate accepts are clamped to
// them.
func (s *Server) SetFaults(f Faults) { s.faults.set(f.clamped()) }

// Faults returns the current fault injection settings.
func (s *Server) Faults() Faults { return s.faults.get() }

// TLSConfig returns the server's TLS configuration, or nil for plain HTTP.
func (s *Server) TLSConfig() *tls.Config {
	if s.tlsConfig == nil {
		return nil
	}
	return s.tlsConfig.Clone()
}

// CACertPEM returns the self-signed CA certificate (--tls-self-signed), or
// nil.
func (s *Server) CACertPEM() []byte { return append([]byte(nil), s.caPEM...) }

// Config returns the configuration the server was built with.
func (s *Server) Config() Config { return s.cfg }

// ListenAndServe listens on cfg.Listen, and on cfg.IMDS when it is set, and
// serves the KMS API (and IMDS) until ctx is cancelled.
func (s *Server) ListenAndServe(ctx context.Context) error {
	l, err := listen(s.cfg.Listen)
	if err != nil {
		return err
	}
	if s.imds == nil {
		return s.Serve(ctx, l)
	}
	il, err := listen(s.cfg.IMDS)
	if err != nil {
		l.Close()
		return fmt.Errorf("--imds: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Serve(gctx, l) })
	g.Go(func() error { return s.ServeIMDS(gctx, il) })
	return g.Wait()
}

func listen(addr string) (net.Listener, error) {
	a, err := transport.Parse(addr)
	if err != nil {
		return nil, err
	}
	l, err := transport.Listen(a)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	return l, nil
}

// URL returns the URL clients use to reach the server on l: https when TLS
// is configured, and the listener's address (for unix sockets the path).
func (s *Server) URL(l net.Listener) string {
	scheme := "http"
	if s.tlsConfig != nil {
		scheme = "https"
	}
	if l.Addr().Network() == "unix" {
		return scheme + "+unix://" + l.Addr().String()
	}
	return scheme + "://" + l.Addr().String()
}

// Serve serves on l until ctx is cancelled, then stops accepting, waits up
// to ShutdownTimeout for requests in flight and returns nil. It closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.tlsConfig != nil {
		l = tls.NewListener(l, s.tlsConfig.Clone())
	}
	s.log.Info("listening", "url", s.URL(l), "region", s.cfg.Region, "account", s.cfg.AccountID,
		"sigv4", s.auth != nil, "iam_policies", !s.iam.assumed, "state", s.cfg.StatePath)
	if s.iam.assumed {
		s.log.Info("no IAM policies configured (--iam-policies): every principal is taken to have an IAM policy that allows kms:* on every resource")
	}
	if s.imds != nil && len(s.auth.keys) == 0 {
		s.log.Info("SigV4 verification is on because of --imds: callers sign with the instance role's credentials from IMDS (or with keys of a --credentials file)")
	}
	// Requests run under a context cancelled when shutdown begins, so
	// injected latency ends at once instead of holding up the shutdown.
	return s.serveHTTP(ctx, l, s, 64<<10, "stopped")
}

// IMDSHandler returns the handler of the IMDS stand-in, or nil when
// Config.IMDS is empty.
func (s *Server) IMDSHandler() http.Handler {
	if s.imds == nil {
		return nil
	}
	return s.imds
}

// ServeIMDS serves the IMDS stand-in (plain HTTP, as IMDS is) on l until
// ctx is cancelled, then shuts down as Serve does. It closes l. It fails
// when Config.IMDS is empty.
func (s *Server) ServeIMDS(ctx context.Context, l net.Listener) error {
	if s.imds == nil {
		l.Close()
		return errors.New("devkms: the IMDS stand-in is off (no --imds address)")
	}
	s.log.Info("IMDS listening", "url", "http://"+l.Addr().String(), "role", s.imds.role,
		"principal", s.imds.creds.principal, "instance_id", s.imds.instanceID,
		"credential_lifetime", s.imds.creds.lifetime, "rotation_lead", s.imds.creds.lead, "region", s.cfg.Region)
	return s.serveHTTP(ctx, l, s.imds, imdsMaxHeaderBytes, "IMDS stopped")
}

// serveHTTP serves h on l until ctx is cancelled, then stops accepting,
// waits up to ShutdownTimeout for requests in flight, logs stopped and
// returns nil.
func (s *Server) serveHTTP(ctx context.Context, l net.Listener, h http.Handler, maxHeaderBytes int, stopped string) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(slogWriter{s.log}, "", 0),
	}
	stopping, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	hs.BaseContext = func(net.Listener) context.Context { return stopping }
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("failed to serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stop()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
			return fmt.Errorf("failed to shut down within %s: %w", ShutdownTimeout, err)
		}
		s.log.Info(stopped)
		return nil
	})
	return g.Wait()
}

// slogWriter sends net/http's own error log (TLS handshake failures and the
// like) to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("http server", "error", strings.TrimSpace(string(p)))
	return len(p), nil
}

// ServeHTTP answers the KMS API on every path except the control endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == HealthzPath:
		writeControlJSON(w, http.StatusOK, map[string]any{"status": "ok", "keys": len(s.store.snap().keys)})
	case r.URL.Path == FaultsPath:
		s.serveFaults(w, r)
	case strings.HasPrefix(r.URL.Path, "/devkms/"):
		writeControlError(w, http.StatusNotFound, "unknown devkms control endpoint; see /devkms/healthz and /devkms/faults")
	default:
		s.serveKMS(w, r)
	}
}

// call is one KMS request being answered.
type call struct {
	ctx       context.Context
	op        string
	body      []byte
	principal string
	secure    bool
	// keyID is the key the request used, for the request log.
	keyID string
	// requestID is sent in x-amzn-RequestId and logged.
	requestID string
	// denial says why authorization refused the request: the layer, the
	// statement or grant and the condition that decided (logged).
	denial string
	// recipient is what KMS's CloudTrail records of the request's
	// verified Recipient document (additionalEventData.recipient), for
	// the request log.
	recipient []slog.Attr
	// secrets are plaintext buffers of this request, zeroed once the
	// answer is written.
	secrets [][]byte
}

// secret registers b to be zeroed after the answer is written and returns
// it.
func (c *call) secret(b []byte) []byte {
	c.secrets = append(c.secrets, b)
	return b
}

func (s *Server) serveKMS(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c := &call{ctx: r.Context(), secure: r.TLS != nil, requestID: newKeyID()}
	// KMS answers every request with a request ID that SDKs report in
	// their errors ("RequestID: ...") and log.
	w.Header().Set("X-Amzn-Requestid", c.requestID)
	var err error
	defer func() {
		if p := recover(); p != nil {
			// Last line of defence: the panic value and stack may describe
			// the request, never its secrets (no handler puts plaintext in
			// a panic); log them and answer like KMS's own internal error.
			s.log.Error("panic in handler", "op", c.op, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = kmsapi.Errorf(kmsapi.KMSInternal, "An internal error occurred.")
			kmsapi.WriteError(w, err)
		}
		for _, b := range c.secrets {
			clear(b)
		}
		s.logRequest(c, err, time.Since(start))
	}()
	var out any
	out, err = s.handle(c, r)
	if err != nil {
		kmsapi.WriteError(w, err)
		return
	}
	kmsapi.WriteOutput(w, out)
}

func (s *Server) handle(c *call, r *http.Request) (any, error) {
	if err := kmsapi.CheckRequest(r); err != nil {
		return nil, err
	}
	op, err := kmsapi.Operation(r)
	if err != nil {
		return nil, err
	}
	c.op = op
	if err := s.faults.apply(c.ctx); err != nil {
		return nil, err
	}
	c.body, err = kmsapi.ReadBody(r, kmsapi.MaxRequestBody)
	if err != nil {
		return nil, err
	}
	c.principal = s.root
	if s.auth != nil {
		if c.principal, err = s.auth.authenticate(c.ctx, r, c.body); err != nil {
			return nil, err
		}
	}
	h, ok := operations[op]
	if !ok {
		if knownKMSOperations[op] {
			return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms does not implement the KMS operation %s", op)
		}
		return nil, kmsapi.Errorf(kmsapi.UnknownOperation, "Unknown operation %s", op)
	}
	return h(s, c)
}

func (s *Server) logRequest(c *call, err error, d time.Duration) {
	attrs := []slog.Attr{
		slog.String("op", c.op),
		slog.String("request_id", c.requestID),
		slog.Duration("duration", d),
	}
	if c.principal != "" {
		attrs = append(attrs, slog.String("principal", c.principal))
	}
	if c.keyID != "" {
		attrs = append(attrs, slog.String("key", c.keyID))
	}
	if c.recipient != nil {
		attrs = append(attrs, slog.Attr{Key: "recipient", Value: slog.GroupValue(c.recipient...)})
	}
	level := slog.LevelInfo
	if err != nil {
		ke := kmsapi.AsError(err, "An internal error occurred.")
		attrs = append(attrs, slog.String("error", ke.Type), slog.Int("status", ke.Status), slog.String("message", ke.Message))
		if c.denial != "" {
			attrs = append(attrs, slog.String("deny_reason", c.denial))
		}
		var typed *kmsapi.Error
		if !errors.As(err, &typed) {
			// Internal errors (state file, envelope) are built without
			// secrets; their text is for the operator, not the caller.
			attrs = append(attrs, slog.String("cause", err.Error()))
		}
		if ke.Status >= 500 {
			level = slog.LevelWarn
		}
	} else {
		attrs = append(attrs, slog.Int("status", http.StatusOK))
	}
	s.log.LogAttrs(c.ctx, level, "request", attrs...)
}
