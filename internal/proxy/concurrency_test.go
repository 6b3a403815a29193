package proxy_test

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// TestManyClientsFewUpstreamConnections: many parent apps at once, each on
// its own connection, all get their plaintext, while kmsproxyd keeps to
// its upstream connections (the calls wait for one of its few upstream
// workers, and envelopes are opened a few at a time).
func TestManyClientsFewUpstreamConnections(t *testing.T) {
	const clients, each = 48, 3
	e := enclavetest.Start(t, enclavetest.Options{UpstreamConns: 2})
	e.DevKMS.SetFaults(devkms.Faults{Latency: 10 * time.Millisecond}) // keep calls overlapping
	secret := []byte("shared by many apps")
	blob := encryptAsOperator(t, e, secret, nil)
	var wg sync.WaitGroup
	for range clients {
		c := e.Client(t, e.ParentAddr)
		wg.Go(func() {
			for range each {
				out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob})
				if err != nil {
					t.Errorf("Decrypt: %v", err)
					return
				}
				if !bytes.Equal(out.Plaintext, secret) {
					t.Errorf("Decrypt = %q, want %q", out.Plaintext, secret)
				}
			}
		})
	}
	wg.Wait()
	if got := e.Upstream.MaxConnsSeen(); got < 1 || got > 2 {
		t.Errorf("upstream connections peaked at %d, want 1..2", got)
	}
}

// TestQueuedRequestsTimeOut: while KMS is slow, the requests on the wire end
// with DependencyTimeoutException (KMS did not answer) and those still
// waiting for an upstream connection with ThrottlingException naming
// --upstream-conns (never sent), both within the request timeout; none
// hangs, and the wait is its own step in the metrics.
func TestQueuedRequestsTimeOut(t *testing.T) {
	const callers = 16 // 4 times the workers of one upstream connection
	timeout := 300 * time.Millisecond
	e := enclavetest.Start(t, enclavetest.Options{UpstreamConns: 1, RequestTimeout: timeout})
	e.DevKMS.SetFaults(devkms.Faults{Latency: 2 * time.Second})
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for range callers {
		c := e.Client(t, e.ParentAddr)
		wg.Go(func() {
			_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
			code := apiErrorCode(err)
			switch {
			case code == "DependencyTimeoutException" && strings.Contains(err.Error(), "KMS did not answer"):
			case code == "ThrottlingException" && strings.Contains(err.Error(), "connections to KMS stayed busy") &&
				strings.Contains(err.Error(), "--upstream-conns") && strings.Contains(err.Error(), "not sent to KMS"):
			default:
				t.Errorf("error = %v, want DependencyTimeoutException (KMS did not answer) or ThrottlingException (no upstream connection)", err)
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes["DependencyTimeoutException"] == 0 || codes["ThrottlingException"] == 0 {
		t.Errorf("outcomes %v: want requests on the wire and requests that waited for a connection", codes)
	}
	series := `kmsproxy_step_duration_seconds_count{listener="parent",step="upstream_wait"}`
	if n := metricValue(getMetrics(t, e, e.ParentAddr), series); n < 1 {
		t.Errorf("%s = %v, want the waits counted", series, n)
	}
	if d := time.Since(start); d > timeout+time.Second {
		t.Errorf("the requests took %s to fail, want about the %s request timeout", d, timeout)
	}
}
