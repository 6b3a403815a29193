package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/enclavekit/kmsproxy/test/internal/secretscan"
)

// testTimeout bounds one test (watchdog), start-up, load phases and
// cleanup included, building the binaries not (tests that need them build
// first); the slowest takes well under a minute.
const testTimeout = 5 * time.Minute

// buildTimeout bounds building the binaries (cold cache, 2 cores).
const buildTimeout = 10 * time.Minute

// aemmPackage is AWS's IMDS mock, a tool dependency in go.mod.
const aemmPackage = "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock"

// binaries are the programs the tests run, built once per test binary.
type binaries struct {
	kmsproxyd   string // with -tags nsmsim, for --nsm sim
	kmsproxyctl string
	devkms      string
	enclaveapp  string
	aemm        string
}

var (
	buildOnce sync.Once
	buildDir  string
	built     *binaries
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// build returns the binaries, building them on first use.
func build(t testing.TB) *binaries {
	t.Helper()
	buildOnce.Do(func() {
		built, buildErr = buildAll()
	})
	if buildErr != nil {
		t.Fatalf("failed to build the binaries: %v", buildErr)
	}
	return built
}

func buildAll() (*binaries, error) {
	gobin, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		return nil, err
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	if buildDir, err = os.MkdirTemp("", "kmsproxy-e2e-bin-"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	for _, args := range [][]string{
		{"build", "-o", buildDir + string(filepath.Separator), "./cmd/kmsproxyctl", "./cmd/devkms", "./test/internal/enclaveapp", aemmPackage},
		{"build", "-tags", "nsmsim", "-o", filepath.Join(buildDir, "kmsproxyd"), "./cmd/kmsproxyd"},
	} {
		cmd := exec.CommandContext(ctx, gobin, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	return &binaries{
		kmsproxyd:   filepath.Join(buildDir, "kmsproxyd"),
		kmsproxyctl: filepath.Join(buildDir, "kmsproxyctl"),
		devkms:      filepath.Join(buildDir, "devkms"),
		enclaveapp:  filepath.Join(buildDir, "enclaveapp"),
		aemm:        filepath.Join(buildDir, "ec2-metadata-mock"),
	}, nil
}

// newScan starts the test's watchdog and returns a secretscan.Scanner
// that fails t, when the test ends
// (after every process it started has stopped, since cleanups run in
// reverse), if any registered secret appears in any registered log.
func newScan(t testing.TB) *secretscan.Scanner {
	t.Helper()
	watchdog(t, testTimeout)
	sc := secretscan.New()
	t.Cleanup(func() {
		for _, f := range sc.Scan() {
			t.Errorf("leak: %s", f)
		}
		secrets, logs, n := sc.Counts()
		t.Logf("secret scan: %d secrets searched for in %d logs (%d bytes)", secrets, logs, n)
	})
	return sc
}

// shortTempDir returns a fresh directory with a short path (unix socket
// paths are limited to 107 bytes; t.TempDir's are long), removed when the
// test ends.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pollInterval is the pause between two tries of poll.
const pollInterval = 20 * time.Millisecond

// poll calls f until it succeeds, every pollInterval, for at most d (and
// at most d/pollInterval+1 times), and returns f's last error.
func poll(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	var err error
	for i := 0; i <= int(d/pollInterval); i++ {
		if err = f(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(pollInterval)
	}
	return err
}

// watchdog ends the test binary with every goroutine's stack if t runs
// longer than d: each request has its own deadline, and this is the
// test-wide one, so that a hang shows where it is instead of running into
// go test's -timeout.
func watchdog(t testing.TB, d time.Duration) {
	t.Helper()
	name := t.Name()
	timer := time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("%s did not finish within %s: it hangs\n%s", name, d, buf))
	})
	t.Cleanup(func() { timer.Stop() })
}
