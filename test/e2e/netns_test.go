package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// netnsPrefix names the namespaces these tests create: prefix, the test
// binary's PID, a counter.
const netnsPrefix = "kpe2e-"

var netnsSeq atomic.Int64

// newNetns creates a network namespace with only lo (down), deleted when
// the test ends. It skips without root or ip (fails with
// KMSPROXY_REQUIRE_TOOLS=1 when ip is missing).
func newNetns(t testing.TB) string {
	t.Helper()
	requireNetns(t)
	removeStaleNetns()
	name := fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		harness.MissingTool(t, "cannot create a network namespace (ip netns add: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// requireNetns skips t unless it can create network namespaces: root and
// ip (a missing ip fails with KMSPROXY_REQUIRE_TOOLS=1).
func requireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: network namespaces need root (the enclave side runs in its own namespace)")
	}
	harness.RequireTool(t, "ip")
}

// removeStaleNetns deletes namespaces an earlier run of these tests left
// behind when it was killed before its cleanup (its PID is gone).
func removeStaleNetns() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// inNetns prefixes argv to run it inside the stack's namespace.
func (s *stack) inNetns(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", s.ns}, argv...)
}
