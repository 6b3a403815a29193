package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
)

// slowParentPolicy caps the parent's connections; the local listener may
// read every listener's metrics.
const slowParentPolicy = `kms:
  accounts: ["` + account + `"]
listeners:
  parent:
    operations: ["*"]
    plaintext: true
    max_connections: 64
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
    metrics_all_listeners: true
`

// TestSlowParent is the parent's slow-connection attack on a real
// kmsproxyd: 1,000 connections that send a request's headers and never its
// body. kmsproxyd keeps at most the parent's max_connections of them (the
// rest wait in the kernel's backlog), its goroutines and open files stay
// bounded by that, and an app in the enclave is served throughout.
func TestSlowParent(t *testing.T) {
	build(t)
	sc := newScan(t)
	s := startStack(t, sc, stackOptions{policy: slowParentPolicy})
	local, err := clientFor(s.localAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hc, err := client.HTTPClient(s.localAddr)
	if err != nil {
		t.Fatal(err)
	}
	goroutinesBefore, err := metric(hc, "go_goroutines")
	if err != nil {
		t.Fatal(err)
	}
	fdsBefore := openFiles(t, s.kmsproxyd.cmd.Process.Pid)

	const attack = 1000
	head := "POST / HTTP/1.1\r\nHost: kmsproxy.enclave\r\nX-Amz-Target: TrentService.Decrypt\r\n" +
		"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 4096\r\n\r\n"
	opened := 0
	for range attack {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.Dial("unix", s.parentSock)
		if err != nil {
			continue // the backlog is full: the kernel refuses, kmsproxyd never sees it
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte(head)); err == nil {
			opened++
		}
	}
	if err := poll(10*time.Second, func() error {
		v, err := metric(hc, `kmsproxy_open_connections{listener="parent"}`)
		if err == nil && v != 64 {
			err = fmt.Errorf("kmsproxyd holds %v parent connections", v)
		}
		return err
	}); err != nil {
		t.Fatalf("%v, want max_connections 64", err)
	}
	for i := range 20 {
		if _, err := local.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)}); err != nil {
			t.Fatalf("in-enclave app, request %d, beside %d stalled parent connections: %v", i, opened, err)
		}
	}
	goroutines, err := metric(hc, "go_goroutines")
	if err != nil {
		t.Fatal(err)
	}
	fds := openFiles(t, s.kmsproxyd.cmd.Process.Pid)
	t.Logf("%d stalled parent connections: kmsproxyd holds 64; goroutines %v -> %v, open files %d -> %d", opened, goroutinesBefore, goroutines, fdsBefore, fds)
	if goroutines-goroutinesBefore > 2*64+16 {
		t.Errorf("kmsproxyd grew by %v goroutines, want at most %d for 64 connections", goroutines-goroutinesBefore, 2*64+16)
	}
	if fds-fdsBefore > 64+16 {
		t.Errorf("kmsproxyd opened %d more files, want at most %d for 64 connections", fds-fdsBefore, 64+16)
	}
}

// openFiles counts the open file descriptors of process pid.
func openFiles(t testing.TB, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("failed to count kmsproxyd's open files: %v", err)
	}
	return len(entries)
}
