package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// stuckLog is a log destination that holds kmsproxyd's per-request line
// until the test lets it through, like a console nobody reads or a full
// pipe.
type stuckLog struct{ gate chan struct{} }

func (s *stuckLog) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"msg":"request"`)) {
		select {
		case <-s.gate:
		case <-time.After(30 * time.Second): // never hang the test binary
		}
	}
	return len(p), nil
}

// letOneThrough releases the one request line being written, waiting for
// it to be there: proof that it was held back.
func (s *stuckLog) letOneThrough(t *testing.T) {
	t.Helper()
	select {
	case s.gate <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("no request log line was being written")
	}
}

// TestAnswerDoesNotWaitForTheLog: the caller gets kmsproxyd's answer while
// the request's log line is still being written, for an attested
// operation, a pass-through one and an error, and each answer has a
// Content-Length.
func TestAnswerDoesNotWaitForTheLog(t *testing.T) {
	sl := &stuckLog{gate: make(chan struct{})}
	e := enclavetest.Start(t, enclavetest.Options{LogLevel: slog.LevelInfo, LogTee: sl})
	secret := []byte("an answer that must not wait")
	blob := encryptAsOperator(t, e, secret, nil)

	var lengths []string
	c := e.Client(t, e.ParentAddr)
	opts := func(o *kms.Options) {
		o.HTTPClient = &http.Client{Transport: headerSpy{next: o.HTTPClient.(*http.Client).Transport, lengths: &lengths}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob}, opts); err != nil || !bytes.Equal(out.Plaintext, secret) {
		t.Fatalf("Decrypt while its log line is held: %v", err)
	}
	sl.letOneThrough(t)
	if _, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(e.KeyID)}, opts); err != nil {
		t.Fatalf("DescribeKey while its log line is held: %v", err)
	}
	sl.letOneThrough(t)
	var ke interface{ ErrorCode() string }
	if _, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("not a ciphertext")}, opts); !errors.As(err, &ke) {
		t.Fatalf("Decrypt of garbage while its log line is held: %v, want a KMS error", err)
	}
	sl.letOneThrough(t)
	for i, l := range lengths {
		if n, err := strconv.Atoi(l); err != nil || n <= 0 {
			t.Errorf("answer %d: Content-Length %q", i+1, l)
		}
	}
	if len(lengths) != 3 {
		t.Errorf("saw %d answers, want 3", len(lengths))
	}
}

// headerSpy records each answer's Content-Length header.
type headerSpy struct {
	next    http.RoundTripper
	lengths *[]string
}

func (h headerSpy) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err == nil {
		*h.lengths = append(*h.lengths, resp.Header.Get("Content-Length"))
	}
	return resp, err
}
