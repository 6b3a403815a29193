package docs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// The guide's fixed folder and ports, which the test replaces with its own
// so that it can run beside other tests.
const (
	guideDir  = "/tmp/kmsproxy-local"
	guideTime = 3 * time.Minute
)

var guidePorts = []string{"4598", "4599", "8000", "9000"}

// blockRE matches a fenced code block and its language.
var blockRE = regexp.MustCompile("(?s)```(sh|python|go)\n(.*?)```")

// TestLocalGuide runs docs/local.md: its shell blocks in order as one bash
// script, its Python block with python3 (boto3) and its Go program built
// against this repository, in a folder and on ports of its own, and checks
// that every client decrypts the secret and that the direct call is denied.
func TestLocalGuide(t *testing.T) {
	for _, tool := range []string{"bash", "socat", "curl", "sha384sum"} {
		harness.RequireTool(t, tool)
	}
	// Debian's AWS CLI and python3 (with python3-boto3), which .ci/run
	// installs, before whatever else is on PATH.
	aws := harness.RequireTool(t, "aws", "/usr/bin/aws")
	python := harness.RequireTool(t, "python3", "/usr/bin/python3")
	if err := exec.Command(python, "-c", "import boto3").Run(); err != nil {
		harness.MissingTool(t, "boto3 is not installed for %s (Debian: apt-get install python3-boto3)", python)
	}
	tools := t.TempDir()
	for name, path := range map[string]string{"aws": aws, "python3": python} {
		if err := os.Symlink(path, filepath.Join(tools, name)); err != nil {
			t.Fatal(err)
		}
	}
	root := harness.RepoRootT(t)
	text, err := os.ReadFile(filepath.Join(root, "docs", "local.md"))
	if err != nil {
		t.Fatal(err)
	}
	bin := binaries(t)
	simBin := t.TempDir()
	build := exec.Command("go", "build", "-tags", "nsmsim", "-o", filepath.Join(simBin, "kmsproxyd-sim"), "./cmd/kmsproxyd")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A short folder: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "kpl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	replace := []string{guideDir, dir}
	for _, p := range guidePorts {
		free, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		replace = append(replace, ":"+p, fmt.Sprintf(":%d", free))
	}
	r := strings.NewReplacer(replace...)

	goDir := t.TempDir()
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	blocks := blockRE.FindAllStringSubmatch(string(text), -1)
	for i, b := range blocks {
		code := r.Replace(b[2])
		switch b[1] {
		case "sh":
			if i == 0 {
				// The build: the test built the binaries already.
				code = strings.Replace(code, "make build", "true", 1)
				code = strings.Replace(code, `export PATH="$PWD/bin:$PATH"`, fmt.Sprintf("export PATH=%q", bin+":"+simBin+":"+tools+":"+os.Getenv("PATH")), 1)
			}
			script.WriteString(code)
		case "python":
			fmt.Fprintf(&script, "python3 - <<'PYTHON'\n%sPYTHON\n", code)
		case "go":
			writeGoProgram(t, goDir, root, code)
			fmt.Fprintf(&script, "(cd %q && GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off go build -o guide-client .)\n%q/guide-client\n", goDir, goDir)
		}
	}
	if len(blocks) < 10 {
		t.Fatalf("docs/local.md has %d code blocks; the test expects the guide's shell, Python and Go blocks", len(blocks))
	}

	ctx, cancel := context.WithTimeout(context.Background(), guideTime)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = dir
	// HOME is the guide's folder (the AWS CLI and boto3 find no
	// configuration there); the Go build keeps this machine's caches.
	goEnv, err := exec.Command("go", "env", "GOMODCACHE", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	caches := strings.Fields(string(goEnv))
	if len(caches) != 2 {
		t.Fatalf("go env GOMODCACHE GOCACHE printed %q", goEnv)
	}
	cmd.Env = harness.CleanEnv("HOME="+dir, "GOMODCACHE="+caches[0], "GOCACHE="+caches[1])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Whatever the guide left running is stopped with its process group.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A server the script left running could hold its output open.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		logs := ""
		for _, f := range []string{"devkms.log", "kmsproxyd.log", "kmsproxyd-imds.log", "bridge.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			logs += "\n--- " + f + "\n" + string(b)
		}
		t.Fatalf("the guide's commands failed: %v\n%s%s\n--- the script:\n%s", err, out.String(), logs, script.String())
	}
	got := out.String()
	// kmsproxyctl, the AWS CLI, boto3 and the Go client each print it.
	if n := strings.Count(got, "s3cret-from-the-vault"); n != 4 {
		t.Errorf("the secret was printed %d times, want 4 (kmsproxyctl, AWS CLI, boto3, Go):\n%s", n, got)
	}
	if !strings.Contains(got, "denied, as it must be") || !strings.Contains(got, "AccessDeniedException") {
		t.Errorf("the operator's direct decrypt was not denied:\n%s", got)
	}
}

// writeGoProgram writes the guide's Go program as a module of its own that
// uses this repository's client package (a replace directive, the
// repository's go.sum, modules from the local cache only).
func writeGoProgram(t *testing.T, dir, root, code string) {
	t.Helper()
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	// The repository's own requirements pin every module the client needs,
	// so that nothing is looked up.
	repoMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mod := strings.Replace(string(repoMod), "module "+harness.Module, "module guideclient", 1) +
		fmt.Sprintf("\nrequire %s v0.0.0\n\nreplace %s => %s\n", harness.Module, harness.Module, root)
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": []byte(code)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
