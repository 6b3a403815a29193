package transport

import (
	"context"
	"net"

	"github.com/mdlayher/vsock"
)

func listenVsock(cid, port uint32) (net.Listener, error) {
	if cid == AnyCID {
		return vsock.Listen(port, nil)
	}
	return vsock.ListenContextID(cid, port, nil)
}

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	return vsock.DialContext(ctx, cid, port, nil)
}
