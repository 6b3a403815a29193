package transport

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Addr
		wantErr string
	}{
		{name: "vsock dial", in: "vsock://3:8000", want: Addr{Network: VSOCK, CID: 3, Port: 8000}},
		{name: "vsock listen", in: "vsock://:5000", want: Addr{Network: VSOCK, CID: AnyCID, Port: 5000}},
		{name: "tcp", in: "tcp://127.0.0.1:8000", want: Addr{Network: TCP, HostPort: "127.0.0.1:8000"}},
		{name: "tcp ipv6", in: "tcp://[::1]:8000", want: Addr{Network: TCP, HostPort: "[::1]:8000"}},
		{name: "tcp any port", in: "tcp://127.0.0.1:0", want: Addr{Network: TCP, HostPort: "127.0.0.1:0"}},
		{name: "unix", in: "unix:///run/kmsproxy.sock", want: Addr{Network: Unix, Path: "/run/kmsproxy.sock"}},
		{name: "no scheme", in: "127.0.0.1:8000", wantErr: "want vsock://"},
		{name: "unknown scheme", in: "http://x:1", wantErr: "unknown scheme"},
		{name: "vsock no port", in: "vsock://3", wantErr: "vsock://CID:PORT"},
		{name: "vsock bad cid", in: "vsock://x:1", wantErr: "CID"},
		{name: "vsock reserved cid", in: "vsock://4294967295:1", wantErr: "CID"},
		{name: "vsock bad port", in: "vsock://3:x", wantErr: "port"},
		{name: "tcp no port", in: "tcp://localhost", wantErr: "tcp://HOST:PORT"},
		{name: "tcp big port", in: "tcp://localhost:70000", wantErr: "port"},
		{name: "unix relative", in: "unix://run/x.sock", wantErr: "absolute"},
		{name: "unix too long", in: "unix:///" + strings.Repeat("a", 200), wantErr: "longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestListenDial(t *testing.T) {
	for _, addr := range []string{"tcp://127.0.0.1:0", "unix://" + filepath.Join(t.TempDir(), "s.sock")} {
		t.Run(addr, func(t *testing.T) {
			a, err := Parse(addr)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := Listen(a)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
			if a.Network == TCP {
				a.HostPort = ln.Addr().String()
			}
			// DialFunc ignores the address the HTTP transport asks for.
			c, err := DialFunc(a)(context.Background(), "tcp", "kms.example:443")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo = %q, %v", buf, err)
			}
		})
	}
}

func TestUnixStaleAndLive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	a := Addr{Network: Unix, Path: path}
	ln, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(a); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	// Leave the socket file behind, as a crashed process would.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(a)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()

	plain := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(Addr{Network: Unix, Path: plain}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
}

func TestDialVsockNeedsCID(t *testing.T) {
	// Only the argument check runs: tests never dial a real vsock address.
	_, err := Dial(context.Background(), Addr{Network: VSOCK, CID: AnyCID, Port: 1})
	if err == nil || !strings.Contains(err.Error(), "needs a CID") {
		t.Fatalf("Dial(vsock://:1) = %v", err)
	}
}

const loopbackChildEnv = "KMSPROXY_TRANSPORT_LOOPBACK_CHILD"

// TestBringUpLoopback runs itself again in a new network namespace, where lo
// starts down exactly as in a freshly booted enclave.
func TestBringUpLoopback(t *testing.T) {
	if os.Getenv(loopbackChildEnv) == "1" {
		changed, err := BringUpLoopback()
		if err != nil || !changed {
			t.Fatalf("first BringUpLoopback = %v, %v; want true, nil", changed, err)
		}
		changed, err = BringUpLoopback()
		if err != nil || changed {
			t.Fatalf("second BringUpLoopback = %v, %v; want false, nil", changed, err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen on 127.0.0.1 after bringing lo up: %v", err)
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial 127.0.0.1 after bringing lo up: %v", err)
		}
		c.Close()
		ln.Close()
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil || os.Geteuid() != 0 {
		t.Skip("skipping: needs root and unshare(1) to create a network namespace with lo down")
	}
	cmd := exec.Command(unshare, "-n", os.Args[0], "-test.run=^TestBringUpLoopback$", "-test.v")
	cmd.Env = append(os.Environ(), loopbackChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child in a new network namespace failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestBringUpLoopback") {
		t.Fatalf("child did not run the test:\n%s", out)
	}
}
