package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/recipient"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// recordingBody is a request body that remembers every buffer region it
// read into: the regions alias the buffers readBody made, so once the
// request is over they show what is left of the body in memory.
type recordingBody struct {
	r       io.Reader
	regions [][]byte
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.regions = append(b.regions, p[:n])
	return n, err
}

func (b *recordingBody) Close() error { return nil }

// left returns how many bytes of the regions are not zero.
func (b *recordingBody) left() int {
	n := 0
	for _, r := range b.regions {
		for _, c := range r {
			if c != 0 {
				n++
			}
		}
	}
	return n
}

// chunked hides a reader's length, as a chunked request body does.
type chunked struct{ io.Reader }

func bodyRequest(t testing.TB, body []byte, declared bool) (*http.Request, *recordingBody) {
	t.Helper()
	var src io.Reader = bytes.NewReader(body)
	if !declared {
		src = chunked{src}
	}
	rb := &recordingBody{r: src}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Body = http.MaxBytesReader(httptest.NewRecorder(), rb, kmsapi.MaxRequestBody)
	r.ContentLength = -1
	if declared {
		r.ContentLength = int64(len(body))
	}
	return r, rb
}

// TestReadBody: a body up to kmsapi.MaxRequestBody is read whole, one byte
// more is refused, with or without Content-Length; and once the caller
// clears the body it got, no copy of it is left in any buffer readBody
// read into, also when a chunked body made it grow, or when it refused
// the body.
func TestReadBody(t *testing.T) {
	const max = kmsapi.MaxRequestBody
	body := func(n int) []byte { return bytes.Repeat([]byte("p"), n) }
	for _, tt := range []struct {
		name     string
		size     int
		declared bool
		tooBig   bool
	}{
		{"small, Content-Length", 300, true, false},
		{"small, chunked", 300, false, false},
		{"empty", 0, true, false},
		{"grows while chunked", 20000, false, false},
		{"at the limit, Content-Length", max, true, false},
		{"at the limit, chunked", max, false, false},
		{"one past the limit, Content-Length", max + 1, true, true},
		{"one past the limit, chunked", max + 1, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, rb := bodyRequest(t, body(tt.size), tt.declared)
			got, err := readBody(r, max)
			if tt.tooBig {
				var ke *kmsapi.Error
				if !errors.As(err, &ke) || ke.Type != kmsapi.Validation || ke.Message != "Request body exceeds the 65536-byte limit" {
					t.Fatalf("readBody = %d bytes, %v; want ValidationException naming the limit", len(got), err)
				}
			} else {
				if err != nil || !bytes.Equal(got, body(tt.size)) {
					t.Fatalf("readBody = %d bytes, %v; want the %d-byte body", len(got), err, tt.size)
				}
				if tt.declared && cap(got) != tt.size+1 {
					t.Errorf("cap = %d for a declared %d-byte body, want one buffer of %d", cap(got), tt.size, tt.size+1)
				}
				clear(got[:cap(got)])
			}
			if n := rb.left(); n != 0 {
				t.Errorf("%d bytes of the body are left in buffers readBody made", n)
			}
		})
	}
}

