package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

func TestHTTPClientAddresses(t *testing.T) {
	tests := []struct {
		name    string
		addr    string
		wantErr string
	}{
		{name: "vsock", addr: "vsock://16:5000"},
		{name: "tcp", addr: "tcp://127.0.0.1:8000"},
		{name: "unix", addr: "unix:///run/kmsproxy.sock"},
		{name: "vsock without CID", addr: "vsock://:5000", wantErr: "has no CID"},
		{name: "no scheme", addr: "127.0.0.1:8000", wantErr: "want vsock://CID:PORT"},
		{name: "relative unix path", addr: "unix://kms.sock", wantErr: "absolute"},
		{name: "http URL", addr: "http://127.0.0.1:8000", wantErr: "unknown scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := HTTPClient(tt.addr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("HTTPClient(%q) = %v, want error containing %q", tt.addr, err, tt.wantErr)
			}
			if _, err := New(context.Background(), tt.addr); err == nil {
				t.Errorf("New(%q) succeeded", tt.addr)
			}
		})
	}
}

// recorded is what a server saw of one request.
type recorded struct {
	host, target, authorization string
}

// serveUnix serves h over plain HTTP on a unix socket, recording each
// request, and returns the kmsproxy address of the socket.
func serveUnix(t testing.TB, h http.Handler) (string, func() []recorded) {
	t.Helper()
	a := transport.Addr{Network: transport.Unix, Path: filepath.Join(t.TempDir(), "kmsproxy.sock")}
	ln, err := transport.Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []recorded
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, recorded{r.Host, r.Header.Get("X-Amz-Target"), r.Header.Get("Authorization")})
		mu.Unlock()
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a.String(), func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), seen...)
	}
}

// kmsHandler is devkms (a real KMS JSON 1.1 server) as a plain http.Handler.
// Without a credentials file it accepts unsigned requests, as kmsproxyd does.
func kmsHandler(t testing.TB) *devkms.Server {
	t.Helper()
	cfg := devkms.DefaultConfig()
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := devkms.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestNewSpeaksKMSOverTheAddress drives the returned *kms.Client against a
// KMS protocol server on a unix socket: the SDK's requests reach it through
// the enclave transport, unsigned, naming Endpoint, and its answers decode.
func TestNewSpeaksKMSOverTheAddress(t *testing.T) {
	addr, seen := serveUnix(t, kmsHandler(t))
	ctx := context.Background()
	c, err := New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("hello enclave"),
		EncryptionContext: map[string]string{"tenant": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(dec.Plaintext) != "hello enclave" {
		t.Errorf("Decrypt = %q", dec.Plaintext)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidCiphertextException" {
		t.Errorf("Decrypt without the context = %v, want InvalidCiphertextException", err)
	}

	reqs := seen()
	if len(reqs) < 4 {
		t.Fatalf("server saw %d requests, want at least 4", len(reqs))
	}
	for _, r := range reqs {
		if r.host != "kmsproxy.enclave" {
			t.Errorf("Host = %q, want kmsproxy.enclave", r.host)
		}
		if r.authorization != "" {
			t.Errorf("request %s was signed (%q); the client should send it unsigned", r.target, r.authorization)
		}
	}
	if reqs[0].target != "TrentService.CreateKey" || reqs[1].target != "TrentService.Encrypt" {
		t.Errorf("targets = %q, %q", reqs[0].target, reqs[1].target)
	}
	if got := c.Options().Region; got != Region {
		t.Errorf("Region = %q, want %q", got, Region)
	}
}

func TestNewOptionOverrides(t *testing.T) {
	c, err := New(context.Background(), "vsock://16:5000", func(o *kms.Options) {
		o.Region = "eu-west-1"
		o.RetryMaxAttempts = 7
	})
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Options(); o.Region != "eu-west-1" || o.RetryMaxAttempts != 7 || aws.ToString(o.BaseEndpoint) != Endpoint {
		t.Errorf("options: region %q, attempts %d, endpoint %q", o.Region, o.RetryMaxAttempts, aws.ToString(o.BaseEndpoint))
	}
}

// TestNewIgnoresEnvironmentEndpoints: the AWS environment of a parent
// instance (a proxy, an endpoint override, a CA bundle) must not divert or
// break calls to the enclave.
func TestNewIgnoresEnvironmentEndpoints(t *testing.T) {
	addr, seen := serveUnix(t, kmsHandler(t))
	kmsd := devkmstest.Start(t) // a TLS KMS with a CA file, for AWS_CA_BUNDLE
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("AWS_ENDPOINT_URL", kmsd.URL)
	t.Setenv("AWS_ENDPOINT_URL_KMS", kmsd.URL)
	t.Setenv("AWS_CA_BUNDLE", kmsd.CAFile)
	t.Setenv("AWS_REGION", "ap-south-1")
	ctx := context.Background()
	c, err := New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)}); err != nil {
		t.Fatalf("GenerateRandom through the enclave address: %v", err)
	}
	if reqs := seen(); len(reqs) != 1 || reqs[0].target != "TrentService.GenerateRandom" {
		t.Errorf("the enclave address saw %+v, want the GenerateRandom call", reqs)
	}
}

