// Package transport is the one parser for kmsproxy's address syntax and the
// place where those addresses become net.Listeners and net.Conns.
//
//	vsock://CID:PORT      dial (or listen on a given CID); vsock://:PORT listens on the local CID
//	tcp://HOST:PORT       TCP
//	unix:///absolute/path unix stream socket
//
// Everything above this package sees only net.Listener and net.Conn, so tests
// replace vsock with unix sockets or loopback TCP without other changes.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Network names an address family.
type Network string

const (
	VSOCK Network = "vsock"
	TCP   Network = "tcp"
	Unix  Network = "unix"
)

// AnyCID marks a vsock listen address without a CID ("vsock://:PORT").
const AnyCID = ^uint32(0)

// maxUnixPath is the longest unix socket path Linux accepts (sun_path is 108
// bytes including the terminating NUL; unix(7)).
const maxUnixPath = 107

// Addr is a parsed kmsproxy address.
type Addr struct {
	Network  Network
	CID      uint32 // vsock; AnyCID for "vsock://:PORT"
	Port     uint32 // vsock
	HostPort string // tcp: "host:port"
	Path     string // unix: absolute path
}

// String returns the address in kmsproxy's syntax.
func (a Addr) String() string {
	switch a.Network {
	case VSOCK:
		if a.CID == AnyCID {
			return fmt.Sprintf("vsock://:%d", a.Port)
		}
		return fmt.Sprintf("vsock://%d:%d", a.CID, a.Port)
	case TCP:
		return "tcp://" + a.HostPort
	case Unix:
		return "unix://" + a.Path
	}
	return ""
}

// Parse parses an address in kmsproxy's syntax. The error says what is wrong
// and shows the accepted forms.
func Parse(s string) (Addr, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Addr{}, fmt.Errorf("address %q: want vsock://CID:PORT, tcp://HOST:PORT or unix:///path", s)
	}
	switch Network(scheme) {
	case VSOCK:
		cidStr, portStr, ok := strings.Cut(rest, ":")
		if !ok {
			return Addr{}, fmt.Errorf("address %q: want vsock://CID:PORT or vsock://:PORT", s)
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil {
			return Addr{}, fmt.Errorf("address %q: port %q is not a number", s, portStr)
		}
		a := Addr{Network: VSOCK, CID: AnyCID, Port: uint32(port)}
		if cidStr != "" {
			cid, err := strconv.ParseUint(cidStr, 10, 32)
			if err != nil || uint32(cid) == AnyCID {
				return Addr{}, fmt.Errorf("address %q: CID %q is not a number below 2^32-1", s, cidStr)
			}
			a.CID = uint32(cid)
		}
		return a, nil
	case TCP:
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return Addr{}, fmt.Errorf("address %q: want tcp://HOST:PORT: %v", s, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
			return Addr{}, fmt.Errorf("address %q: port %q is not a number from 0 to 65535", s, port)
		}
		return Addr{Network: TCP, HostPort: net.JoinHostPort(host, port)}, nil
	case Unix:
		if !filepath.IsAbs(rest) {
			return Addr{}, fmt.Errorf("address %q: want unix:///absolute/path", s)
		}
		if len(rest) > maxUnixPath {
			return Addr{}, fmt.Errorf("address %q: path longer than %d bytes", s, maxUnixPath)
		}
		return Addr{Network: Unix, Path: filepath.Clean(rest)}, nil
	}
	return Addr{}, fmt.Errorf("address %q: unknown scheme %q (want vsock, tcp or unix)", s, scheme)
}

// Listen returns a listener for a. A stale unix socket file left by a
// previous run (nobody accepts on it) is replaced; a live one is an error.
func Listen(a Addr) (net.Listener, error) {
	switch a.Network {
	case VSOCK:
		return listenVsock(a.CID, a.Port)
	case TCP:
		return net.Listen("tcp", a.HostPort)
	case Unix:
		if err := removeStaleSocket(a.Path); err != nil {
			return nil, err
		}
		return net.Listen("unix", a.Path)
	}
	return nil, fmt.Errorf("failed to listen: empty address")
}

// Dial connects to a. vsock addresses need a CID.
func Dial(ctx context.Context, a Addr) (net.Conn, error) {
	switch a.Network {
	case VSOCK:
		if a.CID == AnyCID {
			return nil, fmt.Errorf("failed to dial %s: a vsock dial address needs a CID", a)
		}
		return dialVsock(ctx, a.CID, a.Port)
	case TCP:
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a.HostPort)
	case Unix:
		var d net.Dialer
		return d.DialContext(ctx, "unix", a.Path)
	}
	return nil, fmt.Errorf("failed to dial: empty address")
}

// DialFunc returns a dial function in http.Transport's DialContext shape that
// ignores the network and address it is given and always dials a: the
// transport's URL keeps naming the real endpoint (for TLS and SigV4) while
// the bytes go through a.
func DialFunc(a Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		return Dial(ctx, a)
	}
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to inspect %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("failed to listen on %s: a file that is not a socket is in the way", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("failed to listen on %s: another process is serving it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("failed to remove stale socket %s: %w", path, err)
	}
	return nil
}
