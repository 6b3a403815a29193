package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// simBinary builds kmsproxyd with the simulator once per test binary.
func simBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kmsproxyd-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "kmsproxyd")
		out, err := exec.Command("go", "build", "-tags", "nsmsim", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build -tags nsmsim: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// daemon is a kmsproxyd process under test.
type daemon struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	parent string // unix socket path
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startDaemon runs kmsproxyd against a devkms with the simulated NSM.
func startDaemon(t *testing.T, kmsd *devkmstest.Instance, caDir string, extra ...string) *daemon {
	t.Helper()
	return startDaemonWith(t, kmsd, []string{"--nsm", "sim", "--sim-ca", caDir}, extra...)
}

// startDaemonWith runs kmsproxyd against a devkms with the given
// attestation source flags.
func startDaemonWith(t *testing.T, kmsd *devkmstest.Instance, source []string, extra ...string) *daemon {
	t.Helper()
	sock, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	d := &daemon{out: &syncBuffer{}, done: make(chan struct{}), parent: filepath.Join(sock, "parent.sock")}
	args := append(append(append([]string(nil), source...),
		"--region", "us-east-1",
		"--kms-endpoint", kmsd.URL,
		"--kms-dial", "tcp://"+kmsd.Addr,
		"--kms-ca", kmsd.CAFile,
		"--credentials", "env",
		"--listen-parent", "unix://"+d.parent,
		"--listen-local", "tcp://127.0.0.1:0",
	), extra...)
	d.cmd = exec.Command(simBinary(t), args...)
	d.cmd.Env = append(os.Environ(),
		"AWS_ACCESS_KEY_ID="+devkmstest.AnonymousAccessKeyID,
		"AWS_SECRET_ACCESS_KEY="+devkmstest.AnonymousSecretAccessKey)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	d.poll(t, "/readyz", "", "ready")
}

func (d *daemon) waitMetric(t *testing.T, line string) {
	t.Helper()
	d.poll(t, "/metrics", line, line)
}

// poll GETs path on the parent listener until it answers 200 with a body
// containing want, for at most 30 s.
func (d *daemon) poll(t *testing.T, path, want, what string) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.parent)
		}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := hc.Get("http://kmsproxyd" + path)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), want) {
				return
			}
		}
		select {
		case <-d.done:
			t.Fatalf("kmsproxyd exited while waiting for %s:\n%s", what, d.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kmsproxyd: no %s within 30s:\n%s", what, d.out.String())
		}
	}
}

// waitLog waits until kmsproxyd has logged a line containing s.
func (d *daemon) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("kmsproxyd did not log %q within 30s:\n%s", s, d.out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (d *daemon) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("kmsproxyd did not exit within 30s:\n%s", d.out.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

func simCADir(t *testing.T) (*nsmsim.CA, string) {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	return ca, dir
}

// TestDaemonServesAndDrains runs the real binary: ready, an attested
// Decrypt, then SIGTERM while a slow request is in flight: the request
// completes and kmsproxyd exits 0.
func TestDaemonServesAndDrains(t *testing.T) {
	ca, caDir := simCADir(t)
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
	keyID := kmsd.CreateKey(t, "")
	ctx := context.Background()
	enc, err := kmsd.Client(t).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("drain me")})
	if err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, kmsd, caDir)
	d.waitReady(t)
	c, err := client.New(ctx, "unix://"+d.parent)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(out.Plaintext) != "drain me" {
		t.Fatalf("Decrypt through kmsproxyd: %v\n%s", err, d.out.String())
	}

	kmsd.SetFaults(devkms.Faults{Latency: 1500 * time.Millisecond})
	slow := make(chan error, 1)
	go func() {
		out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
		if err == nil && string(out.Plaintext) != "drain me" {
			err = fmt.Errorf("wrong plaintext %q", out.Plaintext)
		}
		slow <- err
	}()
	// Once the request is in flight inside kmsproxyd, ask it to stop.
	d.waitMetric(t, `kmsproxy_inflight_requests{listener="parent"} 1`)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("request in flight at SIGTERM: %v", err)
	}
	if code := d.exitCode(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, d.out.String())
	}
	logs := d.out.String()
	for _, want := range []string{`"msg":"kmsproxyd ready"`, `"msg":"shutting down: draining requests"`, `"msg":"kmsproxyd stopped"`, "built-in default"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "drain me") || strings.Contains(logs, devkmstest.AnonymousSecretAccessKey) {
		t.Error("a plaintext or the secret key appears in kmsproxyd's logs")
	}
}