func TestNewUnreachable(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "nobody.sock")
	ctx := context.Background()
	c, err := New(ctx, addr, func(o *kms.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
	if err == nil || !strings.Contains(err.Error(), "nobody.sock") {
		t.Errorf("GenerateRandom = %v, want a dial error naming the socket", err)
	}
}

func TestNewError(t *testing.T) {
	long := strings.Repeat("x", maxErrorMessage)
	tests := []struct {
		name   string
		status int
		body   string
		want   Error
		fault  smithy.ErrorFault
	}{
		{name: "KMS shape", status: 400, body: `{"__type":"ValidationException","message":"credentials: AccessKeyId: missing"}`,
			want: Error{400, "ValidationException", "credentials: AccessKeyId: missing"}, fault: smithy.FaultClient},
		{name: "namespaced type and capital Message", status: 400, body: `{"__type":"com.amazonaws.kms#NotFoundException","Message":"no such key"}`,
			want: Error{400, "NotFoundException", "no such key"}, fault: smithy.FaultClient},
		{name: "server fault", status: 500, body: `{"__type":"KMSInternalException","message":"attestation: failed"}`,
			want: Error{500, "KMSInternalException", "attestation: failed"}, fault: smithy.FaultServer},
		{name: "not KMS-shaped", status: 503, body: `{"ready":false}` + "\nmore", want: Error{503, "Service Unavailable", `{"ready":false}`}, fault: smithy.FaultServer},
		{name: "HTML from a proxy", status: 502, body: "<html>bad gateway</html>", want: Error{502, "Bad Gateway", "<html>bad gateway</html>"}, fault: smithy.FaultServer},
		{name: "control characters", status: 400, body: `{"__type":"X","message":"a\u001b[31mb"}`, want: Error{400, "X", "a?[31mb"}, fault: smithy.FaultClient},
		{name: "message at the limit", status: 400, body: `{"__type":"X","message":"` + long + `"}`, want: Error{400, "X", long}, fault: smithy.FaultClient},
		{name: "message past the limit", status: 400, body: `{"__type":"X","message":"` + long + `y"}`, want: Error{400, "X", long + "..."}, fault: smithy.FaultClient},
		{name: "unknown status", status: 599, body: "", want: Error{599, "HTTP 599", ""}, fault: smithy.FaultServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := newError(tt.status, []byte(tt.body))
			if *got != tt.want {
				t.Errorf("newError = %+v, want %+v", *got, tt.want)
			}
			if got.ErrorFault() != tt.fault {
				t.Errorf("fault = %v, want %v", got.ErrorFault(), tt.fault)
			}
		})
	}
}

// TestControlResponseLimit reads an answer of exactly MaxControlResponse
// bytes and refuses one a byte longer.
func TestControlResponseLimit(t *testing.T) {
	for _, tc := range []struct {
		size int
		ok   bool
	}{{MaxControlResponse, true}, {MaxControlResponse + 1, false}} {
		body := []byte(`{"version":"v1"}`)
		body = append(body, bytes.Repeat([]byte(" "), tc.size-len(body))...)
		addr, _ := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body)
		}))
		info, err := GetInfo(context.Background(), addr)
		if tc.ok && (err != nil || info.Version != "v1") {
			t.Errorf("%d bytes: GetInfo = %+v, %v", tc.size, info, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "over")) {
			t.Errorf("%d bytes: GetInfo = %v, want the limit refused", tc.size, err)
		}
	}
}

