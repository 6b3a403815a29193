package proxy_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/proxy"
)

func mustPolicy(t testing.TB, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(text), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// getMetrics reads /metrics on addr.
func getMetrics(t testing.TB, e *enclavetest.Env, addr string) string {
	t.Helper()
	hc, _ := e.HTTPClient(addr)
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://kmsproxy.enclave/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics on %s: %d %s", addr, resp.StatusCode, b)
	}
	return string(b)
}

// metricValue returns the value of one series in a /metrics text, or -1.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}

// waitMetric polls /metrics on addr until series has at least the value
// want, for at most 10 s, and returns the last text read.
func waitMetric(t testing.TB, e *enclavetest.Env, addr, series string, want float64) string {
	t.Helper()
	var m string
	for range 500 {
		m = getMetrics(t, e, addr)
		if metricValue(m, series) >= want {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s is %v, want %v", series, metricValue(m, series), want)
	return m
}

// TestBodilessParentDoesNotStarveLocal is the parent's slow-request
// attack: 300 connections that send a KMS request's headers and then no
// body. They hold none of the listener's in-flight slots (a slot is taken
// once the body is read), the parent listener keeps at most its
// max_connections of them open, and the local listener serves throughout.
// Bounded memory is shown by counting connections and goroutines.
func TestBodilessParentDoesNotStarveLocal(t *testing.T) {
	const parentConns, attack = 32, 300
	e := enclavetest.Start(t, enclavetest.Options{
		MaxInflight: 16, // fewer slots than the attacker has connections
		Policy: mustPolicy(t, fmt.Sprintf(`listeners:
  parent:
    operations: ["*"]
    plaintext: true
    max_connections: %d
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
    metrics_all_listeners: true
`, parentConns)),
	})
	local := e.Client(t, e.LocalAddr)
	if _, err := local.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()

	stallRequests(t, e.ParentAddr, attack)
	// kmsproxyd has taken as many as it will, and no more.
	m := waitMetric(t, e, e.LocalAddr, `kmsproxy_open_connections{listener="parent"}`, parentConns)
	if got := metricValue(m, `kmsproxy_open_connections{listener="parent"}`); got != parentConns {
		t.Fatalf("kmsproxyd holds %v parent connections, want max_connections %d", got, parentConns)
	}
	if got := metricValue(m, `kmsproxy_inflight_requests{listener="parent"}`); got != 0 {
		t.Errorf("bodiless requests hold %v in-flight slots, want 0", got)
	}
	// The enclave's own apps are served, again and again, while the parent
	// holds its connections.
	for i := range 32 {
		if _, err := local.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
			t.Fatalf("local request %d while the parent stalls: %v", i, err)
		}
	}
	// About one goroutine per connection kmsproxyd accepted; none for the
	// 268 it did not.
	grown := runtime.NumGoroutine() - before
	if grown > 2*parentConns+16 {
		t.Errorf("%d goroutines more with %d stalled connections, want at most %d (max_connections %d)", grown, attack, 2*parentConns+16, parentConns)
	}
	t.Logf("%d stalled parent connections: kmsproxyd holds %d, %d goroutines more, local listener served 32 requests", attack, parentConns, grown)
}

// stallRequests opens n connections to addr, each sending a KMS request's
// headers and no body, and closes them when the test ends.
func stallRequests(t testing.TB, addr string, n int) {
	t.Helper()
	head := "POST / HTTP/1.1\r\nHost: kmsproxy.enclave\r\nX-Amz-Target: TrentService.GenerateRandom\r\n" +
		"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 20\r\n\r\n"
	for i := range n {
		d := net.Dialer{Timeout: 2 * time.Second}
		c, err := d.Dial("unix", strings.TrimPrefix(addr, "unix://"))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
}

// TestBodilessRequestsHoldNoSlot: requests whose body never comes do not
// take in-flight slots, so even on their own listener a complete request
// is served while they wait.
func TestBodilessRequestsHoldNoSlot(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{Policy: mustPolicy(t, `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    max_inflight: 4
    max_connections: 64
    control: [metrics]
`)})
	stallRequests(t, e.ParentAddr, 32)
	waitMetric(t, e, e.ParentAddr, `kmsproxy_open_connections{listener="parent"}`, 32)
	for i := range 8 {
		if _, err := e.Client(t, e.ParentAddr).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
			t.Fatalf("request %d beside 32 bodiless ones with max_inflight 4: %v", i, err)
		}
	}
}