// TestDaemonSecondSignalStopsAtOnce: a second SIGTERM during the drain ends
// kmsproxyd without waiting for the request still in flight.
func TestDaemonSecondSignalStopsAtOnce(t *testing.T) {
	ca, caDir := simCADir(t)
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
	d := startDaemon(t, kmsd, caDir, "--request-timeout", "60s")
	d.waitReady(t)
	ctx := context.Background()
	c, err := client.New(ctx, "unix://"+d.parent)
	if err != nil {
		t.Fatal(err)
	}
	kmsd.SetFaults(devkms.Faults{Latency: devkms.MaxFaultLatency})
	slow := make(chan error, 1)
	go func() {
		_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		slow <- err
	}()
	d.waitMetric(t, `kmsproxy_inflight_requests{listener="parent"} 1`)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, "shutting down: draining requests")
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.exitCode(t)
	ws, ok := d.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("kmsproxyd ended with %v, want killed by the second SIGTERM", d.cmd.ProcessState)
	}
	if err := <-slow; err == nil {
		t.Error("the request in flight succeeded, so kmsproxyd waited for the drain")
	}
}

func TestDaemonRefusesBadPolicy(t *testing.T) {
	_, caDir := simCADir(t)
	kmsd := devkmstest.Start(t)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("listeners:\n  parent:\n    operations: [Decrpyt]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, kmsd, caDir, "--policy", pol)
	if code := d.exitCode(t); code != 1 {
		t.Fatalf("exit code %d with a bad policy, want 1", code)
	}
	if out := d.out.String(); !strings.Contains(out, "policy.yaml:3:") || !strings.Contains(out, `did you mean "Decrypt"`) || !strings.HasPrefix(out, "kmsproxyd: error: ") {
		t.Fatalf("the error does not name the line:\n%s", out)
	}
}

// TestDaemonRefusesUnpinnedRegion: with kms.regions in the policy, a
// region from --region (or IMDS) or an endpoint in another region stops
// kmsproxyd at start, with an error naming both regions and the policy
// line.
func TestDaemonRefusesUnpinnedRegion(t *testing.T) {
	_, caDir := simCADir(t)
	kmsd := devkmstest.Start(t)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte("kms:\n  accounts: [\"111122223333\"]\n  regions: [eu-west-1]\nlisteners: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"--region", []string{"--region", "us-east-1"},
			[]string{`policy.yaml:3:12: kms.regions: --region names region "us-east-1", but the policy allows only "eu-west-1"`}},
		{"endpoint", []string{"--region", "eu-west-1", "--kms-endpoint", "https://kms.us-east-1.amazonaws.com"},
			[]string{`policy.yaml:3:12: kms.regions: the KMS endpoint https://kms.us-east-1.amazonaws.com names region "us-east-1", but the policy allows only "eu-west-1"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := startDaemon(t, kmsd, caDir, append([]string{"--policy", pol}, tt.args...)...)
			if code := d.exitCode(t); code != 1 {
				t.Fatalf("exit code %d, want 1:\n%s", code, d.out.String())
			}
			out := d.out.String()
			for _, w := range tt.want {
				if !strings.Contains(out, "kmsproxyd: error: ") || !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// The pinned region starts.
	d := startDaemon(t, kmsd, caDir, "--policy", pol, "--region", "eu-west-1")
	d.poll(t, "/healthz", "serving", "healthz")
}
