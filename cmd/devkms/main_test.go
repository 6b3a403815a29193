package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"devkms": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the CLI scenarios in testdata/script: flags, usage and
// configuration errors.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}

// goTool returns the go command that runs this test.
func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("cannot find the go command to build devkms: put it in PATH or set GOROOT")
	return ""
}

// listeningURL matches the log line devkms writes once it serves.
var listeningURL = regexp.MustCompile(`msg=listening url=(https://127\.0\.0\.1:[0-9]+)`)

// TestBinary builds devkms, starts it on a free port, talks to it and stops
// it with SIGTERM.
func TestBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devkms")
	bctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(bctx, goTool(t), "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tlsDir := filepath.Join(dir, "tls")
	cmd := exec.Command(bin, "--listen", "tcp://127.0.0.1:0", "--tls-self-signed", tlsDir,
		"--state", filepath.Join(dir, "state.json"), "--log-level", "info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // the test stopped reading; keep draining the pipe
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})

	var url string
	deadline := time.After(30 * time.Second)
	for url == "" {
		select {
		case line := <-lines:
			t.Log(line)
			if m := listeningURL.FindStringSubmatch(line); m != nil {
				url = m[1]
			}
		case err := <-exited:
			t.Fatalf("devkms exited before serving: %v", err)
		case <-deadline:
			t.Fatal("devkms did not report its address within 30s")
		}
	}

	caPEM, err := os.ReadFile(filepath.Join(tlsDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var resp *http.Response
	for i := 0; i < 50; i++ {
		if resp, err = hc.Get(url + "/devkms/healthz"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	c := kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String(url), HTTPClient: &http.Client{Transport: sdkhttp.BufferBodies(hc.Transport, 0)},
		Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
	key, err := c.CreateKey(context.Background(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatalf("CreateKey against the binary: %v", err)
	}
	if _, err := c.Encrypt(context.Background(), &kms.EncryptInput{KeyId: key.KeyMetadata.KeyId, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("Encrypt against the binary: %v", err)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("devkms exited with %v after SIGTERM, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("devkms did not exit within 20s of SIGTERM")
	}
	state, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil || !regexp.MustCompile(*key.KeyMetadata.KeyId).Match(state) {
		t.Fatalf("the key created before SIGTERM is not in the state file: %v", err)
	}
}

// TestBinaryIMDS starts devkms with --imds on a unix socket: both servers
// come up, IMDS answers an IMDSv2 client there, and SIGTERM stops both.
func TestBinaryIMDS(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "devkms")
	bctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(bctx, goTool(t), "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A short path: unix socket paths are limited to 108 bytes.
	sockDir, err := os.MkdirTemp("", "dk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "imds.sock")
	cmd := exec.Command(bin, "--listen", "tcp://127.0.0.1:0", "--imds", "unix://"+sock,
		"--imds-role", "my-role", "--imds-instance-id", "i-0abc1234", "--region", "eu-central-1")
	var logs syncWriter
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	var token string
	deadline := time.Now().Add(30 * time.Second)
	for token == "" {
		req, _ := http.NewRequest(http.MethodPut, "http://169.254.169.254/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		if resp, err := hc.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				token = string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no IMDS token from devkms within 30s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for path, want := range map[string]string{
		"/latest/meta-data/placement/region":          "eu-central-1",
		"/latest/meta-data/instance-id":               "i-0abc1234",
		"/latest/meta-data/iam/security-credentials/": "my-role",
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://169.254.169.254"+path, nil)
		req.Header.Set("X-aws-ec2-metadata-token", token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, b, want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("devkms exited with %v after SIGTERM, want status 0:\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("devkms did not exit within 20s of SIGTERM")
	}
	out := logs.String()
	for _, want := range []string{`msg="IMDS listening"`, "principal=arn:aws:sts::111122223333:assumed-role/my-role/i-0abc1234", "SigV4 verification is on because of --imds", `msg="IMDS stopped"`, "msg=stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("devkms's log lacks %s:\n%s", want, out)
		}
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the IMDS socket is left behind after SIGTERM: %v", err)
	}
}

// syncWriter collects a process's output.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.WriteString(string(p))
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