// TestInflightBudgetsAreSeparate: the parent filling its in-flight budget
// with slow requests gets ThrottlingException beyond it, and the local
// listener keeps its own budget.
func TestInflightBudgetsAreSeparate(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{
		MaxInflight: 64,
		Policy: mustPolicy(t, `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    max_inflight: 2
  local:
    operations: ["*"]
    plaintext: true
`),
	})
	e.DevKMS.SetFaults(devkms.Faults{Latency: 300 * time.Millisecond})
	parent, local := e.Client(t, e.ParentAddr), e.Client(t, e.LocalAddr)
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := parent.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
			errs <- err
		}()
	}
	localErrs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := local.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
			localErrs <- err
		}()
	}
	throttled := 0
	for range n {
		switch err := <-errs; apiErrorCode(err) {
		case "":
		case "ThrottlingException":
			throttled++
			if !strings.Contains(err.Error(), "parent listener") {
				t.Errorf("throttling message does not name the listener: %v", err)
			}
		default:
			t.Errorf("parent: %v", err)
		}
	}
	for range 4 {
		if err := <-localErrs; err != nil {
			t.Errorf("local request while the parent is at its budget: %v", err)
		}
	}
	if throttled < n-2*2 {
		t.Errorf("%d of %d parent requests throttled with max_inflight 2", throttled, n)
	}
}

// TestMetricsShowOwnListener: /metrics on the parent listener shows only
// the parent's series; the local listener's operations and timings appear
// there only when the policy sets metrics_all_listeners.
func TestMetricsShowOwnListener(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("metrics_all_listeners=%v", all), func(t *testing.T) {
			e := enclavetest.Start(t, enclavetest.Options{Policy: mustPolicy(t, fmt.Sprintf(`listeners:
  parent:
    operations: ["*"]
    plaintext: true
    control: [metrics]
    metrics_all_listeners: %v
  local:
    operations: ["*"]
    plaintext: true
    control: [metrics]
`, all))})
			blob := encryptAsOperator(t, e, []byte("a local secret"), nil)
			if _, err := e.Client(t, e.LocalAddr).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Client(t, e.ParentAddr).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
				t.Fatal(err)
			}
			parent := getMetrics(t, e, e.ParentAddr)
			if !strings.Contains(parent, `kmsproxy_requests_total{listener="parent",operation="GenerateRandom",outcome="ok"} 1`) {
				t.Error("the parent does not see its own requests")
			}
			sawLocal := strings.Contains(parent, `listener="local"`)
			if sawLocal != all {
				t.Errorf("parent /metrics shows local series: %v, want %v", sawLocal, all)
			}
			for _, shared := range []string{"kmsproxy_upstream_connections", "go_goroutines", "kmsproxy_ready"} {
				if !strings.Contains(parent, shared) {
					t.Errorf("parent /metrics lacks %s, which belongs to no listener", shared)
				}
			}
			if l := getMetrics(t, e, e.LocalAddr); strings.Contains(l, `listener="parent"`) {
				t.Error("local /metrics shows parent series without metrics_all_listeners")
			}
		})
	}
}

// TestContextFreeOperationsRefused: a listener that requires an encryption
// context refuses the operations that carry none (GenerateRandom,
// DeriveSharedSecret, Sign, ...) unless without_encryption_context names
// them.
func TestContextFreeOperationsRefused(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{Policy: mustPolicy(t, `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    encryption_context: {tenant: "*"}
  local:
    operations: ["*"]
    plaintext: true
    encryption_context: {tenant: "*"}
    without_encryption_context: [GenerateRandom]
`)})
	ecdhKey := e.CreateKey(t, devkms.SeedKey{KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT"})
	parent, local := e.Client(t, e.ParentAddr), e.Client(t, e.LocalAddr)
	_, err := parent.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	wantCode(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), "without_encryption_context") {
		t.Errorf("refusal does not say how to allow it: %v", err)
	}
	_, err = parent.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &ecdhKey, KeyAgreementAlgorithm: "ECDH", PublicKey: []byte("x")})
	wantCode(t, err, "AccessDeniedException")
	_, err = parent.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &e.KeyID})
	wantCode(t, err, "AccessDeniedException")
	if _, err := local.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Errorf("local GenerateRandom, named in without_encryption_context: %v", err)
	}
	_, err = local.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &ecdhKey, KeyAgreementAlgorithm: "ECDH", PublicKey: []byte("x")})
	wantCode(t, err, "AccessDeniedException")
	// Operations that carry a context still work with it.
	tenant := map[string]string{"tenant": "acme"}
	if _, err := parent.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &e.KeyID, NumberOfBytes: aws.Int32(16), EncryptionContext: tenant}); err != nil {
		t.Errorf("GenerateDataKey with the context: %v", err)
	}
}

