package credentials

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/internal/transport"
)

// AWS's own IMDS mock, github.com/aws/amazon-ec2-metadata-mock, is a tool
// dependency in go.mod; it is built once per test binary.
const aemmPackage = "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock"

var (
	aemmOnce sync.Once
	aemmDir  string
	aemmBin  string
	aemmErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if aemmDir != "" {
		os.RemoveAll(aemmDir)
	}
	os.Exit(code)
}

func buildAEMM(t testing.TB) string {
	t.Helper()
	aemmOnce.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			aemmErr = err
			return
		}
		if aemmDir, aemmErr = os.MkdirTemp("", "aemm-"); aemmErr != nil {
			return
		}
		var out bytes.Buffer
		cmd := exec.Command(gobin, "build", "-o", aemmDir, aemmPackage)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			aemmErr = &buildError{err, out.String()}
			return
		}
		aemmBin = filepath.Join(aemmDir, "ec2-metadata-mock")
	})
	if aemmErr != nil {
		t.Fatalf("failed to build %s (a tool dependency in go.mod): %v", aemmPackage, aemmErr)
	}
	return aemmBin
}

type buildError struct {
	err    error
	output string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.output }

// startAEMM runs the mock with IMDSv2 required on a free loopback port, with
// config (a JSON config file body) when not empty, and returns its address.
// It is killed when the test ends.
func startAEMM(t testing.TB, config string) transport.Addr {
	t.Helper()
	bin := buildAEMM(t)
	dir := t.TempDir()
	args := []string{"--imdsv2", "-n", "127.0.0.1", "-p", ""}
	if config != "" {
		cfg := filepath.Join(dir, "aemm-config.json")
		if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-c", cfg)
	}
	for attempt := 0; attempt < 3; attempt++ {
		port := freePort(t)
		args[4] = strconv.Itoa(port)
		var logs bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HOME="+dir) // no stray ~/aemm-config.json
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatalf("failed to start ec2-metadata-mock: %v", err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		addr := transport.Addr{Network: transport.TCP, HostPort: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		if waitAEMM(addr, exited) {
			t.Cleanup(stop)
			return addr
		}
		stop()
		t.Logf("ec2-metadata-mock did not come up on port %d (attempt %d): %s", port, attempt+1, logs.String())
	}
	t.Fatal("ec2-metadata-mock did not start")
	return transport.Addr{}
}

// waitAEMM waits up to 10s for the mock to hand out an IMDSv2 token.
func waitAEMM(addr transport.Addr, exited <-chan struct{}) bool {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, "http://"+addr.HostPort+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
