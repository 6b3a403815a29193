package upstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// The fake's TLS certificate (httptest's) names example.com, 127.0.0.1 and
// ::1. Tests use https://example.com as the endpoint and dial the fake's
// real address: only a client that verifies the endpoint's name while
// sending bytes elsewhere can talk to it.
const (
	testEndpoint = "https://example.com"
	testHost     = "example.com"
	testRegion   = "us-west-2"
	testKeyID    = "AKIAIOSFODNN7EXAMPLE"
	testSecret   = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

var testCreds = awscreds.NewStaticCredentialsProvider(testKeyID, testSecret, "")

// fakeKMS answers the KMS JSON 1.1 protocol over TLS with kmsapi, checks
// every request's SigV4 signature with the SDK's own signer, and records
// what it saw.
type fakeKMS struct {
	srv   *httptest.Server
	addr  transport.Addr // where clients dial
	caPEM []byte         // trust this to accept the fake's certificate

	mu         sync.Mutex
	calls      map[string]int // by operation
	conns      int            // connections accepted
	sni        map[string]bool
	hosts      map[string]bool
	authErrors []string
	dateSkew   time.Duration
	// handle answers a request instead of the default when it returns
	// true; n counts calls of the operation, from 1.
	handle func(w http.ResponseWriter, r *http.Request, op string, n int) bool
}

func newFakeKMS(t testing.TB, unix bool) *fakeKMS {
	t.Helper()
	f := &fakeKMS{calls: map[string]int{}, sni: map[string]bool{}, hosts: map[string]bool{}}
	srv := httptest.NewUnstartedServer(f)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
		}
	}
	if unix {
		path := filepath.Join(t.TempDir(), "kms.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatalf("failed to listen on %s: %v", path, err)
		}
		srv.Listener.Close()
		srv.Listener = ln
		f.addr = transport.Addr{Network: transport.Unix, Path: path}
	} else {
		f.addr = transport.Addr{Network: transport.TCP, HostPort: srv.Listener.Addr().String()}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.srv = srv
	f.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return f
}

func (f *fakeKMS) set(fn func(f *fakeKMS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := kmsapi.ReadBody(r, kmsapi.MaxRequestBody)
	if err != nil {
		kmsapi.WriteError(w, err)
		return
	}
	op, opErr := kmsapi.Operation(r)
	authErr := verifySigV4(r, body)

	f.mu.Lock()
	f.calls[op]++
	n := f.calls[op]
	if r.TLS != nil {
		f.sni[r.TLS.ServerName] = true
	}
	f.hosts[r.Host] = true
	if authErr != nil {
		f.authErrors = append(f.authErrors, authErr.Error())
	}
	skew, handle := f.dateSkew, f.handle
	f.mu.Unlock()

	if skew != 0 {
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
	}
	if authErr != nil {
		kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.InvalidSignature, Message: authErr.Error(), Status: http.StatusBadRequest})
		return
	}
	if opErr != nil {
		kmsapi.WriteError(w, opErr)
		return
	}
	if handle != nil && handle(w, r, op, n) {
		return
	}
	switch op {
	case "GenerateRandom":
		var in kms.GenerateRandomInput
		if err := kmsapi.DecodeInput(body, &in); err != nil {
			kmsapi.WriteError(w, err)
			return
		}
		size := 32
		if in.NumberOfBytes != nil {
			size = int(*in.NumberOfBytes)
		}
		kmsapi.WriteOutput(w, &kms.GenerateRandomOutput{Plaintext: make([]byte, size)})
	default:
		kmsapi.WriteError(w, kmsapi.Errorf(kmsapi.UnsupportedOperation, "the fake does not do %s", op))
	}
}

// verifySigV4 recomputes the request's signature with aws-sdk-go-v2's v4
// signer from the headers it says it signed, and compares.
func verifySigV4(r *http.Request, body []byte) error {
	auth := r.Header.Get("Authorization")
	rest, ok := strings.CutPrefix(auth, "AWS4-HMAC-SHA256 ")
	if !ok {
		return fmt.Errorf("no SigV4 Authorization header (got %q)", auth)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ", ") {
		k, v, _ := strings.Cut(part, "=")
		fields[k] = v
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[0] != testKeyID || scope[2] != testRegion || scope[3] != "kms" || scope[4] != "aws4_request" {
		return fmt.Errorf("credential scope %q, want %s/DATE/%s/kms/aws4_request", fields["Credential"], testKeyID, testRegion)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	hasHost := false
	for _, h := range signed {
		hasHost = hasHost || h == "host"
	}
	if !hasHost {
		return fmt.Errorf("host is not a signed header: %q", fields["SignedHeaders"])
	}
	at, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("bad X-Amz-Date: %v", err)
	}
	again, err := http.NewRequest(r.Method, "https://"+r.Host+r.URL.RequestURI(), strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	again.Host = r.Host
	for _, h := range signed {
		if h != "host" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	again.ContentLength = r.ContentLength
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: testKeyID, SecretAccessKey: testSecret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(sum[:]), "kms", testRegion, at); err != nil {
		return err
	}
	if got := again.Header.Get("Authorization"); got != auth {
		return fmt.Errorf("signature mismatch:\n got  %s\n want %s", auth, got)
	}
	return nil
}

// newTestClient returns a client for f with cfg's zero fields filled in.
func newTestClient(t testing.TB, f *fakeKMS, cfg Config) *Client {
	t.Helper()
	if cfg.Region == "" {
		cfg.Region = testRegion
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = testEndpoint
	}
	if cfg.Dial.Network == "" && !cfg.Direct {
		cfg.Dial = f.addr
	}
	if cfg.ExtraRootsPEM == nil {
		cfg.ExtraRootsPEM = f.caPEM
	}
	if cfg.Credentials == nil {
		cfg.Credentials = testCreds
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// generateRandom makes one call within the client's request timeout.
func generateRandom(c *Client) (*kms.GenerateRandomOutput, error) {
	ctx, cancel := c.WithTimeout(context.Background())
	defer cancel()
	return c.KMS().GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
}
