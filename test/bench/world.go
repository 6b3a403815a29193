package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// The simulated account: an operator who encrypts, and the enclave role
// whose key policy admits it only with an attestation of the benchmark's
// image (as in test/demo).
const (
	account     = "111122223333"
	region      = "us-east-1"
	roleARN     = "arn:aws:iam::" + account + ":role/enclave-parent"
	sessionARN  = "arn:aws:sts::" + account + ":assumed-role/enclave-parent/i-0bench"
	operatorARN = "arn:aws:iam::" + account + ":user/operator"
	keyID       = "6b656e63-6c61-4e76-a562-656e63686d6b"

	operatorKey    = "AKIABENCHOPERATOR001"
	operatorSecret = "bench-operator-secret-00000000000000000"
	roleKey        = "ASIABENCHENCLAVEROLE"
	roleSecret     = "bench-role-secret-0000000000000000000000"
	roleToken      = "bench-role-session-token"
	imageLabel     = "kmsproxy bench image"
)

// plaintextSize is the secret every benchmark request decrypts: a 32-byte
// data key, the usual thing an enclave unwraps with KMS.
const plaintextSize = 32

// world is one benchmark's files and processes: the binaries, the NSM
// simulator CA, devkms, and the kmsproxyd processes started so far.
type world struct {
	ctx   context.Context
	dir   string
	bin   string
	procs []*proc

	ca      *nsmsim.CA
	pcrs    map[int][]byte
	kmsSock string // devkms's unix socket
	kmsURL  string // the endpoint name: TLS server name and SigV4 host
	caPEM   []byte // devkms's TLS CA
	devkms  *proc

	plaintext []byte
	blob      []byte // CiphertextBlob of plaintext under keyID

	progress io.Writer
}

// proc is a process the benchmark started.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	started time.Time
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func newWorld(ctx context.Context, progress io.Writer, keep bool) (*world, error) {
	dir, err := os.MkdirTemp("", "kmsproxy-bench-")
	if err != nil {
		return nil, err
	}
	w := &world{ctx: ctx, dir: dir, bin: filepath.Join(dir, "bin"), progress: progress}
	if keep {
		w.say("working directory %s (kept)", dir)
	}
	return w, nil
}

func (w *world) say(format string, args ...any) {
	fmt.Fprintf(w.progress, "bench: "+format+"\n", args...)
}

func (w *world) path(rel string) string { return filepath.Join(w.dir, rel) }
func (w *world) exe(name string) string { return filepath.Join(w.bin, name) }

// buildAll compiles devkms and the kmstool stand-in once, and kmsproxyd
// (with the NSM simulator), the floor daemon and rsatime for each build,
// into bin/<build>/, without the race detector or coverage.
func (w *world) buildAll(builds []build) error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	if err := compile(w.ctx, root, nil, "-o", w.bin+string(filepath.Separator), "./cmd/devkms", "./test/bench/kmstool"); err != nil {
		return err
	}
	for _, b := range builds {
		args := append([]string{"-tags", b.tags}, b.flags...)
		args = append(args, "-o", b.dir(w.bin)+string(filepath.Separator), "./cmd/kmsproxyd", "./test/bench/floor", "./test/bench/rsatime")
		if err := compile(w.ctx, root, b.env, args...); err != nil {
			return err
		}
	}
	return nil
}

// binary is the path of a program of a build.
func (w *world) binary(b build, name string) string { return filepath.Join(b.dir(w.bin), name) }

