package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/test/internal/secretscan"
)

// devkms's injected errors (internal/devkms/faults.go). kmsproxyd must
// pass KMS's errors through with type and message unchanged.
const (
	kmsThrottleMessage = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
	kmsFaultMessage    = "devkms injected an internal error (fault injection)"
)

// inProcess is kmsproxyd's core, devkms and the NSM simulator in the test
// process (internal/enclavetest), with every log captured for the scan.
type inProcess struct {
	env     *enclavetest.Env
	kms     *kms.Client // the parent app's, without retries
	secret  []byte
	ct      []byte
	timeout time.Duration
}

func startInProcess(t testing.TB, sc *secretscan.Scanner, opts enclavetest.Options) *inProcess {
	t.Helper()
	devLog := sc.Log("devkms (in-process)")
	opts.DevKMS = append(opts.DevKMS, devkmstest.WithConfig(func(c *devkms.Config) {
		c.Logger = slog.New(slog.NewTextHandler(devLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}))
	opts.LogLevel = slog.LevelDebug
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 2 * time.Second
	}
	env := enclavetest.Start(t, opts)
	sc.AddLog("kmsproxyd (in-process)", func() []byte { return []byte(env.Logs.String()) })
	for name, v := range map[string]string{
		"role secret access key": enclavetest.RoleSecretKey, "role session token": enclavetest.RoleToken,
		"operator secret access key": enclavetest.OperatorSecret,
	} {
		sc.AddSecret(name, []byte(v))
	}
	p := &inProcess{env: env, timeout: opts.RequestTimeout, secret: make([]byte, 32)}
	rand.Read(p.secret)
	sc.AddSecret("fault test plaintext", p.secret)
	out, err := env.Operator(t).Encrypt(context.Background(), &kms.EncryptInput{KeyId: aws.String(env.KeyID), Plaintext: p.secret})
	if err != nil {
		t.Fatalf("operator Encrypt: %v", err)
	}
	p.ct = out.CiphertextBlob
	if p.kms, err = clientFor(env.ParentAddr); err != nil {
		t.Fatal(err)
	}
	return p
}

// decrypt is the load's request: an attested Decrypt whose plaintext is
// checked.
func (p *inProcess) decrypt(ctx context.Context) error {
	return decryptWith(ctx, p.kms, p.ct, p.secret, nil)
}

// decryptWith decrypts ct with c and checks that the answer is want.
func decryptWith(ctx context.Context, c *kms.Client, ct, want []byte, ec map[string]string) error {
	out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct, EncryptionContext: ec})
	if err != nil {
		return err
	}
	if !bytes.Equal(out.Plaintext, want) {
		return &wrongAnswer{"Decrypt returned other bytes than the plaintext"}
	}
	return nil
}

func (p *inProcess) budget() time.Duration { return p.timeout + slack }

// checkConns fails t if kmsproxyd ever had more than max connections to KMS.
func (p *inProcess) checkConns(t testing.TB, max int) {
	t.Helper()
	seen := p.env.Upstream.MaxConnsSeen()
	t.Logf("upstream connections: at most %d at once (--upstream-conns %d)", seen, max)
	if seen > max {
		t.Errorf("kmsproxyd opened %d connections to KMS at once, over --upstream-conns %d", seen, max)
	}
}

// TestFaultSlowKMS: KMS slower than usual still answers right; KMS slower
// than --request-timeout gets DependencyTimeoutException naming the
// upstream step, in time; service resumes when KMS is fast again.
func TestFaultSlowKMS(t *testing.T) {
	sc := newScan(t)
	p := startInProcess(t, sc, enclavetest.Options{RequestTimeout: time.Second})

	p.env.DevKMS.SetFaults(devkms.Faults{Latency: 200 * time.Millisecond})
	load(t, "latency 200ms (below the 1s request timeout)", 4, 1500*time.Millisecond, p.budget(), p.decrypt, noErrors)

	p.env.DevKMS.SetFaults(devkms.Faults{Latency: 3 * time.Second})
	ta := load(t, "latency 3s (over the 1s request timeout)", 4, 2500*time.Millisecond, p.budget(), p.decrypt,
		expectError("DependencyTimeoutException", "upstream:"))
	if ta.errors("DependencyTimeoutException") == 0 || ta.oks() > 0 {
		t.Errorf("with KMS slower than the request timeout: %s; want only DependencyTimeoutException", ta)
	}

	p.env.DevKMS.SetFaults(devkms.Faults{})
	resume(t, "KMS fast again", p.budget(), p.decrypt)
	p.checkConns(t, defaultUpstreamConns)
}

