package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
)

// processFaults is a stack of processes under load for the faults that
// need real processes: KMS going away and the vsock-proxy stand-in dying.
type processFaults struct {
	s       *stack
	c       *kms.Client
	secret  []byte
	ct      []byte
	budget  time.Duration
	sampler *connSampler
}

// requestTimeout is kmsproxyd's --request-timeout in these tests, short so
// that a fault shows quickly.
const processRequestTimeout = 2 * time.Second

func startProcessFaults(t testing.TB) *processFaults {
	t.Helper()
	build(t) // before the watchdog starts
	sc := newScan(t)
	s := startStack(t, sc, stackOptions{requestTimeout: processRequestTimeout, upstreamConns: defaultUpstreamConns})
	in, want := s.missionInput(t)
	pf := &processFaults{s: s, c: s.parentClient(t, false), secret: want.Plaintext, ct: in.Ciphertext, budget: processRequestTimeout + slack}
	pf.sampler = sampleUpstreamConns(t, s.parentAddr)
	return pf
}

func (pf *processFaults) decrypt(ctx context.Context) error {
	return decryptWith(ctx, pf.c, pf.ct, pf.secret, map[string]string{"tenant": "acme"})
}

// setFaults changes devkms's fault injection at run time, with
// PUT /devkms/faults as an operator would.
func (pf *processFaults) setFaults(t testing.TB, faults string) {
	t.Helper()
	hc, err := pf.s.devkmsHTTP()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("https://localhost:%d/devkms/faults", pf.s.kmsPort), strings.NewReader(faults))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /devkms/faults %s: %s %s", faults, resp.Status, body)
	}
}

// checkConns fails t if kmsproxyd reported more upstream connections at
// once than --upstream-conns (kmsproxy_upstream_connections, sampled every
// 25ms through the run). The relay in front of devkms cannot judge this
// under faults: it notices a closed connection a moment after socat has
// already accepted the next one.
func (pf *processFaults) checkConns(t testing.TB) {
	t.Helper()
	pf.sampler.finish()
	maxGauge, samples := pf.sampler.max.Load(), pf.sampler.samples.Load()
	t.Logf("upstream connections: kmsproxy_upstream_connections at most %d (%d samples); --upstream-conns %d",
		maxGauge, samples, defaultUpstreamConns)
	if samples == 0 {
		t.Error("kmsproxy_upstream_connections was never sampled")
	}
	if maxGauge > defaultUpstreamConns {
		t.Errorf("kmsproxyd had %d connections to KMS at once, over --upstream-conns %d", maxGauge, defaultUpstreamConns)
	}
}

// during runs a load phase of a second and fault 300ms into it, so that
// requests are in flight when it strikes: each gets its answer or an error
// naming the upstream step.
func (pf *processFaults) during(t testing.TB, name string, fault func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(300 * time.Millisecond)
		fault()
	}()
	load(t, name, 4, time.Second, pf.budget, pf.decrypt, unreachable)
	<-done
}

// Errors kmsproxyd may answer while KMS cannot be reached: the connection
// or its TLS handshake failed (KMSInternalException naming the upstream
// step and the route), or time ran out (DependencyTimeoutException).
var unreachable = anyOf(
	expectError("KMSInternalException", "upstream:"),
	expectError("DependencyTimeoutException", "upstream:"),
)

// outage runs the load through a fault of the path to KMS: up, what
// killed mid-load by kill, down (every request an error naming the upstream
// step, within the request timeout), restarted by restart, and serving
// again within resume's second, with kmsproxyd's upstream connections
// within bounds throughout.
func (pf *processFaults) outage(t *testing.T, what string, kill func(), restart func(testing.TB)) {
	t.Helper()
	load(t, what+" up", 4, 500*time.Millisecond, pf.budget, pf.decrypt, noErrors)

	pf.during(t, what+" killed mid-load", kill)
	ta := load(t, what+" down", 4, 2*time.Second, pf.budget, pf.decrypt, unreachable)
	if ta.oks() > 0 {
		t.Errorf("%d requests succeeded with %s down", ta.oks(), what)
	}

	restart(t)
	resume(t, what+" back", pf.budget, pf.decrypt)
	load(t, what+" back", 4, 500*time.Millisecond, pf.budget, pf.decrypt, noErrors)
	pf.checkConns(t)
}

