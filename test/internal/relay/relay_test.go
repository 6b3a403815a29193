package relay

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// echoServer answers every connection with what it read, after the client
// half-closed, then closes.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	return ln
}

func startRelay(t *testing.T, target string) *Relay {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "r.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r := New(ln, To("tcp", target))
	t.Cleanup(func() { r.Close() })
	return r
}

func roundTrip(t *testing.T, r *Relay, msg []byte) []byte {
	t.Helper()
	c, err := net.Dial("unix", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.(*net.UnixConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestRelayForwardsAndRecords(t *testing.T) {
	target := echoServer(t)
	r := startRelay(t, target.Addr().String())
	got := roundTrip(t, r, []byte("hello"))
	if string(got) != "echo:hello" {
		t.Fatalf("through the relay: %q, want %q", got, "echo:hello")
	}
	big := bytes.Repeat([]byte("0123456789"), 20000)
	if got := roundTrip(t, r, big); !bytes.Equal(got, append([]byte("echo:"), big...)) {
		t.Fatalf("a 200 kB message came back as %d bytes", len(got))
	}

	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Active > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	streams := r.Streams()
	want := []Stream{
		{1, ToTarget, []byte("hello")}, {1, FromTarget, []byte("echo:hello")},
		{2, ToTarget, big}, {2, FromTarget, append([]byte("echo:"), big...)},
	}
	if len(streams) != len(want) {
		t.Fatalf("%d streams recorded, want %d", len(streams), len(want))
	}
	for i, s := range streams {
		if s.Conn != want[i].Conn || s.Direction != want[i].Direction || !bytes.Equal(s.Data, want[i].Data) {
			t.Errorf("stream %d: conn %d %s, %d bytes; want conn %d %s, %d bytes", i, s.Conn, s.Direction, len(s.Data), want[i].Conn, want[i].Direction, len(want[i].Data))
		}
	}
	st := r.Stats()
	if st.Accepted != 2 || st.Active != 0 || st.MaxActive != 1 || st.Truncated || st.Recorded != 2*len(big)+len("hello")*2+10 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestRelayCountsConcurrentConnections(t *testing.T) {
	target := echoServer(t)
	r := startRelay(t, target.Addr().String())
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("unix", r.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Stats().Active < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := r.Stats(); st.Active != 3 || st.MaxActive != 3 {
		t.Errorf("with 3 open connections: %+v", st)
	}
	// Close cuts open connections and returns.
	done := make(chan struct{})
	go func() { r.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with connections open")
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a connection stayed open after Close")
		}
		c.Close()
	}
}

func TestRelayClosesWhenTargetIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	r := startRelay(t, addr)
	c, err := net.Dial("unix", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if err != io.EOF {
		t.Errorf("Read = %d, %v; want EOF, as vsock-proxy closes a connection it cannot forward", n, err)
	}
	if s := r.Streams(); len(s) != 0 {
		t.Errorf("%d streams recorded for a connection that never reached the target", len(s))
	}
}

// TestRelayActiveEndsWithTheConnectingSide: a connection whose client has
// gone no longer counts as active, even while the target has not answered.
func TestRelayActiveEndsWithTheConnectingSide(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-release // a slow target: answers only when released
	}()
	r := startRelay(t, ln.Addr().String())
	c, err := net.Dial("unix", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitActive := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for r.Stats().Active != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := r.Stats().Active; got != want {
			t.Fatalf("Active = %d, want %d", got, want)
		}
	}
	waitActive(1)
	c.Close()
	waitActive(0)
	close(release)
}
