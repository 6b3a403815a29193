package e2e

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/enclavekit/kmsproxy/test/internal/mission"
	"github.com/enclavekit/kmsproxy/test/internal/relay"
	"github.com/enclavekit/kmsproxy/test/internal/secretscan"
)

// The simulated account. The region is not us-east-1 so that a component
// falling back to a default region shows.
const (
	account     = "111122223333"
	region      = "eu-west-3"
	roleName    = "enclave-parent"
	roleARN     = "arn:aws:iam::" + account + ":role/" + roleName
	sessionARN  = "arn:aws:sts::" + account + ":assumed-role/" + roleName + "/i-0e2e0e2e0e2e0e2e0"
	operatorARN = "arn:aws:iam::" + account + ":user/operator"

	// keyID is a symmetric key bound to the release image, also named by
	// alias; agreementKeyID an ECC_NIST_P256 KEY_AGREEMENT key under the
	// same key policy.
	keyID          = "1b5e4c1e-7d7a-4c2b-9a57-2f0d1c9e8a01"
	alias          = "alias/app-e2e"
	agreementKeyID = "2c6f5d2f-8e8b-4d3c-8b68-3a1e2d0f9b12"

	// imageLabel names the simulated release image; its PCRs derive from it.
	imageLabel = "kmsproxy e2e release image"

	// readyTimeout bounds waiting for a process to serve.
	readyTimeout = 30 * time.Second
	// ctlTimeout bounds one kmsproxyctl or enclaveapp run.
	ctlTimeout = time.Minute
)

// Access keys known to devkms. The operator encrypts and administers; the
// role is what kmsproxyd signs with (pushed, from the environment, or the
// values ec2-metadata-mock serves).
var (
	operator = awsCreds{"AKIAE2EOPERATOR00001", "e2e-operator-secret-access-key-000000000", ""}
	role     = awsCreds{"ASIAE2EENCLAVEROLE01", "e2e-enclave-role-secret-access-key-00000", "e2e-enclave-role-session-token-for-tests-only"}
)

// bigTokenRole is the role with a session token of exactly
// credentials.MaxSessionToken bytes, the largest a push may carry.
var bigTokenRole = awsCreds{"ASIAE2EBIGTOKENROLE1", "e2e-big-token-role-secret-access-key-000", strings.Repeat("T", credentials.MaxSessionToken)}

type awsCreds struct{ accessKeyID, secret, token string }

func (c awsCreds) env() []string {
	env := []string{"AWS_ACCESS_KEY_ID=" + c.accessKeyID, "AWS_SECRET_ACCESS_KEY=" + c.secret}
	if c.token != "" {
		env = append(env, "AWS_SESSION_TOKEN="+c.token)
	}
	return env
}

func (c awsCreds) provider() aws.CredentialsProvider {
	return awscreds.NewStaticCredentialsProvider(c.accessKeyID, c.secret, c.token)
}

// stackOptions configures startStack.
type stackOptions struct {
	// netns runs kmsproxyd in its own network namespace with only lo.
	netns bool
	// credentials is kmsproxyd's --credentials: "env" (the default),
	// "push" or "imds" (ec2-metadata-mock behind a second socat).
	credentials string
	// kmsproxyd flags; zero values leave kmsproxyd's defaults.
	upstreamConns  int
	requestTimeout time.Duration
	// policy is the text of kmsproxyd's --policy file; "" runs it with the
	// built-in default.
	policy string
}

// socatLinger makes socat (the vsock-proxy stand-in) close both sides as
// soon as either reaches EOF, as vsock-proxy does: its worker leaves the
// copy loop when a read returns 0 and drops both sockets
// (aws-nitro-enclaves-cli, vsock_proxy/src/proxy.rs). socat's default
// (-t 0.5) would keep one of its max-children busy half a second after
// kmsproxyd abandoned a connection.
const socatLinger = "-t0"

// defaultUpstreamConns is kmsproxyd's --upstream-conns default (the
// vsock-proxy's 4 workers by default) and socat's max-children here.
const defaultUpstreamConns = 4