// TestFaultDevKMSDown kills devkms under load and starts it again on the
// same port with the same state file: during the outage every request gets
// an error naming the upstream step within the request timeout; a second
// after devkms is back, the ciphertext made before the outage decrypts.
func TestFaultDevKMSDown(t *testing.T) {
	pf := startProcessFaults(t)
	pf.outage(t, "devkms", pf.s.devkms.kill, pf.s.restartDevKMS)
}

// TestFaultVsockProxyKilled kills the vsock-proxy stand-in (socat and the
// children serving open connections) under load and starts it again.
func TestFaultVsockProxyKilled(t *testing.T) {
	pf := startProcessFaults(t)
	pf.outage(t, "the vsock-proxy stand-in (socat)", pf.s.socat.kill, pf.s.startSocat)

	// A GenerateRandom too, to be sure more than the one key works.
	if _, err := pf.c.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Errorf("GenerateRandom after the restart: %v", err)
	}
}

// TestFaultDevKMSFaultsAPI drives the devkms process's fault injection at
// run time (PUT /devkms/faults) under load: slow beyond the request
// timeout, throttling 30% of calls, failing every call with a 5xx; then
// clears it and service resumes.
func TestFaultDevKMSFaultsAPI(t *testing.T) {
	pf := startProcessFaults(t)

	pf.setFaults(t, `{"latency":"3s"}`)
	ta := load(t, "devkms latency 3s (request timeout 2s)", 4, 2500*time.Millisecond, pf.budget, pf.decrypt,
		expectError("DependencyTimeoutException", "upstream:"))
	if ta.oks() > 0 {
		t.Errorf("%d requests succeeded though KMS answers after the request timeout", ta.oks())
	}
	pf.setFaults(t, `{"latency":"0s"}`)
	resume(t, "devkms fast again", pf.budget, pf.decrypt)

	pf.setFaults(t, `{"throttle_rate":0.3}`)
	ta = load(t, "devkms throttling 30%", 4, 1500*time.Millisecond, pf.budget, pf.decrypt,
		anyOf(expectError("ThrottlingException", kmsThrottleMessage), expectError("DependencyTimeoutException", "upstream:")))
	if ta.oks() == 0 {
		t.Error("no request succeeded with 30% of KMS calls throttled")
	}

	pf.setFaults(t, `{"error_rate":1}`)
	ta = load(t, "devkms failing every call", 4, 1500*time.Millisecond, pf.budget, pf.decrypt,
		anyOf(expectError("KMSInternalException", kmsFaultMessage), expectError("DependencyTimeoutException", "upstream:")))
	if ta.oks() > 0 {
		t.Errorf("%d requests succeeded though KMS fails every call", ta.oks())
	}
	pf.setFaults(t, `{}`)
	resume(t, "devkms healthy again", pf.budget, pf.decrypt)
	pf.checkConns(t)
	checkControlEndpoints(t, pf.s.scan, pf.s.parentAddr)
}

// TestShutdownDrainsInFlight sends SIGTERM to kmsproxyd while requests are
// in flight (KMS is slow): they still get their right answers, and
// kmsproxyd exits 0.
func TestShutdownDrainsInFlight(t *testing.T) {
	pf := startProcessFaults(t)
	pf.setFaults(t, `{"latency":"1s"}`)
	hc, err := client.HTTPClient(pf.s.parentAddr)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), pf.budget)
			defer cancel()
			errs <- pf.decrypt(ctx)
		}()
	}
	if err := poll(5*time.Second, func() error {
		n, err := metric(hc, `kmsproxy_inflight_requests{listener="parent"}`)
		if err == nil && n < 4 {
			err = fmt.Errorf("%v requests in flight", n)
		}
		return err
	}); err != nil {
		t.Fatalf("the requests did not reach kmsproxyd: %v", err)
	}
	hc.CloseIdleConnections()
	pf.sampler.finish() // it would hold a connection open through the drain
	pf.s.kmsproxyd.signal(syscall.SIGTERM)
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("a request in flight at SIGTERM: %v", err)
		}
	}
	// The one SIGTERM is enough: kmsproxyd exits by itself once drained
	// (a second one would end it at once).
	select {
	case <-pf.s.kmsproxyd.done:
	case <-time.After(stopTimeout):
		t.Fatalf("kmsproxyd did not exit after draining\n%s", pf.s.kmsproxyd.log)
	}
	if code := pf.s.kmsproxyd.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("kmsproxyd exited with status %d after draining, want 0\n%s", code, pf.s.kmsproxyd.log)
	}
}
