package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/enclavekit/kmsproxy/internal/bridge"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

func runBridge(ctx context.Context, e *env, args []string) error {
	f := newFlags("bridge", "--listen ADDR --enclave ADDR [--allow-remote]",
		`Serve the enclave's whole HTTP API (the KMS API on POST /, /metrics,
/readyz, /healthz, /v1/...) on an address of the parent instance, so the
AWS CLI, SDKs in any language and Prometheus can reach kmsproxyd, which
listens only on vsock. Requests and answers are relayed unchanged.

Anyone who can connect to the bridge can ask the enclave for plaintext
(within kmsproxyd's parent listener policy). The listen address must be
loopback TCP (127.0.0.1, ::1, localhost) or a unix socket (created with the
process umask; with the usual 022 only its owner can connect) unless
--allow-remote is given. Stops gracefully on SIGTERM or SIGINT; logs to
stderr.`,
		`  kmsproxyctl bridge --listen tcp://127.0.0.1:8000 --enclave vsock://16:5000
  aws kms decrypt --endpoint-url http://127.0.0.1:8000 --ciphertext-blob fileb://secret.enc \
      --query Plaintext --output text | base64 -d
  curl -s http://127.0.0.1:8000/metrics
  kmsproxyctl bridge --listen unix:///run/kmsproxy/kms.sock --enclave vsock://16:5000`)
	cfg := bridgeConfig{}
	f.StringVar(&cfg.Listen, "listen", "", "parent `ADDR` to serve on: tcp://127.0.0.1:PORT or unix:///path")
	f.StringVar(&cfg.Enclave, "enclave", e.getenv(enclaveEnv), "kmsproxyd `ADDR` (env "+enclaveEnv+")")
	f.BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a non-loopback TCP listen address (the enclave's secrets become reachable from the network)")
	f.DurationVar(&cfg.ResponseTimeout, "response-timeout", bridge.DefaultResponseTimeout, "wait at most this `DURATION` for the enclave's answer to a request")
	f.StringVar(&cfg.LogLevel, "log-level", "info", "`LEVEL`: debug (one line per request), info, warn or error")
	f.StringVar(&cfg.LogFormat, "log-format", "text", "`FORMAT`: text or json")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return f.usageError("%v", err)
	}
	log, _ := newLogger(e, cfg.LogLevel, cfg.LogFormat)
	la, _ := transport.Parse(cfg.Listen)
	ea, _ := transport.Parse(cfg.Enclave)
	if err := bridge.CheckListen(la, cfg.AllowRemote); err != nil {
		return err
	}
	b, err := bridge.New(bridge.Config{Enclave: ea, ResponseTimeout: cfg.ResponseTimeout, Logger: log})
	if err != nil {
		return err
	}
	ln, err := transport.Listen(la)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", la, err)
	}
	log.Info("bridge serving", "listen", listenAddr(la, ln.Addr().String()), "enclave", ea.String())
	if err := b.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("bridge stopped")
	return nil
}

// bridgeConfig is the bridge subcommand's configuration.
type bridgeConfig struct {
	Listen, Enclave     string
	AllowRemote         bool
	ResponseTimeout     time.Duration
	LogLevel, LogFormat string
}

// Validate names the first problem with c. Whether the listen address may
// be used (CheckListen) is decided afterwards: it is a refusal, not a typo.
func (c *bridgeConfig) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("missing --listen")
	case c.Enclave == "":
		return fmt.Errorf("missing --enclave (or %s)", enclaveEnv)
	case c.ResponseTimeout <= 0:
		return errors.New("--response-timeout must be positive")
	}
	if _, err := transport.Parse(c.Listen); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if err := enclaveAddrError(c.Enclave); err != nil {
		return err
	}
	_, err := newLogger(&env{}, c.LogLevel, c.LogFormat)
	return err
}

// listenAddr shows the address actually bound (tcp port 0 picks one).
func listenAddr(a transport.Addr, bound string) string {
	if a.Network == transport.TCP {
		return "tcp://" + bound
	}
	return a.String()
}

// newLogger builds the slog logger for long-running subcommands.
func newLogger(e *env, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(e.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(e.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