// setup writes the simulator CA, the image's measurements, the key policy
// and devkms's configuration, starts devkms, and encrypts the benchmark's
// secret as the operator.
func (w *world) setup() error {
	var err error
	if w.ca, err = nsmsim.NewCA(); err != nil {
		return err
	}
	if err := w.ca.Save(w.path("simca")); err != nil {
		return err
	}
	w.pcrs = nsmsim.ImagePCRs(imageLabel)
	meas, err := nsmsim.MarshalMeasurements(w.pcrs)
	if err != nil {
		return err
	}
	if err := os.WriteFile(w.path("measurements.json"), meas, 0o644); err != nil {
		return err
	}
	if err := writeJSON(w.path("key-policy.json"), keyPolicy(w.pcrs)); err != nil {
		return err
	}
	seed := fmt.Sprintf("keys:\n  - id: %s\n    description: kmsproxy benchmark key\n    policy_file: key-policy.json\n", keyID)
	creds := fmt.Sprintf(`%s:
  secret_access_key: %s
  principal: %s
%s:
  secret_access_key: %s
  session_token: %s
  principal: %s
`, operatorKey, operatorSecret, operatorARN, roleKey, roleSecret, roleToken, sessionARN)
	if err := os.WriteFile(w.path("seed.yaml"), []byte(seed), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(w.path("credentials.yaml"), []byte(creds), 0o600); err != nil {
		return err
	}

	// devkms listens on a unix socket, where kmsproxyd and the benchmark's
	// direct calls dial it: a local stream socket, as the vsock to the
	// parent's vsock-proxy is in an enclave (on test machines unix sockets stand
	// in for vsock). The URL only names the endpoint, for TLS and SigV4.
	// devkms logs only warnings: it stands in for KMS, and its own logging
	// is not what the benchmark measures.
	w.kmsSock = w.path("kms.sock")
	w.kmsURL = "https://localhost:4599"
	if w.devkms, err = w.start("devkms", nil, w.exe("devkms"),
		"--listen", "unix://"+w.kmsSock,
		"--tls-self-signed", w.path("tls"),
		"--trust-root", w.path("simca/root.pem"),
		"--credentials", w.path("credentials.yaml"),
		"--seed", w.path("seed.yaml"),
		"--region", region, "--account-id", account,
		"--log-level", "warn"); err != nil {
		return err
	}
	if err := w.waitDevKMS(); err != nil {
		return w.failed(w.devkms, err)
	}

	w.plaintext = make([]byte, plaintextSize)
	if _, err := rand.Read(w.plaintext); err != nil {
		return err
	}
	out, err := w.sdkClient(operatorKey, operatorSecret, "").Encrypt(w.ctx, &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: w.plaintext})
	if err != nil {
		return fmt.Errorf("failed to encrypt the benchmark secret at devkms: %w", err)
	}
	w.blob = out.CiphertextBlob
	return nil
}

// keyPolicy lets the operator encrypt and the enclave role decrypt only
// with an attestation document of the benchmark's image (ImageSha384 and
// PCR0-2, as `kmsproxyctl policy generate` writes).
func keyPolicy(pcrs map[int][]byte) map[string]any {
	cond := map[string]string{"kms:RecipientAttestation:ImageSha384": hex.EncodeToString(pcrs[0])}
	for i := range 3 {
		cond[fmt.Sprintf("kms:RecipientAttestation:PCR%d", i)] = hex.EncodeToString(pcrs[i])
	}
	return map[string]any{
		"Version": "2012-10-17",
		"Statement": []any{
			map[string]any{
				"Sid": "OperatorEncrypts", "Effect": "Allow",
				"Principal": map[string]any{"AWS": operatorARN},
				"Action":    []string{"kms:Encrypt", "kms:DescribeKey"},
				"Resource":  "*",
			},
			map[string]any{
				"Sid": "EnclaveDecryptsWithAttestation", "Effect": "Allow",
				"Principal": map[string]any{"AWS": roleARN},
				"Action":    []string{"kms:Decrypt"},
				"Resource":  "*",
				"Condition": map[string]any{"StringEqualsIgnoreCase": cond},
			},
		},
	}
}