// stack is kmsproxy's deployment as processes on this machine:
//
//	parent app ─unix─▶ kmsproxyd ─unix─▶ socat (vsock-proxy) ─tcp─▶ recording relay ─tcp─▶ devkms (TLS)
//	                   (netns: lo only)  ─unix─▶ socat (IMDS vsock-proxy) ─tcp─▶ ec2-metadata-mock
type stack struct {
	opts stackOptions
	bin  *binaries
	scan *secretscan.Scanner
	dir  string
	ns   string // network namespace, "" without opts.netns

	devkms     *process
	devkmsArgv []string
	kmsPort    int
	caFile     string

	relay     *relay.Relay // between the KMS socat and devkms
	socat     *process     // the KMS vsock-proxy stand-in
	socatArgv []string
	kmsSock   string

	mock      *process // ec2-metadata-mock
	imdsSocat *process
	imdsSock  string

	// role is what kmsproxyd signs with.
	role awsCreds

	kmsproxyd  *process
	parentSock string
	parentAddr string // unix:///.../parent.sock
	localAddr  string // tcp://127.0.0.1:PORT (8000 inside the namespace)
}

// startStack starts devkms, the relays, and kmsproxyd, and waits until
// kmsproxyd serves (with push credentials: until it answers /healthz;
// it is ready only after pushCredentials).
func startStack(t testing.TB, sc *secretscan.Scanner, opts stackOptions) *stack {
	t.Helper()
	if opts.credentials == "" {
		opts.credentials = "env"
	}
	s := &stack{opts: opts, scan: sc, role: role}
	socat := harness.RequireTool(t, "socat")
	if opts.netns {
		s.ns = newNetns(t)
	}
	s.bin = build(t)
	s.dir = shortTempDir(t)
	sc.AddSecret("operator secret access key", []byte(operator.secret))

	s.ctl(t, nil, "dev", "ca", "--out", s.path("simca"))
	if err := writeMeasurements(s.path("release.json"), imageLabel); err != nil {
		t.Fatal(err)
	}
	pol := s.ctl(t, nil, "policy", "generate", "--measurements", s.path("release.json"), "--role", roleARN, "--region", region)
	if err := os.WriteFile(s.path("key-policy.json"), pol, 0o600); err != nil {
		t.Fatal(err)
	}
	if opts.credentials == "imds" {
		s.startIMDS(t, socat)
	}
	sc.AddSecret("role secret access key", []byte(s.role.secret))
	sc.AddSecret("role session token", []byte(s.role.token))
	s.writeDevKMSFiles(t)
	if opts.policy != "" {
		if err := os.WriteFile(s.path("policy.yaml"), []byte(opts.policy), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.startDevKMS(t)

	// The parent's path to KMS: socat, as vsock-proxy with its 4 workers,
	// then the recording relay in front of devkms.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.relay = relay.New(ln, relay.To("tcp", fmt.Sprintf("127.0.0.1:%d", s.kmsPort)))
	t.Cleanup(func() { s.relay.Close() })
	s.kmsSock = s.path("kms.sock")
	s.socatArgv = []string{socat, socatLinger, "UNIX-LISTEN:" + s.kmsSock + ",unlink-early,fork,max-children=" + strconv.Itoa(defaultUpstreamConns), "TCP:" + ln.Addr().String()}
	s.startSocat(t)

	s.startKmsproxyd(t)
	return s
}

func (s *stack) path(rel string) string { return filepath.Join(s.dir, rel) }

// ctl runs kmsproxyctl and returns its stdout.
func (s *stack) ctl(t testing.TB, env []string, args ...string) []byte {
	t.Helper()
	out, err := run(t, s.scan, "kmsproxyctl "+args[0], harness.CleanEnv(env...), nil, ctlTimeout, append([]string{s.bin.kmsproxyctl}, args...)...)
	if err != nil {
		t.Fatalf("kmsproxyctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// writeMeasurements writes what `nitro-cli build-enclave` prints for an
// image, with PCRs derived from a label.
func writeMeasurements(path, label string) error {
	b, err := nsmsim.MarshalMeasurements(nsmsim.ImagePCRs(label))
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (s *stack) writeDevKMSFiles(t testing.TB) {
	t.Helper()
	seed := fmt.Sprintf(`keys:
  - id: %s
    description: e2e data key, bound to the release image
    policy_file: key-policy.json
    aliases: [%s]
  - id: %s
    description: e2e key agreement key, bound to the release image
    key_spec: ECC_NIST_P256
    key_usage: KEY_AGREEMENT
    policy_file: key-policy.json
`, keyID, alias, agreementKeyID)
	creds := fmt.Sprintf(`%s:
  secret_access_key: %q
  principal: %s
%s:
  secret_access_key: %q
  session_token: %q
  principal: %s
%s:
  secret_access_key: %q
  session_token: %q
  principal: %s
`, operator.accessKeyID, operator.secret, operatorARN, s.role.accessKeyID, s.role.secret, s.role.token, sessionARN,
		bigTokenRole.accessKeyID, bigTokenRole.secret, bigTokenRole.token, sessionARN)
	for name, body := range map[string]string{"seed.yaml": seed, "credentials.yaml": creds} {
		if err := os.WriteFile(s.path(name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// startDevKMS starts devkms with TLS, SigV4, the seed and a state file.
func (s *stack) startDevKMS(t testing.TB) {
	t.Helper()
	s.kmsPort = freePort(t)
	s.caFile = s.path("tls/ca.pem")
	s.devkmsArgv = []string{s.bin.devkms,
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", s.kmsPort),
		"--tls-self-signed", s.path("tls"),
		"--trust-root", s.path("simca/root.pem"),
		"--credentials", s.path("credentials.yaml"),
		"--seed", s.path("seed.yaml"),
		"--state", s.path("devkms-state.json"),
		"--region", region, "--account-id", account,
		"--log-level", "debug"}
	s.restartDevKMS(t)
}

// restartDevKMS starts devkms (again) with the same flags, port and state.
func (s *stack) restartDevKMS(t testing.TB) {
	t.Helper()
	s.devkms = start(t, s.scan, "devkms", harness.CleanEnv(), s.devkmsArgv...)
	if err := poll(readyTimeout, func() error {
		if s.devkms.exited() {
			return errors.New("devkms exited")
		}
		return s.devkmsHealthy()
	}); err != nil {
		t.Fatalf("devkms did not start: %v\n%s", err, s.devkms.log)
	}
}

func (s *stack) devkmsHealthy() error {
	hc, err := s.devkmsHTTP()
	if err != nil {
		return err
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(fmt.Sprintf("https://localhost:%d/devkms/healthz", s.kmsPort))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devkms healthz: %s", resp.Status)
	}
	return nil
}

// devkmsHTTP is an HTTP client that trusts devkms's CA.
func (s *stack) devkmsHTTP() (*http.Client, error) {
	pem, err := os.ReadFile(s.caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("devkms's ca.pem holds no certificate")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: sdkhttp.BufferBodies(&http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}, 0)}, nil
}

// operatorKMS is a KMS client to devkms directly, signing as the operator
// (who may encrypt and administer, but not decrypt).
func (s *stack) operatorKMS(t testing.TB) *kms.Client {
	t.Helper()
	hc, err := s.devkmsHTTP()
	if err != nil {
		t.Fatal(err)
	}
	return kms.New(kms.Options{
		Region:       region,
		BaseEndpoint: aws.String(fmt.Sprintf("https://localhost:%d", s.kmsPort)),
		Credentials:  operator.provider(),
		HTTPClient:   hc,
		Retryer:      aws.NopRetryer{},
	})
}

// startSocat starts (or restarts) the KMS vsock-proxy stand-in.
func (s *stack) startSocat(t testing.TB) {
	t.Helper()
	s.socat = start(t, s.scan, "socat (kms)", harness.CleanEnv(), s.socatArgv...)
	waitSocket(t, s.socat, s.kmsSock)
}

// waitSocket waits until p listens on the unix socket at path.
func waitSocket(t testing.TB, p *process, path string) {
	t.Helper()
	if err := poll(readyTimeout, func() error {
		if p.exited() {
			return fmt.Errorf("%s exited", p.name)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s is not a socket", path)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s did not listen on %s: %v\n%s", p.name, path, err, p.log)
	}
}

// kmsproxydArgv is the command line of a kmsproxyd of the stack with the
// given listeners, --kms-dial and --credentials.
func (s *stack) kmsproxydArgv(parentSock, local, kmsDial, creds string) []string {
	args := []string{s.bin.kmsproxyd,
		"--nsm", "sim", "--sim-ca", s.path("simca"), "--sim-pcrs", s.path("release.json"),
		"--kms-endpoint", fmt.Sprintf("https://localhost:%d", s.kmsPort),
		"--kms-dial", kmsDial,
		"--kms-ca", s.caFile,
		"--credentials", creds,
		"--listen-parent", "unix://" + parentSock,
		"--listen-local", local,
		"--log-format", "json", "--log-level", "debug",
	}
	switch creds {
	case "imds":
		// The region comes from IMDS, as on EC2.
		args = append(args, "--imds-dial", "unix://"+s.imdsSock)
	default:
		args = append(args, "--region", region)
	}
	if s.opts.upstreamConns > 0 {
		args = append(args, "--upstream-conns", strconv.Itoa(s.opts.upstreamConns))
	}
	if s.opts.requestTimeout > 0 {
		args = append(args, "--request-timeout", s.opts.requestTimeout.String())
	}
	if s.opts.policy != "" {
		args = append(args, "--policy", s.path("policy.yaml"))
	}
	if s.ns != "" {
		return append([]string{"ip", "netns", "exec", s.ns}, args...)
	}
	return args
}

func (s *stack) kmsproxydEnv() []string {
	if s.opts.credentials == "env" {
		return harness.CleanEnv(s.role.env()...)
	}
	return harness.CleanEnv()
}

func (s *stack) startKmsproxyd(t testing.TB) {
	t.Helper()
	s.parentSock = s.path("parent.sock")
	s.parentAddr = "unix://" + s.parentSock
	if s.ns != "" {
		s.localAddr = "tcp://127.0.0.1:8000" // kmsproxyd's default, in its own namespace
	} else {
		s.localAddr = fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
	}
	s.kmsproxyd = start(t, s.scan, "kmsproxyd", s.kmsproxydEnv(), s.kmsproxydArgv(s.parentSock, s.localAddr, "unix://"+s.kmsSock, s.opts.credentials)...)
	path := "/readyz"
	if s.opts.credentials == "push" {
		path = "/healthz" // ready only once credentials are pushed
	}
	waitHTTP(t, s.kmsproxyd, s.parentAddr, path)
}

// waitHTTP waits until the kmsproxyd p (or a bridge) answers GET path with
// 200 at addr.
func waitHTTP(t testing.TB, p *process, addr, path string) {
	t.Helper()
	hc, err := client.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	hc.Timeout = 5 * time.Second
	if err := poll(readyTimeout, func() error {
		if p.exited() {
			return fmt.Errorf("%s exited with status %d", p.name, p.cmd.ProcessState.ExitCode())
		}
		resp, err := hc.Get(client.Endpoint + path)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", path, resp.Status, body)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s did not answer %s: %v\n%s", p.name, path, err, p.log)
	}
}

// pushCredentials runs `kmsproxyctl credentials push` from the parent with
// the role's credentials in its environment, and waits for readiness.
func (s *stack) pushCredentials(t testing.TB) {
	t.Helper()
	out := s.ctl(t, s.role.env(), "credentials", "push", "--enclave", s.parentAddr)
	for _, f := range s.scan.ScanData("kmsproxyctl credentials push (stdout)", out) {
		t.Errorf("leak: %s", f)
	}
	waitHTTP(t, s.kmsproxyd, s.parentAddr, "/readyz")
}

// parentClient is the parent app's KMS client: aws-sdk-go-v2 through the
// client package, over the parent unix socket, without retries so every
// answer kmsproxyd gives is seen.
func (s *stack) parentClient(t testing.TB, retries bool) *kms.Client {
	t.Helper()
	c, err := client.New(context.Background(), s.parentAddr, func(o *kms.Options) {
		if !retries {
			o.Retryer = aws.NopRetryer{}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// missionInput encrypts a fresh secret as the operator and prepares
// DeriveSharedSecret's peer key; it returns the input and what a correct
// result holds.
func (s *stack) missionInput(t testing.TB) (mission.Input, mission.Want) {
	t.Helper()
	ctx := context.Background()
	op := s.operatorKMS(t)
	secret := make([]byte, 48)
	rand.Read(secret)
	s.scan.AddSecret("mission plaintext", secret)
	ec := map[string]string{"tenant": "acme"}
	enc, err := op.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: secret, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("operator Encrypt: %v", err)
	}
	pk, err := op.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(agreementKeyID)})
	if err != nil {
		t.Fatalf("operator GetPublicKey: %v", err)
	}
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	peerSPKI, err := x509.MarshalPKIXPublicKey(peer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	shared, err := mission.SharedSecret(peer, pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	in := mission.Input{KeyID: alias, Ciphertext: enc.CiphertextBlob, EncryptionContext: ec,
		AgreementKeyID: agreementKeyID, PeerPublicKey: peerSPKI, RandomBytes: 32}
	return in, mission.Want{Plaintext: secret, SharedSecret: shared, RandomBytes: 32}
}

// addResultSecrets registers every secret a mission obtained.
func addResultSecrets(sc *secretscan.Scanner, who string, r *mission.Result) {
	for name, v := range r.Secrets() {
		sc.AddSecret(who+" "+name, v)
	}
}

// metric reads one gauge or counter from kmsproxyd's /metrics.
func metric(hc *http.Client, name string) (float64, error) {
	resp, err := hc.Get(client.Endpoint + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("metric %s not in /metrics", name)
}

// connSampler samples kmsproxyd's kmsproxy_upstream_connections every
// 25ms until stopped, and keeps the largest value.
type connSampler struct {
	max     atomic.Int64
	samples atomic.Int64
	errs    atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

func sampleUpstreamConns(t testing.TB, addr string) *connSampler {
	t.Helper()
	hc, err := client.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	hc.Timeout = 5 * time.Second
	cs := &connSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(cs.done)
		defer hc.CloseIdleConnections()
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		for range 40 * 600 { // at most 10 minutes
			v, err := metric(hc, "kmsproxy_upstream_connections")
			if err != nil {
				cs.errs.Add(1)
			} else {
				cs.samples.Add(1)
				for {
					cur := cs.max.Load()
					if int64(v) <= cur || cs.max.CompareAndSwap(cur, int64(v)) {
						break
					}
				}
			}
			select {
			case <-cs.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(cs.finish)
	return cs
}

// finish stops sampling; safe to call more than once.
func (cs *connSampler) finish() {
	select {
	case <-cs.stop:
	default:
		close(cs.stop)
	}
	<-cs.done
}

// clientFor is a parent app's KMS client for the kmsproxyd (or bridge) at
// addr, without retries, so every answer kmsproxyd gives is seen.
func clientFor(addr string) (*kms.Client, error) {
	return client.New(context.Background(), addr, func(o *kms.Options) { o.Retryer = aws.NopRetryer{} })
}

// keyARN is the ARN of the stack's symmetric key.
func (s *stack) keyARN() string {
	return "arn:aws:kms:" + region + ":" + account + ":key/" + keyID
}

// checkControlEndpoints reads kmsproxyd's /metrics, /readyz and /v1/info at
// addr and fails t if any secret sc knows appears in them: secrets never
// reach metrics or the effective configuration either.
func checkControlEndpoints(t testing.TB, sc *secretscan.Scanner, addr string) {
	t.Helper()
	hc, err := client.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	hc.Timeout = 10 * time.Second
	for _, path := range []string{"/metrics", "/readyz", "/v1/info"} {
		resp, err := hc.Get(client.Endpoint + path)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %s, %d bytes", path, resp.Status, len(body))
		}
		for _, f := range sc.ScanData("GET "+path, body) {
			t.Errorf("leak: %s", f)
		}
	}
}
