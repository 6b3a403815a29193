// Command kmsproxyd is the kmsproxy daemon that runs inside a Nitro Enclave:
// it serves the ordinary AWS KMS API to the parent instance (vsock) and to
// apps in the enclave (loopback), attaches the enclave's attestation to
// every call that returns a secret, and opens KMS's CiphertextForRecipient
// inside the enclave.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/proxy"
	"github.com/enclavekit/kmsproxy/internal/recipient"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
	kmsversion "github.com/enclavekit/kmsproxy/internal/version"
)

// drainGrace is added to --request-timeout for the shutdown drain: requests
// in flight at SIGTERM get their whole timeout to finish.
const drainGrace = 2 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	start := time.Now()
	cfg, err := parseConfig(args, getenv, stdout)
	if errors.Is(err, flagHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "kmsproxyd: error: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "kmsproxyd: hint: run kmsproxyd -h for the flags and examples")
		}
		return 2
	}
	if cfg.Version {
		fmt.Fprintln(stdout, versionLine())
		return 0
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "kmsproxyd: error: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	gc := applyMemoryDefaults(getenv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The first signal starts the drain; stop then gives the signals
	// their default action back, so a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	if err := serve(ctx, cfg, log, start, gc); err != nil {
		var se startupError
		if errors.As(err, &se) {
			// Not started: say why plainly, as for a flag error.
			fmt.Fprintf(stderr, "kmsproxyd: error: %v\n", se.err)
			return 1
		}
		log.Error("kmsproxyd stopped", "err", err)
		return 1
	}
	log.Info("kmsproxyd stopped")
	return 0
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// startupError is a failure before kmsproxyd served: a bad policy file, an
// unreachable NSM or IMDS, a listener address in use.
type startupError struct{ err error }

func (e startupError) Error() string { return e.err.Error() }
func (e startupError) Unwrap() error { return e.err }

// serve wires every part, serves until ctx ends, then drains. Errors before
// serving are startupErrors. gc describes the garbage collector's settings
// for the ready log line.
func serve(ctx context.Context, cfg *Config, log *slog.Logger, start time.Time, gc string) (err error) {
	serving := false
	defer func() {
		if err != nil && !serving {
			err = startupError{err}
		}
	}()
	pol := policy.Default()
	if cfg.Policy != "" {
		var err error
		if pol, err = policy.Load(cfg.Policy); err != nil {
			return err
		}
	}
	for _, w := range pol.Warnings() {
		log.Warn(w)
	}

	attester, closeAttester, err := openAttester(cfg)
	if err != nil {
		return fmt.Errorf("failed to open the attestation source: %w", err)
	}
	defer closeAttester()

	bg, cancelBG := context.WithCancel(context.Background())
	defer cancelBG()

	// Credentials and region.
	var (
		creds credentials.Provider
		push  *credentials.Push
	)
	region, regionSource := cfg.Region, "--region"
	switch cfg.Credentials {
	case "imds":
		a, _ := transport.Parse(cfg.IMDSDial)
		p, err := credentials.NewIMDS(a)
		if err != nil {
			return err
		}
		if region == "" {
			rctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
			region, err = p.Region(rctx)
			cancel()
			if err != nil {
				return fmt.Errorf("--region not given and IMDS did not tell it: %w", err)
			}
			regionSource = "IMDS (placement/region, which the parent instance serves)"
		}
		p.Start(bg)
		creds = p
	case "push":
		push = credentials.NewPush(time.Now)
		creds = push
	case "env":
		p, err := credentials.NewEnv(os.Getenv)
		if err != nil {
			return err
		}
		creds = p
	}

	up, err := newUpstream(cfg, region, creds)
	if err != nil {
		return err
	}
	if err := checkRegions(pol, region, regionSource, up.Endpoint()); err != nil {
		return err
	}

	mgr, err := recipient.New(ctx, recipient.Config{
		Attester:       attester,
		Bits:           cfg.KeyBits,
		Rotation:       cfg.KeyRotation,
		AttestationTTL: cfg.AttestationTTL,
	})
	if err != nil {
		return err
	}
	defer mgr.Close()

	srv, err := proxy.New(proxy.Config{
		Policy:         pol,
		Recipient:      mgr,
		Upstream:       up,
		Credentials:    creds,
		Push:           push,
		Attester:       attester,
		MaxInflight:    cfg.MaxInflight,
		RequestTimeout: cfg.RequestTimeout,
		Logger:         log,
		Version:        version(),
		Settings:       effectiveSettings(cfg, region, up),
	})
	if err != nil {
		return err
	}
	defer srv.Close() // zeroes the decrypt caches after the listeners drained

	// Listeners.
	type listener struct {
		name string
		addr string
		ln   net.Listener
		http *http.Server
	}
	var listeners []*listener
	defer func() {
		for _, l := range listeners {
			l.ln.Close()
		}
	}()
	for _, l := range []struct{ name, addr string }{
		{policy.ListenerParent, cfg.ListenParent},
		{policy.ListenerLocal, cfg.ListenLocal},
	} {
		if l.addr == "" {
			continue
		}
		a, _ := transport.Parse(l.addr)
		if l.name == policy.ListenerLocal && a.Network == transport.TCP {
			changed, err := transport.BringUpLoopback()
			if err != nil {
				return fmt.Errorf("--listen-local %s: %w", l.addr, err)
			}
			if changed {
				log.Info("brought the loopback interface up")
			}
		}
		ln, err := transport.Listen(a)
		if err != nil {
			return fmt.Errorf("failed to listen on %s (--listen-%s): %w", l.addr, l.name, err)
		}
		listeners = append(listeners, &listener{
			name: l.name, addr: l.addr, ln: srv.LimitListener(l.name, ln),
			http: srv.HTTPServer(l.name, log),
		})
	}

	serving = true
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { mgr.Run(bg); return nil })
	for _, l := range listeners {
		g.Go(func() error {
			if err := l.http.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("listener %s: %w", l.name, err)
			}
			return nil
		})
		log.Info("listening", "listener", l.name, "address", l.addr, "actual", l.ln.Addr().String())
	}
	log.Info("kmsproxyd ready", "version", version(), "go", kmsversion.Go(),
		"rsa_backend", rsaBackend(), "region", region,
		"credentials", cfg.Credentials, "attestation", cfg.attestationSource(),
		"key_fingerprint", mgr.Status().KeyFingerprint, "gc", gc,
		"startup_ms", float64(time.Since(start).Microseconds())/1000)

	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down: draining requests", "deadline", (cfg.RequestTimeout + drainGrace).String(),
			"note", "a second SIGTERM or Ctrl-C stops at once")
		dctx, cancel := context.WithTimeout(context.Background(), cfg.RequestTimeout+drainGrace)
		defer cancel()
		var errs []error
		for _, l := range listeners {
			if err := l.http.Shutdown(dctx); err != nil {
				errs = append(errs, fmt.Errorf("listener %s did not drain: %w", l.name, err))
			}
		}
		cancelBG()
		return errors.Join(errs...)
	})
	return g.Wait()
}

