package upstream

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

func TestNewValidation(t *testing.T) {
	tcp := transport.Addr{Network: transport.TCP, HostPort: "127.0.0.1:8000"}
	keyDER, err := x509.MarshalPKCS8PrivateKey(mustECKey(t))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	base := Config{Region: testRegion, Endpoint: testEndpoint, Dial: tcp, Credentials: testCreds}
	with := func(fn func(c *Config)) Config {
		c := base
		fn(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // "" for success
	}{
		{name: "valid", cfg: base},
		{name: "direct", cfg: with(func(c *Config) { c.Dial, c.Direct = transport.Addr{}, true })},
		{name: "vsock", cfg: with(func(c *Config) { c.Dial = transport.Addr{Network: transport.VSOCK, CID: 3, Port: 8000} })},
		{name: "default endpoint", cfg: with(func(c *Config) { c.Endpoint = "" })},
		{name: "no region", cfg: with(func(c *Config) { c.Region = "" }), wantErr: "upstream: no region"},
		{name: "http endpoint", cfg: with(func(c *Config) { c.Endpoint = "http://localhost:4599" }), wantErr: "must be https"},
		{name: "endpoint with path", cfg: with(func(c *Config) { c.Endpoint = "https://example.com/kms" }), wantErr: "scheme://host[:port] only"},
		{name: "endpoint without host", cfg: with(func(c *Config) { c.Endpoint = "https://" }), wantErr: "has no host"},
		{name: "no dial address", cfg: with(func(c *Config) { c.Dial = transport.Addr{} }), wantErr: "no dial address"},
		{name: "dial and direct", cfg: with(func(c *Config) { c.Direct = true }), wantErr: "both a dial address"},
		{name: "vsock listen address", cfg: with(func(c *Config) { c.Dial = transport.Addr{Network: transport.VSOCK, CID: transport.AnyCID, Port: 8000} }), wantErr: "has no CID"},
		{name: "no credentials", cfg: with(func(c *Config) { c.Credentials = nil }), wantErr: "no credentials provider"},
		{name: "negative conns", cfg: with(func(c *Config) { c.MaxConns = -1 }), wantErr: "negative setting"},
		{name: "negative timeout", cfg: with(func(c *Config) { c.RequestTimeout = -time.Second }), wantErr: "negative setting"},
		{name: "kms-ca not PEM", cfg: with(func(c *Config) { c.ExtraRootsPEM = []byte("hello") }), wantErr: "holds no PEM certificate"},
		{name: "kms-ca private key", cfg: with(func(c *Config) { c.ExtraRootsPEM = keyPEM }), wantErr: `block 1 is "PRIVATE KEY"`},
		{name: "kms-ca bad certificate", cfg: with(func(c *Config) { c.ExtraRootsPEM = certPEM }), wantErr: "PEM block 1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				c.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func mustECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewDefaults(t *testing.T) {
	c, err := New(Config{Region: "eu-west-1", Dial: transport.Addr{Network: transport.VSOCK, CID: 3, Port: 8000}, Credentials: testCreds})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Endpoint() != "https://kms.eu-west-1.amazonaws.com" || c.Through() != "vsock://3:8000" {
		t.Errorf("Endpoint() = %q, Through() = %q", c.Endpoint(), c.Through())
	}
	if c.cfg.MaxConns != DefaultMaxConns || c.cfg.RequestTimeout != DefaultRequestTimeout || c.cfg.MaxAttempts != 3 {
		t.Errorf("defaults: conns %d, timeout %s, attempts %d", c.cfg.MaxConns, c.cfg.RequestTimeout, c.cfg.MaxAttempts)
	}
	if _, ok := c.ClockOffset(); ok {
		t.Error("ClockOffset reports a value before any response")
	}
}

func TestDefaultEndpoint(t *testing.T) {
	tests := []struct{ region, want string }{
		{"us-east-1", "https://kms.us-east-1.amazonaws.com"},
		{"eu-central-2", "https://kms.eu-central-2.amazonaws.com"},
		{"cn-north-1", "https://kms.cn-north-1.amazonaws.com.cn"},
		{"us-gov-west-1", "https://kms.us-gov-west-1.amazonaws.com"},
	}
	for _, tt := range tests {
		t.Run(tt.region, func(t *testing.T) {
			got, err := DefaultEndpoint(tt.region)
			if err != nil || got != tt.want {
				t.Errorf("DefaultEndpoint(%q) = %q, %v; want %q", tt.region, got, err, tt.want)
			}
		})
	}
	if _, err := DefaultEndpoint("not a region!"); err == nil {
		t.Error("DefaultEndpoint accepted an invalid region")
	}
}

// TestEndpointNameThroughDialAddress: TLS is verified for the endpoint's
// name (SNI included), the Host header and SigV4 name it too, and the bytes
// go to the dial address, over TCP and over a unix socket.
func TestEndpointNameThroughDialAddress(t *testing.T) {
	for _, unix := range []bool{false, true} {
		t.Run(map[bool]string{false: "tcp", true: "unix"}[unix], func(t *testing.T) {
			f := newFakeKMS(t, unix)
			c := newTestClient(t, f, Config{})
			out, err := generateRandom(c)
			if err != nil {
				t.Fatalf("GenerateRandom: %v", err)
			}
			if len(out.Plaintext) != 32 {
				t.Errorf("got %d random bytes, want 32", len(out.Plaintext))
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if diff := cmp.Diff(map[string]bool{testHost: true}, f.sni); diff != "" {
				t.Errorf("TLS server names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]bool{testHost: true}, f.hosts); diff != "" {
				t.Errorf("Host headers (-want +got):\n%s", diff)
			}
			if len(f.authErrors) != 0 {
				t.Errorf("SigV4 verification failed: %v", f.authErrors)
			}
			if f.calls["GenerateRandom"] != 1 {
				t.Errorf("calls = %v", f.calls)
			}
		})
	}
}

func TestDirect(t *testing.T) {
	f := newFakeKMS(t, false)
	// Direct: the endpoint's own host is dialed; httptest's certificate
	// names 127.0.0.1.
	c := newTestClient(t, f, Config{Endpoint: "https://" + f.addr.HostPort, Direct: true})
	if _, err := generateRandom(c); err != nil {
		t.Fatalf("GenerateRandom: %v", err)
	}
	if c.Through() != "direct" || c.MaxConnsSeen() != 1 {
		t.Errorf("Through() = %q, MaxConnsSeen() = %d", c.Through(), c.MaxConnsSeen())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.authErrors) != 0 {
		t.Errorf("SigV4 verification failed: %v", f.authErrors)
	}
}

func TestParseDial(t *testing.T) {
	tests := []struct {
		in         string
		want       transport.Addr
		wantDirect bool
		wantErr    bool
	}{
		{in: "vsock://3:8000", want: transport.Addr{Network: transport.VSOCK, CID: 3, Port: 8000}},
		{in: "tcp://127.0.0.1:4599", want: transport.Addr{Network: transport.TCP, HostPort: "127.0.0.1:4599"}},
		{in: "direct", wantDirect: true},
		{in: "Direct", wantErr: true},
		{in: "kms.us-east-1.amazonaws.com:443", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, direct, err := ParseDial(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseDial(%q) error = %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" || direct != tt.wantDirect {
				t.Errorf("ParseDial(%q) = %+v, %v (-want +got):\n%s", tt.in, got, direct, diff)
			}
		})
	}
}

// TestWrongSecretIsRefused shows that the fake's SigV4 check has teeth.
func TestWrongSecretIsRefused(t *testing.T) {
	f := newFakeKMS(t, false)
	c := newTestClient(t, f, Config{Credentials: awscreds.NewStaticCredentialsProvider(testKeyID, "a-different-secret-access-key-EXAMPLE123", "")})
	_, err := generateRandom(c)
	if got := ToKMSError(err); got == nil || got.Type != kmsapi.InvalidSignature || got.Status != http.StatusBadRequest {
		t.Errorf("ToKMSError = %+v, want InvalidSignatureException from the fake", got)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls["GenerateRandom"] != 1 {
		t.Errorf("server saw %d calls, want 1 (a bad signature is not retried)", f.calls["GenerateRandom"])
	}
}

func TestUntrustedCertificate(t *testing.T) {
	tests := []struct {
		name     string
		endpoint string
		roots    []byte
		want     string
	}{
		{"embedded roots only", testEndpoint, []byte{}, "certificate signed by unknown authority"},
		{"name mismatch", "https://kms.us-west-2.amazonaws.com", nil, "not kms.us-west-2.amazonaws.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKMS(t, false)
			c := newTestClient(t, f, Config{Endpoint: tt.endpoint, ExtraRootsPEM: tt.roots})
			_, err := generateRandom(c)
			got := ToKMSError(err)
			host := strings.TrimPrefix(tt.endpoint, "https://")
			prefix := "upstream: failed TLS handshake with " + host + " through " + f.addr.String() + ": "
			if got == nil || got.Type != kmsapi.KMSInternal || got.Status != http.StatusInternalServerError ||
				!strings.HasPrefix(got.Message, prefix) || !strings.Contains(got.Message, tt.want) {
				t.Errorf("ToKMSError = %+v, want KMSInternalException starting %q and containing %q", got, prefix, tt.want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.calls) != 0 {
				t.Errorf("the server received requests: %v", f.calls)
			}
			// A certificate that does not verify is not retried.
			if f.conns != 1 {
				t.Errorf("server saw %d connections, want 1 (no retry of a bad certificate)", f.conns)
			}
		})
	}
}

// TestConnectionCap: 50 concurrent calls share at most MaxConns connections,
// and a second wave reuses them.
func TestConnectionCap(t *testing.T) {
	const maxConns, callers = 4, 50
	f := newFakeKMS(t, false)
	f.set(func(f *fakeKMS) {
		f.handle = func(w http.ResponseWriter, r *http.Request, op string, n int) bool {
			time.Sleep(5 * time.Millisecond) // keep calls overlapping
			return false
		}
	})
	c := newTestClient(t, f, Config{MaxConns: maxConns})
	wave := func() {
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := generateRandom(c); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("GenerateRandom: %v", err)
		}
	}
	wave()
	f.mu.Lock()
	firstConns := f.conns
	f.mu.Unlock()
	wave()
	f.mu.Lock()
	defer f.mu.Unlock()
	if got := c.MaxConnsSeen(); got < 1 || got > maxConns {
		t.Errorf("MaxConnsSeen() = %d, want 1..%d", got, maxConns)
	}
	if firstConns > maxConns {
		t.Errorf("server accepted %d connections in the first wave, want at most %d", firstConns, maxConns)
	}
	if f.conns != firstConns {
		t.Errorf("second wave opened %d new connections, want 0 (keep-alive)", f.conns-firstConns)
	}
	if got := c.Conns(); got != firstConns {
		t.Errorf("Conns() = %d, want the %d kept alive", got, firstConns)
	}
	if f.calls["GenerateRandom"] != 2*callers || len(f.authErrors) != 0 {
		t.Errorf("calls = %v, auth errors %v", f.calls, f.authErrors)
	}
	c.Close()
	waitFor(t, 5*time.Second, "Conns() to drop to 0 after Close", func() bool { return c.Conns() == 0 })
}

func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failFirst answers the first n calls with a KMS error.
func failFirst(n int, e *kmsapi.Error) func(http.ResponseWriter, *http.Request, string, int) bool {
	return func(w http.ResponseWriter, _ *http.Request, _ string, call int) bool {
		if call <= n {
			kmsapi.WriteError(w, e)
			return true
		}
		return false
	}
}

func TestRetries(t *testing.T) {
	throttled := &kmsapi.Error{Type: kmsapi.Throttling, Message: "Rate exceeded", Status: http.StatusBadRequest}
	internal := &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "Internal error", Status: http.StatusInternalServerError}
	unavailable := &kmsapi.Error{Type: kmsapi.DependencyTimeout, Message: "Service is temporarily unavailable", Status: http.StatusServiceUnavailable}
	tests := []struct {
		name        string
		failures    int
		err         *kmsapi.Error
		maxAttempts int
		wantCalls   int
		wantErr     *kmsapi.Error
	}{
		{name: "throttled twice then success", failures: 2, err: throttled, wantCalls: 3},
		{name: "500 once then success", failures: 1, err: internal, wantCalls: 2},
		{name: "503 once then success", failures: 1, err: unavailable, wantCalls: 2},
		{name: "throttled past max attempts", failures: 5, err: throttled, maxAttempts: 2, wantCalls: 2, wantErr: throttled},
		{name: "500 past max attempts", failures: 5, err: internal, wantCalls: 3, wantErr: internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKMS(t, false)
			f.set(func(f *fakeKMS) { f.handle = failFirst(tt.failures, tt.err) })
			c := newTestClient(t, f, Config{MaxAttempts: tt.maxAttempts})
			_, err := generateRandom(c)
			if diff := cmp.Diff(tt.wantErr, ToKMSError(err)); diff != "" {
				t.Errorf("error mismatch (-want +got):\n%s", diff)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if got := f.calls["GenerateRandom"]; got != tt.wantCalls {
				t.Errorf("server saw %d calls, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestKMSErrorsPassThrough(t *testing.T) {
	const keyARN = "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	tests := []struct {
		name  string
		write func(w http.ResponseWriter)
		want  *kmsapi.Error
	}{
		{
			name:  "NotFoundException",
			write: writeKMSError(http.StatusBadRequest, kmsapi.NotFound, "Key '"+keyARN+"' does not exist"),
			want:  &kmsapi.Error{Type: kmsapi.NotFound, Message: "Key '" + keyARN + "' does not exist", Status: 400},
		},
		{
			name: "AccessDeniedException",
			write: writeKMSError(http.StatusBadRequest, kmsapi.AccessDenied,
				"User: arn:aws:sts::111122223333:assumed-role/enclave/i-0123456789abcdef0 is not authorized to perform: kms:Decrypt on resource: "+keyARN+" because no resource-based policy allows the kms:Decrypt action"),
			want: &kmsapi.Error{Type: kmsapi.AccessDenied, Status: 400,
				Message: "User: arn:aws:sts::111122223333:assumed-role/enclave/i-0123456789abcdef0 is not authorized to perform: kms:Decrypt on resource: " + keyARN + " because no resource-based policy allows the kms:Decrypt action"},
		},
		{
			name:  "namespaced type",
			write: writeKMSError(http.StatusBadRequest, "com.amazonaws.kms#KMSInvalidStateException", keyARN+" is pending deletion."),
			want:  &kmsapi.Error{Type: kmsapi.KMSInvalidState, Message: keyARN + " is pending deletion.", Status: 400},
		},
		{
			name:  "empty message",
			write: writeKMSError(http.StatusBadRequest, kmsapi.InvalidCiphertext, ""),
			want:  &kmsapi.Error{Type: kmsapi.InvalidCiphertext, Status: 400},
		},
		{
			name:  "unusual status kept",
			write: writeKMSError(http.StatusForbidden, kmsapi.MissingAuthenticationToken, "Missing Authentication Token"),
			want:  &kmsapi.Error{Type: kmsapi.MissingAuthenticationToken, Message: "Missing Authentication Token", Status: 403},
		},
		{
			name: "not a KMS error",
			write: func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(http.StatusBadGateway)
				fmt.Fprint(w, "<html><body>502 Bad Gateway</body></html>")
			},
			want: &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "upstream: KMS answered HTTP 502 without a KMS error", Status: 500},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKMS(t, false)
			f.set(func(f *fakeKMS) {
				f.handle = func(w http.ResponseWriter, _ *http.Request, _ string, _ int) bool { tt.write(w); return true }
			})
			c := newTestClient(t, f, Config{})
			_, err := generateRandom(c)
			if diff := cmp.Diff(tt.want, ToKMSError(err)); diff != "" {
				t.Errorf("ToKMSError mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func writeKMSError(status int, typ, msg string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		kmsapi.WriteError(w, &kmsapi.Error{Type: typ, Message: msg, Status: status})
	}
}

func TestRequestTimeout(t *testing.T) {
	f := newFakeKMS(t, false)
	f.set(func(f *fakeKMS) {
		f.handle = func(w http.ResponseWriter, r *http.Request, _ string, _ int) bool {
			select { // slower than the timeout; ends when the client hangs up
			case <-r.Context().Done():
				// Hang up without an answer, as a server that never
				// answered would (an empty 200 written now could
				// still reach the client).
				panic(http.ErrAbortHandler)
			case <-time.After(10 * time.Second):
			}
			return true
		}
	})
	c := newTestClient(t, f, Config{RequestTimeout: 300 * time.Millisecond})
	_, err := generateRandom(c)
	want := &kmsapi.Error{Type: kmsapi.DependencyTimeout, Message: "upstream: KMS did not answer within 300ms", Status: http.StatusServiceUnavailable}
	if diff := cmp.Diff(want, ToKMSError(err)); diff != "" {
		t.Errorf("ToKMSError mismatch (-want +got):\n%s\nerror: %v", diff, err)
	}

	// Without WithTimeout the call is bounded all the same.
	_, err = c.KMS().GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	if diff := cmp.Diff(want, ToKMSError(err)); diff != "" {
		t.Errorf("without WithTimeout: ToKMSError mismatch (-want +got):\n%s", diff)
	}

	// A caller's own, earlier deadline is reported as what it was.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	_, err = c.KMS().GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	got := ToKMSError(err)
	if got == nil || got.Type != kmsapi.DependencyTimeout || !strings.HasPrefix(got.Message, "upstream: KMS did not answer within ") {
		t.Errorf("ToKMSError with the caller's deadline = %+v", got)
	}
}

func TestClockOffset(t *testing.T) {
	f := newFakeKMS(t, false)
	f.set(func(f *fakeKMS) { f.dateSkew = 2 * time.Minute })
	c := newTestClient(t, f, Config{})
	if _, ok := c.ClockOffset(); ok {
		t.Fatal("ClockOffset reports a value before any response")
	}
	if _, err := generateRandom(c); err != nil {
		t.Fatalf("GenerateRandom: %v", err)
	}
	got, ok := c.ClockOffset()
	// The Date header has one-second resolution.
	if !ok || got < 2*time.Minute-2*time.Second || got > 2*time.Minute+time.Second {
		t.Errorf("ClockOffset() = %s, %v; want about +2m", got, ok)
	}
}

func TestConnectFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name string
		dial transport.Addr
	}{
		{"tcp refused", transport.Addr{Network: transport.TCP, HostPort: closedPort}},
		{"no unix socket", transport.Addr{Network: transport.Unix, Path: filepath.Join(t.TempDir(), "absent.sock")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeKMS(t, false) // only for its CA; never dialed
			c := newTestClient(t, f, Config{Dial: tt.dial, MaxAttempts: 2})
			_, err := generateRandom(c)
			got := ToKMSError(err)
			prefix := "upstream: failed to connect to KMS through " + tt.dial.String() + ": "
			if got == nil || got.Type != kmsapi.KMSInternal || !strings.HasPrefix(got.Message, prefix) {
				t.Errorf("ToKMSError = %+v, want KMSInternalException starting %q", got, prefix)
			}
			if c.Conns() != 0 || c.MaxConnsSeen() != 0 {
				t.Errorf("Conns() = %d, MaxConnsSeen() = %d after failed dials", c.Conns(), c.MaxConnsSeen())
			}
		})
	}
}

func TestCredentialsFailure(t *testing.T) {
	f := newFakeKMS(t, false)
	c := newTestClient(t, f, Config{Credentials: credentials.NewPush(nil)})
	_, err := generateRandom(c)
	want := &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "credentials: no credentials pushed yet: run kmsproxyctl credentials push", Status: 500}
	if diff := cmp.Diff(want, ToKMSError(err)); diff != "" {
		t.Errorf("ToKMSError mismatch (-want +got):\n%s", diff)
	}
	if !errors.Is(err, credentials.ErrNotReady) {
		t.Errorf("error %v does not wrap credentials.ErrNotReady", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 0 {
		t.Errorf("KMS was called without credentials: %v", f.calls)
	}
}

func TestToKMSError(t *testing.T) {
	own := kmsapi.Errorf(kmsapi.Validation, "bad input")
	tests := []struct {
		name string
		err  error
		want *kmsapi.Error
	}{
		{"nil", nil, nil},
		{"already KMS-shaped", fmt.Errorf("wrapped: %w", own), own},
		{"deadline", fmt.Errorf("op: %w", context.DeadlineExceeded), &kmsapi.Error{Type: kmsapi.DependencyTimeout, Message: "upstream: KMS did not answer before the request's deadline", Status: 503}},
		{"timeout with budget", &TimeoutError{After: 9999 * time.Millisecond, Err: context.DeadlineExceeded}, &kmsapi.Error{Type: kmsapi.DependencyTimeout, Message: "upstream: KMS did not answer within 10s", Status: 503}},
		{"canceled", fmt.Errorf("op: %w", context.Canceled), &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "upstream: the request was canceled before KMS answered", Status: 500}},
		{"connect", &ConnectError{Step: StepConnect, Through: "vsock://3:8000", Err: errors.New("connection reset by peer")}, &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "upstream: failed to connect to KMS through vsock://3:8000: connection reset by peer", Status: 500}},
		{"credentials", &CredentialsError{Err: errors.New("IMDS is down")}, &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "credentials: IMDS is down", Status: 500}},
		{"other", errors.New("boom"), &kmsapi.Error{Type: kmsapi.KMSInternal, Message: "upstream: failed to call KMS: boom", Status: 500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ToKMSError(tt.err)); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConnectErrorRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  *ConnectError
		want bool
	}{
		{"connect", &ConnectError{Step: StepConnect, Err: errors.New("refused")}, true},
		{"handshake cut", &ConnectError{Step: StepTLS, Err: errors.New("EOF")}, true},
		{"bad certificate", &ConnectError{Step: StepTLS, Err: &tlsCertificateVerificationError}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.ConnectionError(); got != tt.want {
				t.Errorf("ConnectionError() = %v, want %v", got, tt.want)
			}
		})
	}
}

var tlsCertificateVerificationError = tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}

// A canceled caller gets its own cancellation, not a retry storm.
func TestCallerCancel(t *testing.T) {
	f := newFakeKMS(t, false)
	c := newTestClient(t, f, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.KMS().GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	got := ToKMSError(err)
	if got == nil || got.Type != kmsapi.KMSInternal || !strings.Contains(got.Message, "canceled") {
		t.Errorf("ToKMSError = %+v, want KMSInternalException about cancellation", got)
	}
}

func TestCountedConnClosesOnce(t *testing.T) {
	c := &Client{slots: make(chan struct{}, 1)}
	a, b := net.Pipe()
	defer b.Close()
	c.slots <- struct{}{}
	c.open.Add(1)
	cc := &countedConn{Conn: a, c: c}
	cc.Close()
	cc.Close()
	if got := c.Conns(); got != 0 {
		t.Errorf("Conns() = %d after closing twice, want 0", got)
	}
	if len(c.slots) != 0 {
		t.Errorf("%d slots held after close, want 0", len(c.slots))
	}
}
