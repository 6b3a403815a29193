// Package harness holds what the programs that start kmsproxy's processes
// on this machine (the demo, the end-to-end tests, the benchmark) must all
// do alike: give them an environment that cannot reach real AWS, and pick
// loopback ports, and find the repository they build from.
package harness

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Module is the module path of the kmsproxy repository.
const Module = "github.com/enclavekit/kmsproxy"

// RepoRoot returns the folder of the kmsproxy repository the working
// directory is in, as the go command resolves it (go list -m), so that
// binaries are built from the right source whatever folder a test or a tool
// runs in.
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("failed to find the kmsproxy repository with go list -m (run this inside the repository): %w", err)
	}
	path, dir, ok := strings.Cut(string(bytes.TrimSpace(out)), " ")
	if !ok || path != Module || dir == "" {
		return "", fmt.Errorf("not inside the kmsproxy repository: the working directory belongs to module %q", path)
	}
	return dir, nil
}

// CleanEnv is this process's environment without AWS and kmsproxy
// settings, plus extra: nothing started with it can reach real AWS or pick
// up the developer's configuration (shared config and credentials files,
// IMDS).
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "KMSPROXY_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true")
	return append(env, extra...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// RepoRootT is RepoRoot for tests: it fails tb when the repository cannot
// be found.
func RepoRootT(tb testing.TB) string {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return root
}

// RequireToolsEnv, set to 1 (as CI does once it has installed them), turns
// a missing optional tool from a skip into a failure.
const RequireToolsEnv = "KMSPROXY_REQUIRE_TOOLS"

// RequireTool returns the path of an optional tool: the first of candidates
// (full paths preferred, e.g. Debian's /usr/bin/aws over another aws on
// PATH) and then name that is installed. Without one, tb is skipped with a
// message, or fails under KMSPROXY_REQUIRE_TOOLS=1.
func RequireTool(tb testing.TB, name string, candidates ...string) string {
	tb.Helper()
	for _, c := range append(candidates, name) {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	MissingTool(tb, "%s is not installed (looked for %s)", name, strings.Join(append(candidates, name), ", "))
	return ""
}

// MissingTool skips tb saying what is missing or, under
// KMSPROXY_REQUIRE_TOOLS=1, fails it.
func MissingTool(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireToolsEnv) == "1" {
		tb.Fatalf("%s, and %s=1 requires it", msg, RequireToolsEnv)
	}
	tb.Skipf("skipping: %s (set %s=1 to make this a failure)", msg, RequireToolsEnv)
}
