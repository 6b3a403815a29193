package version

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestStringPrefersTheStamp(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v1.4.2"
	if got := String(); got != "v1.4.2" {
		t.Errorf("String() = %q, want the stamped v1.4.2", got)
	}
	Version = ""
	if got := String(); got == "" || got == "v1.4.2" {
		t.Errorf("String() without a stamp = %q, want the build information's version", got)
	}
	if Go() != runtime.Version() {
		t.Errorf("Go() = %q", Go())
	}
}

// TestStampReachesTheBinary builds a program with the linker flag the
// Makefile and Dockerfile.enclave use and runs it: the flag must name this
// package's variable.
func TestStampReachesTheBinary(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "main.go")
	if err := os.WriteFile(main, []byte(`package main

import (
	"fmt"

	"github.com/enclavekit/kmsproxy/internal/version"
)

func main() { fmt.Print(version.String()) }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// The program must live inside the module to import an internal package.
	pkgDir, err := os.MkdirTemp(".", "stamp-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pkgDir) })
	if err := os.Rename(main, filepath.Join(pkgDir, "main.go")); err != nil {
		t.Fatal(err)
	}
	build := func(out, v string) []byte {
		t.Helper()
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
			"-ldflags=-s -w -buildid= -X github.com/enclavekit/kmsproxy/internal/version.Version="+v,
			"-o", out, "./"+filepath.Base(pkgDir))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, b)
		}
		got, err := exec.Command(out).Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != v {
			t.Errorf("the binary stamped with %q says %q", v, got)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// (That the same stamp gives the same bytes is make reproducible's
	// test, test/packaging's TestReproducible.)
	a := build(filepath.Join(dir, "a"), "v1.4.2")
	c := build(filepath.Join(dir, "c"), "v1.4.3")
	if string(a) == string(c) || !strings.Contains(string(c), "v1.4.3") {
		t.Error("the stamp did not reach the binary")
	}
}
