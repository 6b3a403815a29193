package credentials

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Environment variables read by NewEnv. The first four are the ones the AWS
// SDK for Go reads (config/env_config.go: AWS_ACCESS_KEY and AWS_SECRET_KEY
// only when the _ID / _ACCESS_ forms are unset). AWS_CREDENTIAL_EXPIRATION is
// what `aws configure export-credentials --format env` prints for temporary
// credentials.
const (
	envAccessKeyID     = "AWS_ACCESS_KEY_ID"
	envAccessKey       = "AWS_ACCESS_KEY"
	envSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	envSecretKey       = "AWS_SECRET_KEY"
	envSessionToken    = "AWS_SESSION_TOKEN"
	envExpiration      = "AWS_CREDENTIAL_EXPIRATION"
)

// Env holds static credentials read once from the environment
// (kmsproxyd --credentials env). It is meant for development: credentials
// baked into an enclave image's environment are measured into PCR2 but are
// readable by anyone holding the image.
type Env struct {
	cred secret
	read time.Time
	now  func() time.Time
}

// NewEnv reads and validates credentials with getenv (os.Getenv in
// kmsproxyd). When AWS_CREDENTIAL_EXPIRATION is set the credentials expire
// then; otherwise they never do. Errors are *ValidationError naming the
// variable.
func NewEnv(getenv func(string) string) (*Env, error) {
	get := func(name, alt string) string {
		if v := getenv(name); v != "" || alt == "" {
			return v
		}
		return getenv(alt)
	}
	s := secret{
		accessKeyID:     get(envAccessKeyID, envAccessKey),
		secretAccessKey: get(envSecretAccessKey, envSecretKey),
		sessionToken:    get(envSessionToken, ""),
	}
	if v := getenv(envExpiration); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, &ValidationError{envExpiration, "is not an RFC 3339 timestamp with a time zone (like 2026-01-02T15:04:05Z)", ErrMalformed}
		}
		s.expires = t
	}
	now := time.Now()
	if err := validate(s, envFields, now); err != nil {
		return nil, err
	}
	return &Env{cred: s, read: now, now: time.Now}, nil
}

const envSource = "kmsproxy-env"

// Retrieve returns the environment's credentials, or ErrExpired once
// AWS_CREDENTIAL_EXPIRATION has passed.
func (e *Env) Retrieve(ctx context.Context) (aws.Credentials, error) {
	if err := e.problem(e.now()); err != nil {
		return aws.Credentials{Source: envSource}, err
	}
	return e.cred.credentials(envSource), nil
}

func (e *Env) problem(now time.Time) error {
	if !e.cred.expires.IsZero() && expired(e.cred.expires, now) {
		return expiredError(e.cred.expires, now, "restart kmsproxyd with fresh ones in the environment, or use --credentials imds or push")
	}
	return nil
}

// Status reports the environment credentials' state.
func (e *Env) Status() Status {
	st := Status{Mode: ModeEnv, Expires: e.cred.expires, Updated: e.read, Ready: true}
	if err := e.problem(e.now()); err != nil {
		st.Ready, st.LastError = false, err.Error()
	}
	return st
}

// Format prints the provider without its secrets.
func (e *Env) Format(f fmt.State, _ rune) { io.WriteString(f, e.String()) }

// String describes the provider without its secrets.
func (e *Env) String() string { return "credentials.Env" + e.cred.redacted() }

// GoString describes the provider without its secrets.
func (e *Env) GoString() string { return e.String() }

// LogValue makes slog print the provider without its secrets.
func (e *Env) LogValue() slog.Value { return slog.StringValue(e.String()) }
