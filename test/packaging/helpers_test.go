package packaging

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// readRepoFile reads a file of the repository.
func readRepoFile(t testing.TB, rel string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(harness.RepoRootT(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// enclaveDockerfile parses the repository's Dockerfile.enclave.
func enclaveDockerfile(t testing.TB) *Dockerfile {
	t.Helper()
	df, err := ParseDockerfile(readRepoFile(t, "Dockerfile.enclave"))
	if err != nil {
		t.Fatal(err)
	}
	return df
}

var (
	reproOnce sync.Once
	repro     *Reproduction
	reproErr  error
)

// requireLibcrypto skips a test that builds the OpenSSL kmsproxyd on a
// machine without libssl-dev (a Go-only machine), with a message, unless
// KMSPROXY_REQUIRE_TOOLS=1 (CI), where it fails.
func requireLibcrypto(t testing.TB) {
	t.Helper()
	if _, err := localPackageVersion(context.Background(), LibcryptoPackage); err != nil {
		if os.Getenv("KMSPROXY_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%v, and KMSPROXY_REQUIRE_TOOLS=1", err)
		}
		t.Skipf("%v: the enclave build links OpenSSL statically (apt-get install %s; set KMSPROXY_REQUIRE_TOOLS=1 to fail instead of skipping)", err, LibcryptoPackage)
	}
}

// isDynamic reports whether an ELF binary names an interpreter.
func isDynamic(bin []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return false
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// sharedReproduction runs Reproduce once per test binary, so that the
// reproducibility test and the image test share one pair of cold builds.
func sharedReproduction(t testing.TB) *Reproduction {
	t.Helper()
	requireLibcrypto(t)
	reproOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		var log strings.Builder
		repro, reproErr = Reproduce(ctx, ReproduceConfig{Root: harness.RepoRootT(t), Log: &log})
		t.Logf("Reproduce:\n%s", log.String())
	})
	if reproErr != nil {
		t.Fatalf("Reproduce: %v", reproErr)
	}
	return repro
}

// goBuild builds a command of the module into dir with the ordinary build
// cache and returns the binary's path.
func goBuild(t testing.TB, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = harness.RepoRootT(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// unitRoot returns a root directory for systemd-analyze verify --root that
// holds this system's unit directory (the targets units are ordered
// against), and a function that installs a file at its real path under it.
func unitRoot(t *testing.T) (root string, install func(dest string, data []byte, mode os.FileMode)) {
	t.Helper()
	root = t.TempDir()
	systemUnits := ""
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if fi, err := os.Stat(filepath.Join(d, "multi-user.target")); err == nil && !fi.IsDir() {
			systemUnits = d
			break
		}
	}
	if systemUnits == "" {
		t.Fatal("systemd-analyze is installed but this system has no unit directory with multi-user.target")
	}
	if err := copyTree(systemUnits, filepath.Join(root, "usr/lib/systemd/system")); err != nil {
		t.Fatal(err)
	}
	install = func(dest string, data []byte, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(dest))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	return root, install
}
