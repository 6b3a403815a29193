// Package credpush keeps a kmsproxyd that runs with --credentials=push
// supplied with the parent instance's AWS credentials.
//
// An enclave has no network and no instance metadata service of its own; in
// push mode kmsproxyd signs its KMS calls with whatever credentials the
// parent last sent to PUT /v1/credentials. The Pusher takes them from an
// aws.CredentialsProvider (the SDK's default chain: on EC2 the instance
// role through IMDS), pushes them, and with Watch pushes again well before
// they expire, and at least every MaxInterval so an enclave that restarted
// gets credentials back quickly. Failures to reach the enclave are retried
// with exponential backoff; an enclave that refuses the credentials (wrong
// mode, a policy without credentials_push, credentials it finds invalid)
// ends Watch with its reason, as retrying would not change the answer.
//
// Secrets never appear in logs or errors: only a shortened access key ID.
package credpush

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/credentials"
)

// Schedule defaults.
const (
	// RefreshFraction of the remaining lifetime passes before credentials
	// are pushed again: at 80%, a push that fails still leaves a fifth of
	// the lifetime for retries.
	RefreshFraction = 0.8
	// DefaultMaxInterval is the longest wait between pushes, also for
	// credentials that never expire: an enclave that restarted (and lost
	// the credentials it held only in memory) waits at most this long.
	DefaultMaxInterval = 5 * time.Minute
	// DefaultMinInterval is the shortest wait between successful pushes,
	// so credentials close to expiry are not pushed in a tight loop while
	// the source has no newer ones.
	DefaultMinInterval = 10 * time.Second
	// DefaultRetryBase and DefaultRetryMax bound the exponential backoff
	// after a failure.
	DefaultRetryBase = time.Second
	DefaultRetryMax  = time.Minute
	// RefreshWindow is how close to expiry credentials must be for the
	// Pusher to ask the source for newer ones (invalidating its cache)
	// before each push. EC2 makes new role credentials available "at least
	// five minutes before the expiration of the old credentials" (Amazon
	// EC2 User Guide, "Retrieve security credentials from instance
	// metadata"); asking from fifteen minutes before picks them up while
	// the old ones still work. (aws.CredentialsCacheOptions.ExpiryWindow is
	// not used for this: it also moves the Expires the cache reports, and
	// kmsproxyd would then drop valid credentials early.)
	RefreshWindow = 15 * time.Minute
	// minUsefulLifetime is the least remaining lifetime worth pushing:
	// kmsproxyd treats credentials within credentials.ExpiryMargin of
	// expiry as expired and refuses them.
	minUsefulLifetime = credentials.ExpiryMargin + 5*time.Second

	// PushTimeout bounds one push made by Watch: obtaining the credentials
	// (an IMDS or STS round trip) and delivering them to the enclave.
	PushTimeout = 30 * time.Second
	// StopGrace is how long a push in progress may go on after Watch's
	// context ends (SIGINT, SIGTERM).
	StopGrace = 2 * time.Second
)