func TestControlErrors(t *testing.T) {
	addr, _ := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"__type":"AccessDeniedException","message":"the parent listener may not call attestation"}`)
	}))
	_, err := Attestation(context.Background(), addr, AttestationRequest{Nonce: []byte("n")})
	var e *Error
	if !errors.As(err, &e) || e.Code != "AccessDeniedException" || e.StatusCode != 403 {
		t.Fatalf("Attestation = %v, want an *Error with AccessDeniedException", err)
	}
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorMessage() != "the parent listener may not call attestation" {
		t.Errorf("as smithy.APIError: %v", err)
	}
}

// TestAttestationRequestBody checks the JSON kmsproxyd's POST
// /v1/attestation decodes: base64 members named nonce and user_data,
// absent when empty.
func TestAttestationRequestBody(t *testing.T) {
	got := make(chan map[string]any, 1)
	addr, _ := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		got <- m
		io.WriteString(w, `{"document":"hEShATgioFkBAEA="}`)
	}))
	doc, err := Attestation(context.Background(), addr, AttestationRequest{Nonce: []byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if m := <-got; len(m) != 1 || m["nonce"] != "AQID" {
		t.Errorf("body = %v, want {\"nonce\":\"AQID\"}", m)
	}
	if !bytes.HasPrefix(doc, []byte{0x84, 0x44}) {
		t.Errorf("document = %x", doc)
	}
}

func TestPushCredentialsRefusesEmpty(t *testing.T) {
	_, err := PushCredentials(context.Background(), "unix:///nonexistent.sock", aws.Credentials{AccessKeyID: "AKIA"})
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("PushCredentials = %v", err)
	}
}

// TestRetries: the client retries what another attempt may fix
// (ThrottlingException) but not DependencyTimeoutException, which kmsproxyd
// answers only after spending its whole request timeout on KMS.
func TestRetries(t *testing.T) {
	for _, tt := range []struct {
		exception string
		status    int
		attempts  int
	}{
		{"DependencyTimeoutException", http.StatusServiceUnavailable, 1},
		{"ThrottlingException", http.StatusBadRequest, 3},
		{"KMSInternalException", http.StatusInternalServerError, 3},
	} {
		t.Run(tt.exception, func(t *testing.T) {
			addr, seen := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(tt.status)
				fmt.Fprintf(w, `{"__type":%q,"message":"m"}`, tt.exception)
			}))
			c, err := New(context.Background(), addr, func(o *kms.Options) {
				o.Retryer = retry.AddWithMaxBackoffDelay(o.Retryer, time.Millisecond)
			})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.exception {
				t.Fatalf("GenerateRandom = %v, want %s", err, tt.exception)
			}
			if got := len(seen()); got != tt.attempts {
				t.Errorf("%d attempts, want %d", got, tt.attempts)
			}
		})
	}
}

func TestIsPolicyDenial(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"kmsproxyd's policy, through the KMS client", &smithy.GenericAPIError{Code: "AccessDeniedException", Message: PolicyDenialPrefix + `listener "parent" may not call GenerateRandom (policy: listeners.parent.operations)`}, true},
		{"kmsproxyd's policy, on a control endpoint", &Error{StatusCode: 403, Code: "AccessDeniedException", Message: PolicyDenialPrefix + `listener "parent" may not use the metrics endpoint`}, true},
		{"KMS's key policy", &smithy.GenericAPIError{Code: "AccessDeniedException", Message: "User: arn:aws:iam::111122223333:role/r is not authorized to perform: kms:Decrypt"}, false},
		{"another exception with the prefix", &smithy.GenericAPIError{Code: "ValidationException", Message: PolicyDenialPrefix + "x"}, false},
		{"wrapped", fmt.Errorf("decrypt: %w", &smithy.GenericAPIError{Code: "AccessDeniedException", Message: PolicyDenialPrefix + "x"}), true},
		{"not an API error", errors.New("AccessDeniedException: " + PolicyDenialPrefix), false},
		{"nil", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsPolicyDenial(tt.err); got != tt.want {
				t.Errorf("IsPolicyDenial(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