// kmsproxydArgs are the flags of every kmsproxyd the benchmark starts: the
// defaults of a production daemon (JSON logs at info, documents reused for
// 5 minutes, key rotation every hour, 256 in flight, 4 upstream
// connections, the built-in policy) with the simulated NSM, devkms as KMS,
// and unix sockets standing in for the parent's vsock listener and the
// local listener.
func (w *world) kmsproxydArgs(sock string) []string {
	return []string{
		"--nsm", "sim", "--sim-ca", w.path("simca"), "--sim-pcrs", w.path("measurements.json"),
		"--region", region,
		"--kms-endpoint", w.kmsURL,
		"--kms-dial", "unix://" + w.kmsSock,
		"--kms-ca", w.path("tls/ca.pem"),
		"--credentials", "env",
		"--listen-parent", "unix://" + sock,
		"--listen-local", "unix://" + localSock(sock),
	}
}

// localSock is the local listener's socket of the kmsproxyd whose parent
// listener is sock. The benchmark reads /readyz and /metrics there once
// kmsproxyd is ready, so that the parent listener's connections
// (max_connections, 256 by default) are all the load's.
func localSock(sock string) string { return strings.TrimSuffix(sock, ".sock") + "-local.sock" }

// daemon is a running kmsproxyd.
type daemon struct {
	*proc
	sock string
	// ready is the time from starting the process to its first 200 on
	// /readyz.
	ready time.Duration
	// control is a client for its control endpoints.
	control *http.Client
}

// startKmsproxyd starts the kmsproxyd (or floor) binary exe, with more
// environment variables (e.g. GOGC) in extraEnv and more flags in
// extraArgs, and waits for its first 200 on /readyz, polling every
// millisecond.
func (w *world) startKmsproxyd(name, exe string, extraEnv []string, extraArgs ...string) (*daemon, error) {
	sock := w.path(name + ".sock")
	env := append([]string{"AWS_ACCESS_KEY_ID=" + roleKey, "AWS_SECRET_ACCESS_KEY=" + roleSecret, "AWS_SESSION_TOKEN=" + roleToken}, extraEnv...)
	d := &daemon{sock: sock, control: unixClient(sock, 1)}
	d.control.Timeout = 2 * time.Second
	p, err := w.start(name, env, exe, append(w.kmsproxydArgs(sock), extraArgs...)...)
	if err != nil {
		return nil, err
	}
	d.proc = p
	deadline := p.started.Add(20 * time.Second)
	for {
		resp, err := d.control.Get("http://kmsproxyd/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				d.ready = time.Since(p.started)
				d.control.CloseIdleConnections()
				if _, err := os.Stat(localSock(sock)); err == nil {
					d.control = unixClient(localSock(sock), 1) // the floor daemon has none
					d.control.Timeout = 2 * time.Second
				}
				return d, nil
			}
		}
		if p.exited() || time.Now().After(deadline) {
			return nil, w.failed(p, fmt.Errorf("not ready within 20s (last: %v)", err))
		}
		time.Sleep(time.Millisecond)
	}
}

// readiness is the part of kmsproxyd's /readyz the benchmark reads.
type readiness struct {
	Ready     bool `json:"ready"`
	Recipient struct {
		NextKeyReady bool `json:"next_key_ready"`
	} `json:"recipient"`
}

