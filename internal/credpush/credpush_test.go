package credpush

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

func TestNextPush(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		expires time.Time
		want    time.Duration
	}{
		{name: "never expires: the maximum interval", want: DefaultMaxInterval},
		{name: "six hours left: the maximum interval", expires: now.Add(6 * time.Hour), want: DefaultMaxInterval},
		{name: "five minutes left: 80%", expires: now.Add(5 * time.Minute), want: 4 * time.Minute},
		{name: "one minute left: 80%", expires: now.Add(time.Minute), want: 48 * time.Second},
		{name: "ten seconds left: the minimum interval", expires: now.Add(10 * time.Second), want: DefaultMinInterval},
		{name: "already expired: the minimum interval", expires: now.Add(-time.Minute), want: DefaultMinInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NextPush(now, tt.expires, DefaultMinInterval, DefaultMaxInterval); got != tt.want {
				t.Errorf("NextPush = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		lo, hi time.Duration
	}{
		{name: "first retry", n: 1, lo: 800 * time.Millisecond, hi: time.Second},
		{name: "second retry doubles", n: 2, lo: 1600 * time.Millisecond, hi: 2 * time.Second},
		{name: "sixth retry", n: 6, lo: 25600 * time.Millisecond, hi: 32 * time.Second},
		{name: "capped", n: 7, lo: 48 * time.Second, hi: time.Minute},
		{name: "far past the cap", n: 1000, lo: 48 * time.Second, hi: time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				if got := Backoff(tt.n, DefaultRetryBase, DefaultRetryMax); got < tt.lo || got > tt.hi {
					t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tt.n, got, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "long-term key", in: "AKIAIOSFODNN7EXAMPLE", want: "AKIA...MPLE"},
		{name: "temporary key", in: "ASIAY34FZKBOKMUTVV7A", want: "ASIA...VV7A"},
		{name: "short", in: "AKIA123", want: "****"},
		{name: "empty", in: "", want: "****"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// Test credentials, in the shapes STS issues (AWS's documentation examples).
const (
	testKeyID  = "ASIAIOSFODNN7EXAMPLE"
	testSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	testToken  = "IQoJb3JpZ2luX2VjEXAMPLETOKEN"
)

// pushReceiver stands in for kmsproxyd's PUT /v1/credentials: it decodes
// and validates pushes with the same internal/credentials code kmsproxyd
// runs (DecodePush, Push.Set) and answers with the provider's status, or
// with the status fail returns for the n-th push (0: accept).
type pushReceiver struct {
	push  *credentials.Push
	fail  func(n int32) int
	calls atomic.Int32
	got   chan credentials.PushedCredentials
}

func (p *pushReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := p.calls.Add(1)
	if r.Method != http.MethodPut || r.URL.Path != "/v1/credentials" {
		kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.UnknownOperation, Status: 404, Message: "no such endpoint"})
		return
	}
	if p.fail != nil {
		switch st := p.fail(n); st {
		case 0:
		case http.StatusConflict:
			kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.Validation, Status: st, Message: "kmsproxyd does not take pushed credentials: it runs with --credentials=imds"})
			return
		default:
			kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.KMSInternal, Status: st, Message: "busy"})
			return
		}
	}
	c, err := credentials.DecodePush(r.Body)
	if err == nil {
		err = p.push.Set(c)
	}
	if err != nil {
		kmsapi.WriteError(w, kmsapi.Errorf(kmsapi.Validation, "%s", err))
		return
	}
	select {
	case p.got <- c:
	default:
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(p.push.Status())
}

// startReceiver serves rcv on a unix socket and returns its address.
func startReceiver(t testing.TB, rcv *pushReceiver) string {
	t.Helper()
	rcv.push = credentials.NewPush(nil)
	rcv.got = make(chan credentials.PushedCredentials, 100)
	a := transport.Addr{Network: transport.Unix, Path: filepath.Join(t.TempDir(), "kmsproxyd.sock")}
	ln, err := transport.Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rcv, ReadHeaderTimeout: time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a.String()
}

func expiring(in time.Duration) aws.CredentialsProvider {
	return aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: testSecret, SessionToken: testToken,
			CanExpire: true, Expires: time.Now().Add(in)}, nil
	})
}