// TestRequestSecretsCleared: after a request, the body kmsproxyd read
// (Encrypt's Plaintext, in base64) and the decoded input's Plaintext and
// Message are zero, whether KMS answered or failed.
func TestRequestSecretsCleared(t *testing.T) {
	s := newUpstreamServer(t)
	l := s.listeners[policy.ListenerLocal]
	secret := []byte("an enclave secret headed for Encrypt")

	t.Run("the body, KMS unreachable", func(t *testing.T) {
		r, rb := bodyRequest(t, []byte(`{"KeyId":"alias/app","Plaintext":"`+b64(secret)+`"}`), true)
		r.Header.Set("X-Amz-Target", "TrentService.Encrypt")
		r.Header.Set("Content-Type", kmsapi.ContentType)
		w := httptest.NewRecorder()
		l.serveAPI(w, r)
		if w.Code == http.StatusOK {
			t.Fatalf("Encrypt against no KMS answered %s", w.Body)
		}
		if len(rb.regions) == 0 || rb.left() != 0 {
			t.Errorf("%d bytes of the body are left after the request", rb.left())
		}
	})

	for _, tt := range []struct {
		op   string
		body string
		call func(h *[]byte) opHandler
	}{
		{"Encrypt", `{"KeyId":"alias/app","Plaintext":"` + b64(secret) + `"}`, func(h *[]byte) opHandler {
			return passThrough(func(_ *kms.Client, _ context.Context, in *kms.EncryptInput, _ ...func(*kms.Options)) (*kms.EncryptOutput, error) {
				*h = in.Plaintext
				return &kms.EncryptOutput{KeyId: aws.String(homeARN), CiphertextBlob: []byte("c")}, nil
			})
		}},
		{"Sign", `{"KeyId":"alias/app","Message":"` + b64(secret) + `","SigningAlgorithm":"ECDSA_SHA_256"}`, func(h *[]byte) opHandler {
			return passThrough(func(_ *kms.Client, _ context.Context, in *kms.SignInput, _ ...func(*kms.Options)) (*kms.SignOutput, error) {
				*h = in.Message
				return nil, errors.New("KMS failed")
			})
		}},
		{"GenerateMac", `{"KeyId":"alias/app","Message":"` + b64(secret) + `","MacAlgorithm":"HMAC_SHA_256"}`, func(h *[]byte) opHandler {
			return passThrough(func(_ *kms.Client, _ context.Context, in *kms.GenerateMacInput, _ ...func(*kms.Options)) (*kms.GenerateMacOutput, error) {
				*h = in.Message
				return &kms.GenerateMacOutput{KeyId: aws.String(homeARN), Mac: []byte("m")}, nil
			})
		}},
	} {
		t.Run("the decoded "+tt.op+" input", func(t *testing.T) {
			var held []byte
			h := tt.call(&held)
			rq := &request{id: "test", listener: policy.ListenerLocal, op: tt.op, rules: l.rules}
			_ = h(s, context.Background(), httptest.NewRecorder(), rq, []byte(tt.body))
			if !bytes.Equal(held, make([]byte, len(secret))) {
				t.Errorf("the decoded secret is %q after the request, want %d zero bytes", held, len(secret))
			}
		})
	}
	t.Run("every input member clearSecrets knows", func(t *testing.T) {
		for op, in := range map[string]any{
			"Encrypt": &kms.EncryptInput{Plaintext: slices.Clone(secret)}, "Sign": &kms.SignInput{Message: slices.Clone(secret)},
			"Verify": &kms.VerifyInput{Message: slices.Clone(secret)}, "GenerateMac": &kms.GenerateMacInput{Message: slices.Clone(secret)},
			"VerifyMac": &kms.VerifyMacInput{Message: slices.Clone(secret)},
		} {
			clearSecrets(in)
			if strings.Contains(string(fieldBytes(in)), "enclave") {
				t.Errorf("%s: clearSecrets left the secret", op)
			}
		}
	})
}

// TestDecodeInputKeepsErrors: decodeInput accepts and refuses what
// kmsapi.DecodeInput does, with the same messages.
func TestDecodeInputKeepsErrors(t *testing.T) {
	for _, body := range []string{
		``, ` `, `{}`, `null`, `{"KeyId":"alias/x","Plaintext":"eA=="}`, ` {"KeyId":"a"} `,
		`{"KeyId":"a"} x`, `{"KeyId":"a"}{}`, `{"KeyId":`, `{"Plaintext":"***"}`, `{"KeyId":7}`, `[1]`, `{"KeyId":"a",}`,
	} {
		var a, b kms.EncryptInput
		errA, errB := decodeInput([]byte(body), &a), kmsapi.DecodeInput([]byte(body), &b)
		if (errA == nil) != (errB == nil) || errA != nil && errA.Error() != errB.Error() {
			t.Errorf("%q: decodeInput = %v, kmsapi.DecodeInput = %v", body, errA, errB)
		}
		if errA == nil && (aws.ToString(a.KeyId) != aws.ToString(b.KeyId) || !bytes.Equal(a.Plaintext, b.Plaintext)) {
			t.Errorf("%q: decodeInput gave %+v, kmsapi.DecodeInput %+v", body, a, b)
		}
	}
}

const homeARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// fieldBytes returns the Plaintext or Message of an input.
func fieldBytes(in any) []byte {
	switch v := in.(type) {
	case *kms.EncryptInput:
		return v.Plaintext
	case *kms.SignInput:
		return v.Message
	case *kms.VerifyInput:
		return v.Message
	case *kms.GenerateMacInput:
		return v.Message
	case *kms.VerifyMacInput:
		return v.Message
	}
	return nil
}

// newUpstreamServer returns a Server with the built-in policy whose
// upstream client signs for us-east-1 and dials a closed port, so that
// every call to KMS fails quickly.
func newUpstreamServer(t testing.TB) *Server {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := nsmsim.New(ca, nsmsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE000000001", "AWS_SECRET_ACCESS_KEY": "test-secret-access-key-of-40-characters"}
	creds, err := credentials.NewEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	dial, err := transport.Parse("tcp://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.New(upstream.Config{Region: "us-east-1", Dial: dial, Credentials: creds, MaxConns: 1, RequestTimeout: 5 * time.Second, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	mgr, err := recipient.New(context.Background(), recipient.Config{Attester: sim, Bits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Close)
	s, err := New(Config{Policy: policy.Default(), Recipient: mgr, Upstream: up, Credentials: creds, Attester: sim,
		MaxInflight: 4, RequestTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
