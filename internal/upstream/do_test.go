package upstream

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// TestKeepAliveAcrossSequentialCalls: one connection serves every call.
// The SDK closes its request body as soon as the answer arrives, and
// net/http used to read that as a failed write and drop the connection,
// so that every few calls paid for a new TLS handshake (see sdkhttp.BufferBody).
func TestKeepAliveAcrossSequentialCalls(t *testing.T) {
	const calls = 300
	for _, unix := range []bool{false, true} {
		f := newFakeKMS(t, unix)
		c := newTestClient(t, f, Config{})
		for i := range calls {
			if _, err := generateRandom(c); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		f.mu.Lock()
		conns, n := f.conns, f.calls["GenerateRandom"]
		f.mu.Unlock()
		if conns != 1 || n != calls {
			t.Errorf("unix %v: %d calls over %d connections, want %d over 1", unix, n, conns, calls)
		}
	}
}

// TestLargeBodyNotBuffered: a body larger than the write buffer is sent as
// the SDK built it, intact (the fake verifies the SigV4 signature, which
// covers the body's hash).
func TestLargeBodyNotBuffered(t *testing.T) {
	f := newFakeKMS(t, false)
	c := newTestClient(t, f, Config{})
	ctx, cancel := c.WithTimeout(context.Background())
	defer cancel()
	_, err := c.KMS().Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/any"), Plaintext: make([]byte, 2*writeBufferSize)})
	if got := ToKMSError(err); got == nil || got.Type != kmsapi.UnsupportedOperation {
		t.Fatalf("Encrypt error = %v, want the fake's UnsupportedOperationException", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls["Encrypt"] != 1 || len(f.authErrors) != 0 {
		t.Errorf("calls %v, auth errors %v", f.calls, f.authErrors)
	}
}

// TestDoBoundsWorkers: at most 2 calls per upstream connection run at once;
// the others wait their turn, and every call runs once.
func TestDoBoundsWorkers(t *testing.T) {
	const maxConns, callers = 2, 12
	c := newTestClient(t, newFakeKMS(t, false), Config{MaxConns: maxConns})
	release := make(chan struct{})
	var active, peak, ran atomic.Int32
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			err := c.Do(context.Background(), func(*kms.Client) {
				n := active.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				<-release
				active.Add(-1)
				ran.Add(1)
			})
			if err != nil {
				t.Errorf("Do: %v", err)
			}
		})
	}
	waitFor(t, 5*time.Second, "the workers to fill", func() bool { return active.Load() == workersPerConn*maxConns })
	time.Sleep(20 * time.Millisecond) // a call past the bound would show now
	if got := active.Load(); got != workersPerConn*maxConns {
		t.Errorf("%d calls running, want %d", got, workersPerConn*maxConns)
	}
	close(release)
	wg.Wait()
	if ran.Load() != callers || peak.Load() != workersPerConn*maxConns {
		t.Errorf("ran %d calls with at most %d at once, want %d with at most %d", ran.Load(), peak.Load(), callers, workersPerConn*maxConns)
	}
}

// TestDoGivesUpWithContext: a call that cannot get a worker before its
// context ends is not run, and Do returns the context's error.
func TestDoGivesUpWithContext(t *testing.T) {
	c := newTestClient(t, newFakeKMS(t, false), Config{MaxConns: 1})
	release := make(chan struct{})
	defer close(release)
	var busy sync.WaitGroup
	for range workersPerConn {
		busy.Add(1)
		go func() {
			_ = c.Do(context.Background(), func(*kms.Client) { busy.Done(); <-release })
		}()
	}
	busy.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ran := false
	err := c.Do(ctx, func(*kms.Client) { ran = true })
	var we *WaitError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &we) || ran {
		t.Fatalf("Do = %v (ran %v), want a *WaitError for context.DeadlineExceeded without running", err, ran)
	}
	if got := ToKMSError(err); got.Type != kmsapi.Throttling || !strings.Contains(got.Message, "--upstream-conns") || !strings.Contains(got.Message, "not sent to KMS") {
		t.Errorf("ToKMSError = %v, want %s naming --upstream-conns", got, kmsapi.Throttling)
	}
}

// TestDoPanic: a panic in a call reaches the caller's goroutine, where
// kmsproxyd's per-request recover sees it, and the client keeps working.
func TestDoPanic(t *testing.T) {
	c := newTestClient(t, newFakeKMS(t, false), Config{MaxConns: 1})
	for range 2 * workersPerConn { // more panics than workers
		func() {
			defer func() {
				if v := recover(); v != "boom" {
					t.Errorf("recovered %v, want boom", v)
				}
			}()
			_ = c.Do(context.Background(), func(*kms.Client) { panic("boom") })
			t.Error("Do returned after its call panicked")
		}()
	}
	var out *kms.GenerateRandomOutput
	var err error
	if derr := c.Do(context.Background(), func(k *kms.Client) {
		out, err = k.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	}); derr != nil || err != nil || len(out.Plaintext) != 8 {
		t.Fatalf("Do after panics: %v, %v", derr, err)
	}
}

// TestDoAfterClose: after Close a call still runs, on the caller's
// goroutine, and the workers are gone.
func TestDoAfterClose(t *testing.T) {
	c := newTestClient(t, newFakeKMS(t, false), Config{})
	if err := c.Do(context.Background(), func(*kms.Client) {}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.workers.Wait() // the workers stop
	ran := false
	if err := c.Do(context.Background(), func(*kms.Client) { ran = true }); err != nil || !ran {
		t.Fatalf("Do after Close = %v, ran %v", err, ran)
	}
}
