// Package relay is a byte relay that records everything it forwards. The
// end-to-end tests put it where the parent instance sits between kmsproxyd
// and KMS (beside or instead of the vsock-proxy stand-in), so they can show
// exactly what the parent can see: the recording must hold TLS records and
// nothing a secret could be read from.
package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// MaxRecorded bounds the bytes one Relay keeps, over all connections and
// both directions. The isolation test forwards well under a megabyte; the
// bound only keeps a runaway test from exhausting memory. Past it the relay
// still forwards but stops recording and reports Truncated.
const MaxRecorded = 64 << 20

// dialTimeout bounds dialing the target for one accepted connection, like a
// vsock-proxy that cannot reach its endpoint.
const dialTimeout = 5 * time.Second

// Direction is which way bytes travelled.
type Direction int

const (
	// ToTarget is from the connecting side (kmsproxyd) to the target (KMS).
	ToTarget Direction = iota
	// FromTarget is from the target back to the connecting side.
	FromTarget
)

func (d Direction) String() string {
	if d == ToTarget {
		return "to target"
	}
	return "from target"
}

// Stream is what one connection carried in one direction.
type Stream struct {
	Conn      int // connection number, from 1 in accept order
	Direction Direction
	Data      []byte
}

// Relay accepts connections on a listener, dials the target for each and
// copies bytes both ways, recording them. It is safe for concurrent use.
type Relay struct {
	ln   net.Listener
	dial func(context.Context) (net.Conn, error)
	wg   sync.WaitGroup

	mu        sync.Mutex
	conns     map[int]*pair
	streams   []*recording
	accepted  int
	active    int
	maxActive int
	recorded  int
	truncated bool
	closed    bool
}

type pair struct{ client, target net.Conn }

type recording struct {
	conn int
	dir  Direction
	data []byte
}

// New starts relaying connections accepted on ln to connections that dial
// opens. Close stops it.
func New(ln net.Listener, dial func(context.Context) (net.Conn, error)) *Relay {
	r := &Relay{ln: ln, dial: dial, conns: map[int]*pair{}}
	r.wg.Go(r.serve)
	return r
}

// To returns a dial function for New that dials network and address.
func To(network, address string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, address)
	}
}

// Addr is the address the relay accepts connections on.
func (r *Relay) Addr() net.Addr { return r.ln.Addr() }

func (r *Relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.accepted++
		id := r.accepted
		r.active++
		r.maxActive = max(r.maxActive, r.active)
		r.conns[id] = &pair{client: c}
		r.mu.Unlock()
		r.wg.Go(func() { r.handle(id, c) })
	}
}

func (r *Relay) handle(id int, c net.Conn) {
	var once sync.Once
	ended := func() { // the connecting side is done sending
		once.Do(func() {
			r.mu.Lock()
			r.active--
			r.mu.Unlock()
		})
	}
	defer func() {
		ended()
		r.mu.Lock()
		delete(r.conns, id)
		r.mu.Unlock()
	}()
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	t, err := r.dial(ctx)
	cancel()
	if err != nil {
		return // as vsock-proxy does: the caller sees the connection close
	}
	defer t.Close()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.conns[id].target = t
	up := &recording{conn: id, dir: ToTarget}
	down := &recording{conn: id, dir: FromTarget}
	r.streams = append(r.streams, up, down)
	r.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() {
		r.copy(t, c, up)
		ended()
		closeWrite(t)
	})
	r.copy(c, t, down)
	closeWrite(c)
	wg.Wait()
}

// copy forwards src to dst, recording what it forwards, until either fails.
func (r *Relay) copy(dst io.Writer, src io.Reader, rec *recording) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.record(rec, buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (r *Relay) record(rec *recording, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recorded+len(p) > MaxRecorded {
		r.truncated = true
		return
	}
	r.recorded += len(p)
	rec.data = append(rec.data, p...)
}

// closeWrite half-closes c when it can, so that the other side sees EOF
// while the reverse direction keeps flowing; otherwise it closes c.
func closeWrite(c io.Closer) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}

// Close stops accepting, cuts every open connection and waits for the
// relay's goroutines. It is safe to call more than once.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	for _, p := range r.conns {
		p.client.Close()
		if p.target != nil {
			p.target.Close()
		}
	}
	r.mu.Unlock()
	err := r.ln.Close()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Streams returns a copy of what every connection carried so far, two
// streams per connection that reached the target, in accept order.
func (r *Relay) Streams() []Stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Stream, 0, len(r.streams))
	for _, s := range r.streams {
		out = append(out, Stream{Conn: s.conn, Direction: s.dir, Data: append([]byte(nil), s.data...)})
	}
	return out
}

// Stats are counters of a relay's connections. A connection counts as
// active from its accept until the connecting side stops sending (closes
// or shuts its write side): the relay may keep the target side open a
// little longer to deliver the target's last bytes, but the connecting
// side no longer uses it.
type Stats struct {
	Accepted  int  // connections accepted so far
	Active    int  // connections whose connecting side is open now
	MaxActive int  // most connections active at once
	Recorded  int  // bytes recorded
	Truncated bool // MaxRecorded was reached and later bytes were not recorded
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Accepted: r.accepted, Active: r.active, MaxActive: r.maxActive, Recorded: r.recorded, Truncated: r.truncated}
}
