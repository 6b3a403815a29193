//go:build !linux

package transport

import (
	"context"
	"errors"
	"net"
)

var errNoVsock = errors.New("vsock is only available on Linux")

func listenVsock(cid, port uint32) (net.Listener, error) { return nil, errNoVsock }

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) { return nil, errNoVsock }