func TestPushOnce(t *testing.T) {
	rcv := &pushReceiver{}
	addr := startReceiver(t, rcv)
	p := &Pusher{Enclave: addr, Source: expiring(time.Hour)}
	r, err := p.Push(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := <-rcv.got
	if got.AccessKeyId != testKeyID || got.SecretAccessKey != testSecret || got.SessionToken != testToken {
		t.Errorf("kmsproxyd received other credentials than the source's: %v", got)
	}
	if got.Expiration == nil || time.Until(*got.Expiration) < 59*time.Minute {
		t.Errorf("Expiration = %v, want about an hour from now", got.Expiration)
	}
	if !r.Status.Ready || r.Status.Mode != string(credentials.ModePush) {
		t.Errorf("status = %+v, want ready in push mode", r.Status)
	}
	if r.AccessKey != "ASIA...MPLE" {
		t.Errorf("AccessKey = %q, want the redacted ID", r.AccessKey)
	}
}

func TestPushErrors(t *testing.T) {
	tests := []struct {
		name        string
		source      aws.CredentialsProvider
		fail        func(int32) int
		wantRefused bool
		wantSource  bool
		wantInMsg   string
	}{
		{
			name:        "enclave not in push mode",
			source:      expiring(time.Hour),
			fail:        func(int32) int { return http.StatusConflict },
			wantRefused: true,
			wantInMsg:   "--credentials=imds",
		},
		{
			name:      "enclave failing",
			source:    expiring(time.Hour),
			fail:      func(int32) int { return http.StatusServiceUnavailable },
			wantInMsg: "busy",
		},
		{
			name: "source fails",
			source: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{}, errors.New("no EC2 IMDS role found")
			}),
			wantSource: true,
			wantInMsg:  "no EC2 IMDS role found",
		},
		{
			name:       "credentials about to expire",
			source:     expiring(10 * time.Second),
			wantSource: true,
			wantInMsg:  "too soon to push",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := &pushReceiver{fail: tt.fail}
			p := &Pusher{Enclave: startReceiver(t, rcv), Source: tt.source}
			_, err := p.Push(context.Background())
			if err == nil {
				t.Fatal("Push succeeded")
			}
			var refused *RefusedError
			var source *SourceError
			if got := errors.As(err, &refused); got != tt.wantRefused {
				t.Errorf("RefusedError: %v, want %v (%v)", got, tt.wantRefused, err)
			}
			if got := errors.As(err, &source); got != tt.wantSource {
				t.Errorf("SourceError: %v, want %v (%v)", got, tt.wantSource, err)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantInMsg)
			}
			for _, s := range []string{testSecret, testToken} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error contains a secret: %v", err)
				}
			}
		})
	}
}

func TestPushRefusedByValidation(t *testing.T) {
	rcv := &pushReceiver{}
	p := &Pusher{Enclave: startReceiver(t, rcv), Source: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		// An access key ID kmsproxyd finds implausible.
		return aws.Credentials{AccessKeyID: "not an access key", SecretAccessKey: testSecret}, nil
	})}
	_, err := p.Push(context.Background())
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Err.Code != kmsapi.Validation {
		t.Fatalf("Push = %v, want a refusal with ValidationException", err)
	}
	if !strings.Contains(err.Error(), "AccessKeyId") {
		t.Errorf("refusal does not name the field: %v", err)
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWatchRepushesAndRetries(t *testing.T) {
	// The first two pushes meet a failing enclave, the rest succeed.
	rcv := &pushReceiver{fail: func(n int32) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return 0
	}}
	var logs syncBuffer
	p := &Pusher{
		Enclave:     startReceiver(t, rcv),
		Source:      expiring(time.Hour),
		Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
		MinInterval: 5 * time.Millisecond,
		MaxInterval: 20 * time.Millisecond,
		RetryBase:   5 * time.Millisecond,
		RetryMax:    10 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx) }()
	for i := range 3 {
		select {
		case <-rcv.got:
		case <-time.After(10 * time.Second):
			t.Fatalf("push %d did not arrive", i+1)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
	out := logs.String()
	if got := strings.Count(out, "credentials push failed"); got != 2 {
		t.Errorf("logged %d failures, want 2:\n%s", got, out)
	}
	if !strings.Contains(out, "credentials pushed") || !strings.Contains(out, "ASIA...MPLE") {
		t.Errorf("successful pushes not logged with the redacted key:\n%s", out)
	}
	for _, s := range []string{testSecret, testToken, testKeyID} {
		if strings.Contains(out, s) {
			t.Errorf("log contains %q:\n%s", s, out)
		}
	}
}

// TestWatchFinishesPushOnStop stops Watch while the enclave is taking a
// push: the push completes and is logged, so the log never hides
// credentials the enclave holds.
func TestWatchFinishesPushOnStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rcv := &pushReceiver{fail: func(int32) int { cancel(); return 0 }}
	var logs syncBuffer
	p := &Pusher{Enclave: startReceiver(t, rcv), Source: expiring(time.Hour), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := p.Watch(ctx); err != nil {
		t.Fatalf("Watch = %v, want nil after cancel", err)
	}
	if got := len(rcv.got); got != 1 {
		t.Fatalf("enclave took %d pushes, want 1", got)
	}
	if out := logs.String(); strings.Count(out, "credentials pushed") != 1 {
		t.Errorf("the push the enclave took is not logged once:\n%s", out)
	}
}

// TestWatchStopCases: a Watch whose context has ended pushes nothing; a
// refusal that answers a push under way at stop is still returned.
func TestWatchStopCases(t *testing.T) {
	t.Run("stopped before it starts", func(t *testing.T) {
		rcv := &pushReceiver{}
		p := &Pusher{Enclave: startReceiver(t, rcv), Source: expiring(time.Hour)}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.Watch(ctx); err != nil {
			t.Fatalf("Watch = %v, want nil", err)
		}
		if n := rcv.calls.Load(); n != 0 {
			t.Errorf("the enclave got %d pushes after stop", n)
		}
	})
	t.Run("refused while stopping", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rcv := &pushReceiver{fail: func(int32) int { cancel(); return http.StatusConflict }}
		p := &Pusher{Enclave: startReceiver(t, rcv), Source: expiring(time.Hour)}
		var refused *RefusedError
		if err := p.Watch(ctx); !errors.As(err, &refused) {
			t.Fatalf("Watch = %v, want the refusal", err)
		}
	})
	t.Run("failed while stopping", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rcv := &pushReceiver{fail: func(int32) int { cancel(); return http.StatusInternalServerError }}
		var logs syncBuffer
		p := &Pusher{Enclave: startReceiver(t, rcv), Source: expiring(time.Hour), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		if err := p.Watch(ctx); err != nil {
			t.Fatalf("Watch = %v, want nil", err)
		}
		if out := logs.String(); !strings.Contains(out, "did not complete") {
			t.Errorf("the failed last push is not logged:\n%s", out)
		}
	})
}