// partialThenTotal makes KMS fail 30 % of its calls, then all of them, in
// the way faults(rate) describes: with 30 %, kmsproxyd's retries within the
// request timeout make most requests succeed and what still fails is
// KMS's error, unchanged (want); with 100 %, every request fails with it
// (or runs out of time). The fault stays on.
func partialThenTotal(t *testing.T, p *inProcess, what string, faults func(rate float64) devkms.Faults, want expectation, wantType string) {
	t.Helper()
	p.env.DevKMS.SetFaults(faults(0.3))
	ta := load(t, what+" on 30%", 4, 2*time.Second, p.budget(), p.decrypt, want)
	if ta.oks() < ta.total()/2 {
		t.Errorf("with %s on 30%% of KMS calls and retries, only %d of %d requests succeeded", what, ta.oks(), ta.total())
	}

	p.env.DevKMS.SetFaults(faults(1))
	ta = load(t, what+" on 100%", 4, 2*time.Second, p.budget(), p.decrypt,
		anyOf(want, expectError("DependencyTimeoutException", "upstream:")))
	if ta.oks() > 0 || ta.errors(wantType) == 0 {
		t.Errorf("with %s on every KMS call: %s; want %s", what, ta, wantType)
	}
}

// TestFaultThrottling: KMS throttles 30% of calls; kmsproxyd retries with
// back-off within the request timeout, and what still fails reaches the
// caller as KMS's ThrottlingException, unchanged. With every call
// throttled, every caller gets it.
func TestFaultThrottling(t *testing.T) {
	sc := newScan(t)
	p := startInProcess(t, sc, enclavetest.Options{RequestTimeout: 5 * time.Second})
	partialThenTotal(t, p, "throttling", func(r float64) devkms.Faults { return devkms.Faults{ThrottleRate: r} },
		expectError("ThrottlingException", kmsThrottleMessage), "ThrottlingException")

	p.env.DevKMS.SetFaults(devkms.Faults{})
	resume(t, "throttling over", p.budget(), p.decrypt)
	p.checkConns(t, defaultUpstreamConns)
}

// TestFaultKMSErrors: KMS fails 30% (then all) of its calls with a 5xx
// KMSInternalException; kmsproxyd retries, and passes what still fails
// through with KMS's type, message and status.
func TestFaultKMSErrors(t *testing.T) {
	sc := newScan(t)
	p := startInProcess(t, sc, enclavetest.Options{RequestTimeout: 5 * time.Second})
	partialThenTotal(t, p, "5xx", func(r float64) devkms.Faults { return devkms.Faults{ErrorRate: r} },
		expectError("KMSInternalException", kmsFaultMessage), "KMSInternalException")
	// The status travels too: the SDK sees a server fault.
	_, err := p.kms.Decrypt(context.Background(), &kms.DecryptInput{CiphertextBlob: p.ct})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorFault() != smithy.FaultServer {
		t.Errorf("Decrypt while KMS fails: %v; want a server fault (5xx)", err)
	}

	p.env.DevKMS.SetFaults(devkms.Faults{})
	resume(t, "KMS healthy again", p.budget(), p.decrypt)
	p.checkConns(t, defaultUpstreamConns)
}

// failingNSM wraps the simulator; while fail is set, every attestation
// fails as a broken /dev/nsm would.
type failingNSM struct {
	inner attestation.Attester
	fail  atomic.Bool
	calls atomic.Int64
}

var _ attestation.Attester = (*failingNSM)(nil)

func (f *failingNSM) Attest(ctx context.Context, req attestation.Request) ([]byte, error) {
	f.calls.Add(1)
	if f.fail.Load() {
		return nil, errors.New("nsm: simulated device failure (ioctl: input/output error)")
	}
	return f.inner.Attest(ctx, req)
}

// TestFaultNSM: the NSM fails. With a fresh document per request, attested
// calls fail with KMSInternalException naming the attestation step while
// calls that need no attestation go on; with documents reused, the NSM is
// off the request path and requests go on. Service resumes when the NSM
// works again.
func TestFaultNSM(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		name := map[bool]string{false: "fresh document per request", true: "documents reused"}[reuse]
		t.Run(name, func(t *testing.T) {
			sc := newScan(t)
			nsm := &failingNSM{}
			opts := enclavetest.Options{Attester: func(a attestation.Attester) attestation.Attester { nsm.inner = a; return nsm }}
			if !reuse {
				opts.AttestationTTL = -1 // --attestation-ttl 0
			}
			p := startInProcess(t, sc, opts)
			load(t, "NSM working", 2, 500*time.Millisecond, p.budget(), p.decrypt, noErrors)

			nsm.fail.Store(true)
			before := nsm.calls.Load()
			if reuse {
				load(t, "NSM failing, documents reused", 4, time.Second, p.budget(), p.decrypt, noErrors)
			} else {
				ta := load(t, "NSM failing", 4, time.Second, p.budget(), p.decrypt,
					expectError("KMSInternalException", "attestation:"))
				if ta.oks() > 0 {
					t.Errorf("%d attested requests succeeded without an attestation document", ta.oks())
				}
				if nsm.calls.Load() == before {
					t.Error("the NSM was not asked")
				}
				// Encrypt needs no attestation and goes on.
				if _, err := p.kms.Encrypt(context.Background(), &kms.EncryptInput{KeyId: aws.String(p.env.KeyID), Plaintext: []byte("no attestation needed")}); err != nil {
					t.Errorf("Encrypt while the NSM fails: %v", err)
				}
			}
			// A remote verifier's fresh document cannot be had.
			_, err := client.Attestation(context.Background(), p.env.ParentAddr, client.AttestationRequest{Nonce: []byte("nonce-0123456789")})
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != "KMSInternalException" || !strings.HasPrefix(ce.Message, "attestation:") {
				t.Errorf("POST /v1/attestation while the NSM fails: %v; want KMSInternalException naming the attestation step", err)
			}

			nsm.fail.Store(false)
			resume(t, "NSM working again", p.budget(), p.decrypt)
			if _, err := client.Attestation(context.Background(), p.env.ParentAddr, client.AttestationRequest{Nonce: []byte("nonce-0123456789")}); err != nil {
				t.Errorf("POST /v1/attestation after the NSM recovered: %v", err)
			}
		})
	}
}

