// Package sdkhttp keeps aws-sdk-go-v2 from breaking net/http's keep-alive
// connections. Every SDK client in kmsproxy (kmsproxyd's upstream, the
// client package for parent apps, the test harnesses) sends its requests
// through BufferBody or BufferBodies.
//
// The SDK's request body is a wrapper net/http does not know to be in
// memory, and the SDK closes it as soon as the answer arrives (smithy-go
// ClientHandler.Handle). net/http's writer, which after sending a body
// still reads it once more to check for bytes beyond its Content-Length
// (net/http transferWriter.writeBody), can then get io.EOF from the closed
// wrapper, takes it for a write error and closes the connection: the next
// request pays for a new connection (a new TLS handshake upstream), and an
// answer still being read when that happens fails with "use of closed
// network connection" (aws/aws-sdk-go-v2 issues 1825 and 2737; the SDK
// retries such errors since aws-sdk-go-v2 PR 2949, but a client without
// retries sees them). With an in-memory copy of the body, nothing the SDK
// does to its own body reaches the connection, and net/http sends headers
// and body in one write.
package sdkhttp

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
)

// MaxBuffered is BufferBodies' default limit: more than any KMS request
// (the largest, PutKeyPolicy, carries a policy of at most 32 KiB).
const MaxBuffered = 256 << 10

// BufferBody returns req with its body replaced by an in-memory copy when
// the body's length is known and at most max bytes; otherwise req itself.
// req is not modified: the SDK still owns, and closes, the original body.
func BufferBody(req *http.Request, max int64) (*http.Request, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength <= 0 || req.ContentLength > max {
		return req, nil
	}
	buf := make([]byte, req.ContentLength)
	if _, err := io.ReadFull(req.Body, buf); err != nil {
		return nil, fmt.Errorf("failed to read the request body: %w", err)
	}
	// A shallow copy, as net/http makes for its own purposes.
	r := *req
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return &r, nil
}

// BufferBodies returns a RoundTripper that sends each request through
// next with its body buffered by BufferBody (bodies up to max bytes;
// max <= 0 means MaxBuffered).
func BufferBodies(next http.RoundTripper, max int64) http.RoundTripper {
	if max <= 0 {
		max = MaxBuffered
	}
	return &buffering{next: next, max: max}
}

type buffering struct {
	next http.RoundTripper
	max  int64
}

func (b *buffering) RoundTrip(req *http.Request) (*http.Response, error) {
	r, err := BufferBody(req, b.max)
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // RoundTrip closes the body, also on errors
		}
		return nil, err
	}
	return b.next.RoundTrip(r)
}

// CloseIdleConnections passes the call on to next, so that
// http.Client.CloseIdleConnections keeps working through BufferBodies.
func (b *buffering) CloseIdleConnections() {
	if c, ok := b.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
