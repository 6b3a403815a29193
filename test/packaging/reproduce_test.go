package packaging

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// TestReproducible is make reproducible as a test: two cold builds of
// kmsproxyd with the Dockerfile's flags, in separate directories, must be
// byte-identical, and the binary must be fit for the enclave.
func TestReproducible(t *testing.T) {
	rep := sharedReproduction(t)
	t.Logf("%s with %s", rep.Command, strings.Join(rep.Env, " "))
	t.Logf("build 1 (%s) sha256 %s", rep.Dirs[0], rep.SHA256[0])
	t.Logf("build 2 (%s) sha256 %s", rep.Dirs[1], rep.SHA256[1])
	if rep.SHA256[0] != rep.SHA256[1] || len(rep.SHA256[0]) != 64 {
		t.Fatalf("hashes %q and %q", rep.SHA256[0], rep.SHA256[1])
	}
	if rep.Size != int64(len(rep.Binary)) || rep.Size < 1<<20 {
		t.Errorf("binary of %d bytes (Size %d)", len(rep.Binary), rep.Size)
	}
	for _, kv := range []string{"CGO_ENABLED=1", "GOTOOLCHAIN=local", "GOOS=linux", "VERSION="} {
		if !slices.Contains(rep.Env, kv) {
			t.Errorf("the builds ran without %s (env %q)", kv, rep.Env)
		}
	}
	if rep.Dirs[0] == rep.Dirs[1] || len(rep.Dirs[0]) == len(rep.Dirs[1]) {
		t.Errorf("the two builds must run in different paths: %q", rep.Dirs)
	}
	for _, d := range rep.Dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("build directory %s was not removed (stat: %v)", d, err)
		}
	}
	if err := CheckBinary(rep.Binary); err != nil {
		t.Error(err)
	}
	if rep.Backend != "openssl" || rep.Libcrypto == "" {
		t.Errorf("the Dockerfile's default build has backend %q with libssl-dev %q, want openssl with a pinned version", rep.Backend, rep.Libcrypto)
	}
	if rep.LocalLibcrypto != rep.Libcrypto {
		t.Logf("note: libssl-dev %s here, %s in Dockerfile.enclave: the image's binary will differ from this one", rep.LocalLibcrypto, rep.Libcrypto)
	}
}

// The image's binary runs where it will run: alone in an empty root, no
// dynamic loader, no shared library, no /etc. --version calls into
// libcrypto for its version, so the static OpenSSL is there and works.
func TestReproducibleBinaryRunsInAnEmptyRoot(t *testing.T) {
	rep := sharedReproduction(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := RunInEmptyRoot(ctx, rep.Binary, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "kmsproxyd (devel) go") || !strings.Contains(out, " rsa=openssl (OpenSSL 3.") {
		t.Errorf("kmsproxyd --version in an empty root printed %q, want the release, the Go release and rsa=openssl", out)
	}
	// And a dynamically linked binary does not run there: the check can fail.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	test, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := RunInEmptyRoot(ctx, test, "-test.run=^$"); err == nil && isDynamic(test) {
		t.Errorf("a dynamically linked binary ran in the empty root: %q", out)
	}
}

// A Dockerfile whose builder stage forgets a directory kmsproxyd needs fails
// in Reproduce as it would in docker build: Reproduce copies only what the
// Dockerfile copies.
func TestReproduceUsesOnlyWhatTheDockerfileCopies(t *testing.T) {
	orig := string(readRepoFile(t, "Dockerfile.enclave"))
	broken := strings.Replace(orig, "COPY internal/ internal/\n", "", 1)
	if broken == orig {
		t.Fatal("Dockerfile.enclave no longer has COPY internal/ internal/")
	}
	df := filepath.Join(t.TempDir(), "Dockerfile")
	if err := os.WriteFile(df, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	requireLibcrypto(t)
	_, err := Reproduce(ctx, ReproduceConfig{Root: harness.RepoRootT(t), Dockerfile: df, WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "internal/") {
		t.Fatalf("Reproduce with internal/ not copied: err = %v, want the build to fail on a missing internal package", err)
	}
}

func TestReproduceRefusesABrokenDockerfile(t *testing.T) {
	orig := string(readRepoFile(t, "Dockerfile.enclave"))
	df := filepath.Join(t.TempDir(), "Dockerfile")
	bad := strings.Replace(orig, "-tags netgo,osusergo,openssl", "-tags netgo,osusergo,openssl,nsmsim", 1)
	if bad == orig {
		t.Fatal("Dockerfile.enclave no longer has -tags netgo,osusergo,openssl")
	}
	if err := os.WriteFile(df, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Reproduce(context.Background(), ReproduceConfig{Root: harness.RepoRootT(t), Dockerfile: df, WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), RuleNoSimulator) {
		t.Fatalf("err = %v, want the %s rule to refuse it before building", err, RuleNoSimulator)
	}
}

func TestCheckBinaryRejects(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testBin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		bin  []byte
		want []string
	}{
		// The test binary is another main package, built with cgo, without
		// -trimpath, with a build ID (go test strips its symbols itself).
		{"test binary", testBin, []string{"main package", "CGO_ENABLED=1 without -tags openssl", "-trimpath", "build ID", "dynamically linked"}},
		{"not a Go binary", []byte("\x7fELF not really"), []string{"build information"}},
		{"empty", nil, []string{"build information"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckBinary(tt.bin)
			if err == nil {
				t.Fatal("CheckBinary accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestNotReproducibleErrorMessage(t *testing.T) {
	e := &NotReproducibleError{SHA256: [2]string{"aa", "bb"}, Size: [2]int64{10, 11}, FirstDiff: 7}
	want := "packaging: kmsproxyd is not reproducible: build 1 is 10 bytes with SHA-256 aa, build 2 is 11 bytes with SHA-256 bb; they first differ at byte 7"
	if got := e.Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