// pushCreds pushes the role's credentials expiring at exp to kmsproxyd's
// PUT /v1/credentials, as kmsproxyctl credentials push does.
func pushCreds(t testing.TB, addr string, exp time.Time) {
	t.Helper()
	body, err := credentials.EncodePush(enclavetest.RoleCredentials(exp))
	if err != nil {
		t.Fatal(err)
	}
	hc, err := client.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPut, client.Endpoint+"/v1/credentials", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %s", resp.Status)
	}
}

// TestFaultCredentialsExpire: pushed credentials expire. Requests then get
// KMSInternalException naming the credentials step (kmsproxyd does not
// sign with credentials about to expire); a fresh push resumes service.
func TestFaultCredentialsExpire(t *testing.T) {
	sc := newScan(t)
	p := startInProcess(t, sc, enclavetest.Options{PushCredentials: true})
	// kmsproxyd refuses credentials within ExpiryMargin of expiry: these
	// are usable for 4 s.
	pushCreds(t, p.env.ParentAddr, time.Now().Add(credentials.ExpiryMargin+4*time.Second))
	load(t, "fresh credentials", 2, 500*time.Millisecond, p.budget(), p.decrypt, noErrors)

	if err := poll(10*time.Second, func() error {
		if p.env.Push.Status().Ready {
			return errors.New("credentials still ready")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ta := load(t, "credentials expired", 4, time.Second, p.budget(), p.decrypt,
		expectError("KMSInternalException", "credentials:"))
	if ta.oks() > 0 {
		t.Errorf("%d requests succeeded with expired credentials", ta.oks())
	}

	pushCreds(t, p.env.ParentAddr, time.Now().Add(time.Hour))
	resume(t, "credentials pushed again", p.budget(), p.decrypt)
}

// TestFaultKeyRotationUnderLoad rotates the recipient key every second
// while requests keep coming: none may fail, since a rotated-out key stays
// usable until its requests end.
func TestFaultKeyRotationUnderLoad(t *testing.T) {
	sc := newScan(t)
	p := startInProcess(t, sc, enclavetest.Options{KeyRotation: time.Second})
	var (
		mu  sync.Mutex
		fps = map[string]bool{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 1000 {
			mu.Lock()
			fps[p.env.Recipient.Status().KeyFingerprint] = true
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	load(t, "rotation every second", 4, 4500*time.Millisecond, p.budget(), p.decrypt, noErrors)
	close(stop)
	wg.Wait()
	// Rotation waits for the pre-generated next key, which can take more
	// than a second on a busy machine under the race detector: at least
	// one rotation must have happened under load.
	if len(fps) < 2 {
		t.Errorf("%d recipient keys seen in 4.5s with rotation every second, want at least 2", len(fps))
	} else {
		t.Logf("%d recipient keys served the load", len(fps))
	}
	p.checkConns(t, defaultUpstreamConns)
}

// TestFaultOverload sends more concurrent requests than --max-inflight
// while KMS is slow: the excess gets ThrottlingException at once (so SDKs
// back off and retry), the rest their answers.
func TestFaultOverload(t *testing.T) {
	sc := newScan(t)
	p := startInProcess(t, sc, enclavetest.Options{MaxInflight: 2})
	p.env.DevKMS.SetFaults(devkms.Faults{Latency: 300 * time.Millisecond})
	ta := load(t, "8 callers, --max-inflight 2", 8, 1500*time.Millisecond, p.budget(), p.decrypt,
		expectError("ThrottlingException", "maximum of 2 concurrent requests"))
	if ta.oks() == 0 || ta.errors("ThrottlingException") == 0 {
		t.Errorf("over --max-inflight: %s; want both answers and ThrottlingException", ta)
	}
	p.env.DevKMS.SetFaults(devkms.Faults{})
	resume(t, "load over", p.budget(), p.decrypt)
	p.checkConns(t, defaultUpstreamConns)
}