// waitSettled waits until kmsproxyd has pre-generated its next recipient
// key, the one burst of background work after start, so that it does not
// count in a measurement.
func (d *daemon) waitSettled(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var rd readiness
		resp, err := d.control.Get("http://kmsproxyd/readyz")
		if err == nil {
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&rd)
			resp.Body.Close()
		}
		if err == nil && rd.Ready && rd.Recipient.NextKeyReady {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kmsproxyd did not pre-generate its next key within 30s (last error: %v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// metrics reads the unlabelled samples of kmsproxyd's /metrics (the Go
// runtime's go_* and process_* gauges among them).
func (d *daemon) metrics() (map[string]float64, error) {
	resp, err := d.control.Get("http://kmsproxyd/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			m[name] = f
		}
	}
	return m, nil
}

// memoryDetail describes the Go runtime's memory from /metrics: heap in
// use, goroutine stacks, and heap kept but unused.
func (d *daemon) memoryDetail() string {
	m, err := d.metrics()
	if err != nil {
		return "unavailable: " + err.Error()
	}
	return fmt.Sprintf("Go heap in use %s, stacks %s, heap idle not returned %s, %d goroutines",
		mib(int64(m["go_memstats_heap_inuse_bytes"])), mib(int64(m["go_memstats_stack_inuse_bytes"])),
		mib(int64(m["go_memstats_heap_idle_bytes"]-m["go_memstats_heap_released_bytes"])), int(m["go_goroutines"]))
}

// stop sends SIGTERM and waits for the process; kmsproxyd and devkms
// drain and exit 0.
func (w *world) stop(p *proc) error {
	if p.exited() {
		return fmt.Errorf("%s had already exited: %s", p.name, p.cmd.ProcessState)
	}
	if !p.terminate(20 * time.Second) {
		return fmt.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		return w.failed(p, fmt.Errorf("exited with status %d after SIGTERM", code))
	}
	return nil
}

// terminate sends SIGTERM and waits up to grace for the process to exit,
// then kills it; it reports whether the process stopped by itself.
func (p *proc) terminate(grace time.Duration) bool {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

func (w *world) start(name string, env []string, exe string, args ...string) (*proc, error) {
	logPath := w.path(name + ".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(harness.CleanEnv(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	w.procs = append(w.procs, p)
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// failed adds the end of a process's log to err.
func (w *world) failed(p *proc, err error) error {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return fmt.Errorf("%s: %w\n--- end of %s's log ---\n%s", p.name, err, p.name, b)
}

// close stops every process still running and removes the directory
// unless keep.
func (w *world) close(keep bool) {
	for i := len(w.procs) - 1; i >= 0; i-- {
		p := w.procs[i]
		if !p.exited() {
			p.terminate(10 * time.Second)
		}
	}
	if !keep {
		os.RemoveAll(w.dir)
	}
}

func (w *world) waitDevKMS() error {
	hc := w.tlsClient(1)
	hc.Timeout = time.Second
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get(w.kmsURL + "/devkms/healthz")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if w.devkms.exited() || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsClient is an HTTP client for devkms that keeps up to conns
// connections alive.
func (w *world) tlsClient(conns int) *http.Client {
	if w.caPEM == nil {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if b, err := os.ReadFile(w.path("tls/ca.pem")); err == nil && len(b) > 0 {
				w.caPEM = b
				break
			}
		}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.caPEM)
	return &http.Client{Transport: &http.Transport{
		DialContext:         unixDial(w.kmsSock),
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: conns,
		DisableCompression:  true,
		Proxy:               nil,
	}}
}

// sdkClient is an aws-sdk-go-v2 KMS client for devkms signing with the
// given access key.
func (w *world) sdkClient(key, secret, token string) *kms.Client {
	return kms.New(kms.Options{
		Region:       region,
		BaseEndpoint: aws.String(w.kmsURL),
		Credentials:  credentials.NewStaticCredentialsProvider(key, secret, token),
		HTTPClient:   &http.Client{Transport: sdkhttp.BufferBodies(w.tlsClient(4).Transport, 0)},
		Retryer:      aws.NopRetryer{},
	})
}

// recipient makes what kmsproxyd sends as Recipient, for the benchmark's
// own direct calls to devkms: an RSA-2048 key's attestation document from
// the same simulator CA and PCRs.
func (w *world) recipient() (*types.RecipientInfo, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sim, err := nsmsim.New(w.ca, nsmsim.Options{PCRs: w.pcrs})
	if err != nil {
		return nil, err
	}
	doc, err := sim.Attest(w.ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		return nil, err
	}
	return &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}, nil
}

// unixClient is an HTTP client for kmsproxyd's parent listener (a unix
// socket standing in for vsock) that keeps up to conns connections alive.
func unixClient(sock string, conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         unixDial(sock),
		MaxIdleConnsPerHost: conns,
		MaxIdleConns:        conns,
		DisableCompression:  true,
		Proxy:               nil,
	}}
}

// unixDial dials sock whatever address the HTTP client asks for.
func unixDial(sock string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// goTool is the go command: `go run` puts the one running it first in
// PATH.
func goTool() string { return "go" }
