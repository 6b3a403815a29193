package sdkhttp

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBufferBody(t *testing.T) {
	const limit = 1024
	small := bytes.Repeat([]byte("k"), 100)
	tests := []struct {
		name     string
		body     []byte
		length   int64 // ContentLength
		buffered bool
	}{
		{"small", small, int64(len(small)), true},
		{"at the limit", make([]byte, limit), limit, true},
		{"past the limit", make([]byte, limit+1), limit + 1, false},
		{"unknown length", small, -1, false},
		{"empty", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, "http://kms.test/", io.NopCloser(bytes.NewReader(tt.body)))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tt.length
			orig := req.Body
			got, err := BufferBody(req, limit)
			if err != nil {
				t.Fatal(err)
			}
			if req.Body != orig {
				t.Error("BufferBody modified the caller's request")
			}
			if (got != req) != tt.buffered {
				t.Fatalf("buffered = %v, want %v", got != req, tt.buffered)
			}
			if !tt.buffered {
				return
			}
			for range 2 { // Body, then GetBody as for a retry on a new connection
				b, err := io.ReadAll(got.Body)
				if err != nil || !bytes.Equal(b, tt.body) {
					t.Fatalf("buffered body = %d bytes, %v; want the %d bytes", len(b), err, len(tt.body))
				}
				if got.Body, err = got.GetBody(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	short, _ := http.NewRequest(http.MethodPost, "http://kms.test/", io.NopCloser(bytes.NewReader(small)))
	short.ContentLength = int64(len(small)) + 1
	if _, err := BufferBody(short, limit); err == nil {
		t.Error("a body shorter than its Content-Length was accepted")
	}
}

// sdkBody behaves like the SDK's request body at its worst moment: after
// its content, net/http's check for extra bytes blocks until the SDK closes
// the body on receiving the answer, and then fails.
type sdkBody struct {
	r      *bytes.Reader
	closed chan struct{}
	once   sync.Once
}

func newSDKBody(b []byte) *sdkBody {
	return &sdkBody{r: bytes.NewReader(b), closed: make(chan struct{})}
}

func (b *sdkBody) Read(p []byte) (int, error) {
	if b.r.Len() > 0 {
		return b.r.Read(p)
	}
	select {
	case <-b.closed:
		return 0, errors.New("read on a closed request body")
	case <-time.After(10 * time.Second):
		return 0, io.EOF
	}
}

func (b *sdkBody) Close() error { b.once.Do(func() { close(b.closed) }); return nil }

// TestBufferBodiesKeepsConnections sends requests whose SDK-like body is
// closed when the answer arrives, as smithy-go does. Straight through
// net/http that closes the connection every time (net/http takes the
// failed read for a write error); through BufferBodies one connection
// serves them all and every answer is read whole.
func TestBufferBodiesKeepsConnections(t *testing.T) {
	answer := bytes.Repeat([]byte("a"), 64<<10) // read in several pieces
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(answer)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	run := func(rt http.RoundTripper) (failed int) {
		hc := &http.Client{Transport: rt, Timeout: 20 * time.Second}
		defer hc.CloseIdleConnections()
		for range 5 {
			body := newSDKBody([]byte(`{"KeyId":"alias/app"}`))
			req, err := http.NewRequest(http.MethodPost, srv.URL, body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(body.r.Len())
			resp, err := hc.Do(req)
			body.Close() // what smithy-go does when the answer arrives
			if err != nil {
				failed++
				continue
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, answer) {
				failed++
			}
		}
		return failed
	}

	conns.Store(0)
	if failed := run(BufferBodies(&http.Transport{}, 0)); failed != 0 || conns.Load() != 1 {
		t.Errorf("through BufferBodies: %d of 5 requests failed, %d connections; want 0 and 1", failed, conns.Load())
	}
	conns.Store(0)
	failed := run(&http.Transport{})
	t.Logf("straight through net/http: %d of 5 requests failed, %d connections", failed, conns.Load())
	if failed == 0 && conns.Load() == 1 {
		t.Error("the unbuffered case kept its connection: the test does not reproduce the problem")
	}
}