// requestAttestation posts to /v1/attestation on addr.
func requestAttestation(t testing.TB, e *enclavetest.Env, addr string, nonce, userData []byte) (int, map[string]string) {
	t.Helper()
	body, _ := json.Marshal(map[string][]byte{"nonce": nonce, "user_data": userData})
	hc, _ := e.HTTPClient(addr)
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://kmsproxy.enclave/v1/attestation", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestRequestedAttestationCannotSpeakForTheEnclave is the parent's attempt
// to make the enclave sign its words: whatever user_data it sends comes
// back inside kmsproxyd's requested-attestation structure naming the
// listener, so no such document reads as the enclave's own statement.
func TestRequestedAttestationCannotSpeakForTheEnclave(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	roots := x509.NewCertPool()
	roots.AddCert(e.CA.RootCertificate())
	claim := []byte(`{"enclave":"approves transfer 42"}`)
	for _, addr := range []string{e.ParentAddr, e.LocalAddr} {
		status, m := requestAttestation(t, e, addr, []byte("nonce"), claim)
		if status != 200 {
			t.Fatalf("%d %v", status, m)
		}
		raw, _ := base64.StdEncoding.DecodeString(m["document"])
		doc, err := attestation.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := attestation.Verify(doc, roots, time.Now()); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(doc.UserData, claim) {
			t.Fatal("the document carries the caller's bytes as its user_data")
		}
		req, err := attestation.ParseRequested(doc.UserData)
		if err != nil {
			t.Fatalf("user_data is not the requested-attestation structure: %v", err)
		}
		wantListener := map[string]string{e.ParentAddr: "parent", e.LocalAddr: "local"}[addr]
		if req.Listener != wantListener || !bytes.Equal(req.Data, claim) || req.Purpose != attestation.RequestedPurpose || doc.PublicKey != nil {
			t.Errorf("structure %+v, public key %d bytes; want listener %s, the caller's data, no public key", req, len(doc.PublicKey), wantListener)
		}
	}
	// The limit shrinks by the structure: at it, fine; past it, refused.
	if status, m := requestAttestation(t, e, e.LocalAddr, nil, make([]byte, attestation.MaxRequestedDataSize)); status != 200 {
		t.Errorf("user_data at the %d-byte limit: %d %v", attestation.MaxRequestedDataSize, status, m)
	}
	status, m := requestAttestation(t, e, e.LocalAddr, nil, make([]byte, attestation.MaxRequestedDataSize+1))
	if status != 400 || m["__type"] != "ValidationException" || !strings.Contains(m["message"], fmt.Sprint(attestation.MaxRequestedDataSize)) {
		t.Errorf("user_data one past the limit: %d %v", status, m)
	}
}

// TestRequestedAttestationRateLimit: each listener gets AttestationBurst
// documents at once, then ThrottlingException; the other listener keeps its
// own allowance.
func TestRequestedAttestationRateLimit(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	ok, throttled := 0, 0
	for range proxy.AttestationBurst + 5 {
		switch status, m := requestAttestation(t, e, e.ParentAddr, nil, nil); {
		case status == 200:
			ok++
		case status == 400 && m["__type"] == "ThrottlingException":
			throttled++
		default:
			t.Fatalf("%d %v", status, m)
		}
	}
	// Tokens come back every AttestationInterval: the loop may have earned
	// one or two.
	if ok < proxy.AttestationBurst || ok > proxy.AttestationBurst+2 || throttled == 0 {
		t.Errorf("%d documents, %d throttled; want about %d, then throttling", ok, throttled, proxy.AttestationBurst)
	}
	if status, m := requestAttestation(t, e, e.LocalAddr, nil, nil); status != 200 {
		t.Errorf("local listener after the parent's burst: %d %v", status, m)
	}
	if got := metricValue(getMetrics(t, e, e.ParentAddr), `kmsproxy_requested_attestations_total{listener="parent",outcome="ThrottlingException"}`); int(got) != throttled {
		t.Errorf("metric counts %v throttled, want %d", got, throttled)
	}
}