func TestWatchStopsOnRefusal(t *testing.T) {
	rcv := &pushReceiver{fail: func(int32) int { return http.StatusConflict }}
	p := &Pusher{Enclave: startReceiver(t, rcv), Source: expiring(time.Hour), RetryBase: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.Watch(ctx)
	var refused *RefusedError
	if !errors.As(err, &refused) {
		t.Fatalf("Watch = %v, want a RefusedError", err)
	}
	if refused.Err.StatusCode != http.StatusConflict || rcv.calls.Load() != 1 {
		t.Errorf("status %d after %d calls, want 409 after 1", refused.Err.StatusCode, rcv.calls.Load())
	}
}

func TestPushRefreshesNearExpiry(t *testing.T) {
	// A source whose cache hands out credentials close to expiry until it
	// is invalidated, like an instance role shortly before EC2 renews it.
	tests := []struct {
		name        string
		first       time.Duration // lifetime of the cached credentials
		renewed     bool          // the source has newer ones
		wantFetches int32
		wantLife    time.Duration // at least
		wantErr     bool
	}{
		{name: "outside the refresh window: no refetch", first: time.Hour, wantFetches: 1, wantLife: 59 * time.Minute},
		{name: "inside the window, renewed", first: 10 * time.Minute, renewed: true, wantFetches: 2, wantLife: 59 * time.Minute},
		{name: "inside the window, not renewed yet: the old ones", first: 10 * time.Minute, wantFetches: 2, wantLife: 9 * time.Minute},
		{name: "about to expire, not renewed: nothing to push", first: 20 * time.Second, wantFetches: 2, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fetches atomic.Int32
			start := time.Now()
			src := aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				life := tt.first
				if fetches.Add(1) > 1 && tt.renewed {
					life = time.Hour
				}
				return aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: testSecret, SessionToken: testToken,
					CanExpire: true, Expires: start.Add(life)}, nil
			}))
			rcv := &pushReceiver{}
			p := &Pusher{Enclave: startReceiver(t, rcv), Source: src}
			r, err := p.Push(context.Background())
			if tt.wantErr {
				var se *SourceError
				if !errors.As(err, &se) {
					t.Fatalf("Push = %v, want a SourceError", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if time.Until(r.Expires) < tt.wantLife {
				t.Errorf("pushed credentials expiring in %v, want at least %v", time.Until(r.Expires), tt.wantLife)
			}
			if got := fetches.Load(); got != tt.wantFetches {
				t.Errorf("fetched %d times, want %d", got, tt.wantFetches)
			}
		})
	}
}

// TestWatchFeedsKmsproxyd runs Watch against kmsproxyd's real PUT
// /v1/credentials (internal/enclavetest, --credentials push) and checks
// that kmsproxyd then signs KMS calls with what was pushed.
func TestWatchFeedsKmsproxyd(t *testing.T) {
	env := enclavetest.Start(t, enclavetest.Options{PushCredentials: true})
	src := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: enclavetest.RoleAccessKey, SecretAccessKey: enclavetest.RoleSecretKey,
			SessionToken: enclavetest.RoleToken, CanExpire: true, Expires: time.Now().Add(time.Hour)}, nil
	})
	var logs syncBuffer
	p := &Pusher{Enclave: env.ParentAddr, Source: src, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		MinInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx) }()

	deadline := time.Now().Add(10 * time.Second)
	for !env.Push.Status().Ready || strings.Count(logs.String(), "credentials pushed") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("kmsproxyd not fed after 10s: %+v\n%s", env.Push.Status(), logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := env.Client(t, env.ParentAddr)
	if _, err := c.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Errorf("kmsproxyd cannot call KMS with the pushed credentials: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch = %v", err)
	}
	if st := env.Push.Status(); st.Expires.IsZero() || time.Until(st.Expires) < 59*time.Minute {
		t.Errorf("kmsproxyd's credentials expire %v, want in an hour", st.Expires)
	}
	env.CheckLogsFree(t, []byte(enclavetest.RoleSecretKey), []byte(enclavetest.RoleToken))
	if strings.Contains(logs.String(), enclavetest.RoleSecretKey) {
		t.Error("the pusher logged the secret")
	}
}