func newUpstream(cfg *Config, region string, creds credentials.Provider) (*upstream.Client, error) {
	dial, direct, err := upstream.ParseDial(cfg.KMSDial)
	if err != nil {
		return nil, fmt.Errorf("--kms-dial: %w", err)
	}
	uc := upstream.Config{
		Region:         region,
		Endpoint:       cfg.KMSEndpoint, // empty: the SDK's endpoint for the region
		Dial:           dial,
		Direct:         direct,
		MaxConns:       cfg.UpstreamConns,
		RequestTimeout: cfg.RequestTimeout,
		Credentials:    creds,
	}
	if cfg.KMSCA != "" {
		pem, err := os.ReadFile(cfg.KMSCA)
		if err != nil {
			return nil, fmt.Errorf("--kms-ca: %w", err)
		}
		uc.ExtraRootsPEM = pem
	}
	return upstream.New(uc)
}

// effectiveSettings is the configuration /v1/info shows, with the values
// kmsproxyd worked out (region, endpoint) filled in.
func effectiveSettings(cfg *Config, region string, up *upstream.Client) map[string]any {
	s := cfg.Settings()
	s["rsa-backend"] = rsaBackend()
	s["region"] = region
	s["kms-endpoint"] = up.Endpoint()
	return s
}

// version is the release kmsproxyd was built as: the stamped version of a
// release build, else what Go recorded (see internal/version).
func version() string { return kmsversion.String() }

// rsaBackend names the implementation of the envelope's RSA-OAEP unwrap,
// e.g. "openssl (OpenSSL 3.0.22 ...)" or "go (crypto/rsa go1.26.8)".
func rsaBackend() string {
	b := cms.DefaultBackend()
	return fmt.Sprintf("%s (%s)", b, cms.BackendVersion(b))
}

// versionLine is what --version prints: the release, the Go release, and
// the RSA backend, e.g.
// "kmsproxyd v1.4.2 go1.26.8 rsa=openssl (OpenSSL 3.0.22 ...)".
func versionLine() string {
	return fmt.Sprintf("kmsproxyd %s %s rsa=%s", version(), kmsversion.Go(), rsaBackend())
}