// Pusher pushes credentials from Source to the kmsproxyd at Enclave.
type Pusher struct {
	// Enclave is kmsproxyd's address (vsock://CID:PORT from the parent).
	Enclave string
	// Source provides the credentials, normally the *aws.CredentialsCache
	// of config.LoadDefaultConfig (without an ExpiryWindow: see
	// RefreshWindow).
	Source aws.CredentialsProvider
	// Logger receives Watch's progress; nil discards it.
	Logger *slog.Logger
	// MaxInterval, MinInterval, RetryBase and RetryMax override the
	// Default* schedule when non-zero.
	MaxInterval, MinInterval time.Duration
	RetryBase, RetryMax      time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Result describes one successful push. It holds no secret.
type Result struct {
	// AccessKey is the pushed access key ID, shortened (Redact).
	AccessKey string
	// Expires is when the pushed credentials expire; zero if never.
	Expires time.Time
	// Status is kmsproxyd's answer.
	Status client.CredentialsStatus
}

// RefusedError is the enclave's refusal of a push: it answered, with a
// reason. Retrying the same push would get the same answer.
type RefusedError struct {
	Enclave string
	Err     *client.Error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the enclave at %s refused the credentials: %s", e.Enclave, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// SourceError is a failure to obtain credentials from the source.
type SourceError struct{ Err error }

func (e *SourceError) Error() string {
	return fmt.Sprintf("failed to get credentials from the AWS credential chain: %v", e.Err)
}

func (e *SourceError) Unwrap() error { return e.Err }

// ExpiringError says that the source's credentials expire too soon to be
// worth pushing, and that asking it again gave no fresher ones: the source
// itself needs renewing (an SSO login, a credential_process, a profile's
// static session token).
type ExpiringError struct {
	// Expires is when the source's credentials expire.
	Expires time.Time
}

func (e *ExpiringError) Error() string {
	return fmt.Sprintf("the credentials expire at %s, too soon to push (kmsproxyd refuses credentials within %s of expiry)",
		e.Expires.UTC().Format(time.RFC3339), credentials.ExpiryMargin)
}

func (p *Pusher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Pusher) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// retrieve gets the credentials to push. Within RefreshWindow of their
// expiry it invalidates the source's cache (an *aws.CredentialsCache, as
// config.LoadDefaultConfig makes) and asks again, so credentials the source
// has renewed are pushed as soon as they exist; if that fails while the old
// credentials are still usable, the old ones are pushed.
func (p *Pusher) retrieve(ctx context.Context) (aws.Credentials, error) {
	if p.Source == nil {
		return aws.Credentials{}, &SourceError{errors.New("no credential source")}
	}
	creds, err := p.Source.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{}, &SourceError{err}
	}
	if creds.CanExpire && creds.Expires.Sub(p.now()) < RefreshWindow {
		if c, ok := p.Source.(interface{ Invalidate() }); ok {
			c.Invalidate()
			fresh, ferr := p.Source.Retrieve(ctx)
			switch {
			case ferr == nil:
				creds = fresh
			case creds.Expires.Sub(p.now()) < minUsefulLifetime:
				return aws.Credentials{}, &SourceError{ferr}
			}
		}
	}
	if creds.CanExpire && creds.Expires.Sub(p.now()) < minUsefulLifetime {
		return aws.Credentials{}, &SourceError{&ExpiringError{Expires: creds.Expires}}
	}
	return creds, nil
}

// Push retrieves credentials from Source and pushes them once. Errors are a
// *SourceError, a *RefusedError (the enclave answered 4xx with its reason)
// or another error (the enclave could not be reached or failed).
func (p *Pusher) Push(ctx context.Context) (*Result, error) {
	creds, err := p.retrieve(ctx)
	if err != nil {
		return nil, err
	}
	st, err := client.PushCredentials(ctx, p.Enclave, creds)
	if err != nil {
		var apiErr *client.Error
		if errors.As(err, &apiErr) && apiErr.StatusCode >= 400 && apiErr.StatusCode < 500 {
			return nil, &RefusedError{Enclave: p.Enclave, Err: apiErr}
		}
		return nil, err
	}
	r := &Result{AccessKey: Redact(creds.AccessKeyID), Status: *st}
	if creds.CanExpire {
		r.Expires = creds.Expires
	}
	return r, nil
}

// NextPush returns how long to wait after a successful push of credentials
// expiring at expires (zero: never) at now: RefreshFraction of the remaining
// lifetime, at most maxInterval and at least minInterval.
func NextPush(now, expires time.Time, minInterval, maxInterval time.Duration) time.Duration {
	d := maxInterval
	if !expires.IsZero() {
		if r := time.Duration(float64(expires.Sub(now)) * RefreshFraction); r < d {
			d = r
		}
	}
	return max(d, minInterval)
}

// Backoff returns the wait before retry number n (1 for the first) after a
// failure: base doubled for each earlier failure, capped at maxWait, with
// up to a fifth taken off at random so that several pushers do not retry in
// step.
func Backoff(n int, base, maxWait time.Duration) time.Duration {
	d := base
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// Watch pushes credentials now and again before they expire (NextPush),
// until ctx ends (then it returns nil). Failures to obtain credentials or to
// reach the enclave are logged and retried with Backoff; a refusal by the
// enclave ends Watch with a *RefusedError, also when it answers a push
// that was under way when ctx ended (see StopGrace).
func (p *Pusher) Watch(ctx context.Context) error {
	log := p.logger()
	minI, maxI := or(p.MinInterval, DefaultMinInterval), or(p.MaxInterval, DefaultMaxInterval)
	base, maxR := or(p.RetryBase, DefaultRetryBase), or(p.RetryMax, DefaultRetryMax)
	failures := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		// A push in progress when ctx ends gets StopGrace to finish rather
		// than being cut off: the enclave may already hold the credentials,
		// and the log should say whether it does.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PushTimeout)
		stop := context.AfterFunc(ctx, func() { time.AfterFunc(StopGrace, cancel) })
		r, err := p.Push(pctx)
		stop()
		cancel()
		var refused *RefusedError
		switch {
		case err == nil:
			failures = 0
			wait = NextPush(p.now(), r.Expires, minI, maxI)
			attrs := []any{"enclave", p.Enclave, "access_key", r.AccessKey, "enclave_ready", r.Status.Ready, "next_push_in", wait.Round(time.Second).String()}
			if !r.Expires.IsZero() {
				attrs = append(attrs, "expires", r.Expires.UTC().Format(time.RFC3339))
			}
			log.Info("credentials pushed", attrs...)
		case errors.As(err, &refused):
			return err
		case ctx.Err() != nil:
			log.Warn("credentials push under way at stop did not complete", "enclave", p.Enclave, "err", err)
			return nil
		default:
			failures++
			wait = Backoff(failures, base, maxR)
			log.Warn("credentials push failed; retrying", "enclave", p.Enclave, "attempt", failures, "retry_in", wait.Round(time.Millisecond).String(), "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Redact shortens an access key ID for display: its first four characters
// (the kind: AKIA long-term, ASIA temporary) and its last four. AWS treats
// the ID as an identifier rather than a secret, but there is no need to
// print it whole.
func Redact(accessKeyID string) string {
	if len(accessKeyID) < 12 {
		return "****"
	}
	return accessKeyID[:4] + "..." + accessKeyID[len(accessKeyID)-4:]
}
