package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/enclavekit/kmsproxy/internal/credpush"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

func runCredentialsPush(ctx context.Context, e *env, args []string) error {
	f := newFlags("credentials push", "--enclave ADDR [--watch] [flags]",
		`Push the parent's AWS credentials into a kmsproxyd started with
--credentials=push (PUT /v1/credentials). The credentials come from the AWS
SDK's default chain: environment variables, the shared config and
credentials files (AWS_PROFILE, --profile), and on EC2 the instance role
through IMDS. Secrets are never printed.

Without --watch, push once and print kmsproxyd's answer. With --watch, keep
running: push again at 80% of the credentials' remaining lifetime and at
least every 5 minutes (so a restarted enclave gets credentials back soon),
and retry with backoff while the enclave is unreachable. Either way the
exit status is 1, with the enclave's reason, when it refuses the
credentials.`,
		`  kmsproxyctl credentials push --enclave vsock://16:5000
  kmsproxyctl credentials push --enclave vsock://16:5000 --watch   # as a systemd service
  AWS_PROFILE=enclave kmsproxyctl credentials push --enclave unix:///run/kmsproxy.sock --json`)
	var c pushConfig
	f.StringVar(&c.Enclave, "enclave", e.getenv(enclaveEnv), "kmsproxyd `ADDR` (env "+enclaveEnv+")")
	f.BoolVar(&c.Watch, "watch", false, "keep running and push again before the credentials expire")
	f.StringVar(&c.Profile, "profile", "", "shared config `PROFILE` to take the credentials from")
	f.BoolVar(&c.JSON, "json", false, "print kmsproxyd's credentials status as JSON (without --watch)")
	f.DurationVar(&c.Timeout, "timeout", defaultTimeout, "without --watch: give up after this `DURATION`")
	f.StringVar(&c.LogLevel, "log-level", "info", "--watch log `LEVEL`: debug, info, warn or error")
	f.StringVar(&c.LogFormat, "log-format", "text", "--watch log `FORMAT`: text or json")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return f.usageError("%v", err)
	}
	enclave, profile, watch, asJSON, timeout := c.Enclave, c.Profile, c.Watch, c.JSON, c.Timeout
	log, _ := newLogger(e, c.LogLevel, c.LogFormat)
	var opts []func(*config.LoadOptions) error
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return fmt.Errorf("failed to load the AWS configuration: %w", err)
	}
	if cfg.Credentials == nil {
		return errors.New("the AWS configuration has no credential source")
	}
	p := &credpush.Pusher{Enclave: enclave, Source: cfg.Credentials, Logger: log}
	if watch {
		log.Info("pushing credentials until stopped", "enclave", enclave)
		if err := p.Watch(ctx); err != nil {
			return pushError(err)
		}
		log.Info("stopped")
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := p.Push(ctx)
	if err != nil {
		return pushError(err)
	}
	if asJSON {
		return printJSON(e.stdout, r.Status)
	}
	expiry := "never expire"
	if !r.Expires.IsZero() {
		expiry = fmt.Sprintf("expire %s (in %s)", r.Expires.UTC().Format(time.RFC3339), time.Until(r.Expires).Round(time.Second))
	}
	ready := "ready"
	if !r.Status.Ready {
		ready = "NOT ready: " + r.Status.LastError
	}
	fmt.Fprintf(e.stdout, "pushed credentials (access key %s) to %s; they %s\nkmsproxyd credentials: %s\n", r.AccessKey, enclave, expiry, ready)
	return nil
}

// pushConfig is the credentials push subcommand's configuration.
type pushConfig struct {
	Enclave, Profile    string
	Watch, JSON         bool
	Timeout             time.Duration
	LogLevel, LogFormat string
}

// Validate names the first problem with c.
func (c *pushConfig) Validate() error {
	switch {
	case c.Enclave == "":
		return fmt.Errorf("missing --enclave (or %s)", enclaveEnv)
	case c.Watch && c.JSON:
		return errors.New("--json prints one push's answer; --watch logs to stderr instead")
	case c.Timeout <= 0:
		return errors.New("--timeout must be positive")
	}
	if err := enclaveAddrError(c.Enclave); err != nil {
		return err
	}
	_, err := newLogger(&env{}, c.LogLevel, c.LogFormat)
	return err
}

// pushError explains a failed push.
func pushError(err error) error {
	var refused *credpush.RefusedError
	var source *credpush.SourceError
	var expiring *credpush.ExpiringError
	switch {
	case errors.As(err, &refused):
		switch {
		case refused.Err.StatusCode == http.StatusConflict:
			return withHint(err, "start kmsproxyd with --credentials=push to let the parent push credentials")
		case refused.Err.Code == kmsapi.AccessDenied:
			return withHint(err, "kmsproxyd's policy must set credentials_push: true on the listener the address reaches")
		}
		return err
	case errors.As(err, &expiring):
		return withHint(err, "the credential source gave no fresher credentials: renew them where they come from (aws sso login, the profile's credential_process or session token, the instance role) and push again")
	case errors.As(err, &source):
		return withHint(err, "on EC2, attach an instance profile (role) to the instance; elsewhere set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	return enclaveCallError("the enclave", err)
}
