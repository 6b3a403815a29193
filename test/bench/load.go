package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// maxAnswer bounds the answers the benchmark reads: a Decrypt answer with
// a 32-byte plaintext, or with a CiphertextForRecipient of a few hundred
// bytes, is well under 4 KiB; errors are a short JSON object.
const maxAnswer = 64 << 10

// caller sends one request and checks its answer.
type caller func(ctx context.Context) error

// proxyDecrypt returns a caller that sends the benchmark's Decrypt to
// kmsproxyd as a parent app does: KMS JSON 1.1, no Recipient, on hc's
// connections, and checks the plaintext. kmsproxyd ignores request
// signatures (kmsproxyd ignores them), so the benchmark sends none, and the client side
// costs the same on every request.
func proxyDecrypt(hc *http.Client, blob, want []byte) caller {
	body, _ := json.Marshal(map[string][]byte{"CiphertextBlob": blob})
	return func(ctx context.Context) error {
		b, err := post(ctx, hc, "http://kmsproxyd/", body, nil)
		if err != nil {
			return err
		}
		var out struct{ Plaintext []byte }
		if err := json.Unmarshal(b, &out); err != nil {
			return fmt.Errorf("kmsproxyd answered malformed JSON: %w", err)
		}
		if !bytes.Equal(out.Plaintext, want) {
			return errors.New("kmsproxyd answered a wrong plaintext")
		}
		return nil
	}
}

// sdkDecrypt returns a caller that sends the benchmark's Decrypt with an
// aws-sdk-go-v2 KMS client, as a parent app does through the client
// package, and checks the plaintext.
func sdkDecrypt(c *kms.Client, blob, want []byte) caller {
	return func(ctx context.Context) error {
		out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob})
		if err != nil {
			return fmt.Errorf("failed to decrypt through kmsproxyd: %w", err)
		}
		if !bytes.Equal(out.Plaintext, want) {
			return errors.New("kmsproxyd answered a wrong plaintext")
		}
		return nil
	}
}

// post sends one KMS Decrypt request and returns the body of a 200 answer;
// another status is an error naming the exception.
func post(ctx context.Context, hc *http.Client, url string, body []byte, sign func(*http.Request) error) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", kmsapi.ContentType)
	req.Header.Set(kmsapi.TargetHeader, kmsapi.TargetPrefix+"Decrypt")
	if sign != nil {
		if err := sign(req); err != nil {
			return nil, err
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &e)
		return nil, fmt.Errorf("HTTP %d %s: %s", resp.StatusCode, e.Type, e.Message)
	}
	return b, nil
}

// result is what a load run saw.
type result struct {
	n        int             // requests finished
	errors   int             // of which failed
	firstErr error           // the first failure
	lat      []time.Duration // latency of every request, sorted
	elapsed  time.Duration
}

func (r *result) add(o result) {
	r.n += o.n
	r.errors += o.errors
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
	r.lat = append(r.lat, o.lat...)
}

func (r *result) finish(elapsed time.Duration) {
	slices.Sort(r.lat)
	r.elapsed = elapsed
}

// pct is the p-th percentile (0 < p ≤ 100) by nearest rank.
func (r *result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.lat)))) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

func (r *result) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r *result) errorText() string {
	if r.errors == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (first: %v)", r.errors, r.firstErr)
}

// cpuDuring sends n requests from clients concurrent callers made by
// newCaller and returns the CPU time p's threads ran meanwhile (threadsCPU),
// the same from /proc/PID/stat's clock ticks (cpuTime, for a cross-check),
// and how many requests completed. A failed request, or none completing,
// is an error with p's log.
func (w *world) cpuDuring(ctx context.Context, p *proc, clients, n int, newCaller func(worker int) caller) (cpu, ticks time.Duration, done int, err error) {
	c0, err := threadsCPU(p.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	t0, err := cpuTime(p.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	r := closedLoop(ctx, clients, n, 0, newCaller)
	c1, err := threadsCPU(p.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	t1, err := cpuTime(p.pid())
	if err != nil {
		return 0, 0, 0, err
	}
	if r.errors > 0 {
		return 0, 0, 0, w.failed(p, fmt.Errorf("%d of %d Decrypts failed%s", r.errors, r.n, firstError(r)))
	}
	if r.n == 0 {
		return 0, 0, 0, w.failed(p, fmt.Errorf("no Decrypt completed (%v)", ctx.Err()))
	}
	return c1 - c0, t1 - t0, r.n, nil
}

// closedLoop runs workers that each send a request as soon as their last
// one is answered, until total requests have been sent (total > 0) or
// until d has passed (d > 0). A request under way at the end is let finish
// and counted: cutting it off would leave kmsproxyd working on it during
// the next measurement. newCaller gives each worker its caller (its own
// connection, when the caller's client keeps one).
func closedLoop(ctx context.Context, workers, total int, d time.Duration, newCaller func(worker int) caller) result {
	var (
		sent atomic.Int64
		mu   sync.Mutex
		all  result
		wg   sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for i := range workers {
		call := newCaller(i)
		wg.Go(func() {
			var r result
			r.lat = make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				if total > 0 && sent.Add(1) > int64(total) {
					break
				}
				t := time.Now()
				if d > 0 && !t.Before(end) {
					break
				}
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := call(rctx)
				cancel()
				r.lat = append(r.lat, time.Since(t))
				r.n++
				if err != nil {
					r.errors++
					if r.firstErr == nil {
						r.firstErr = err
					}
				}
			}
			mu.Lock()
			all.add(r)
			mu.Unlock()
		})
	}
	wg.Wait()
	all.finish(time.Since(start))
	return all
}

// openLoop sends rate requests per second for d on a fixed schedule,
// whether or not earlier ones have been answered (a paced, open-loop load),
// and measures each latency from the time it was due, so that a stall
// shows in the latencies instead of slowing the load. At most maxOutstanding
// requests are in flight; a request due beyond that counts as an error.
// tick, if set, is called every interval with the results so far.
func openLoop(ctx context.Context, rate float64, d time.Duration, maxOutstanding int, call caller,
	interval time.Duration, tick func(elapsed time.Duration, sofar result)) result {
	period := time.Duration(float64(time.Second) / rate)
	var (
		mu  sync.Mutex
		all result
		wg  sync.WaitGroup
	)
	record := func(lat time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		all.n++
		all.lat = append(all.lat, lat)
		if err != nil {
			all.errors++
			if all.firstErr == nil {
				all.firstErr = err
			}
		}
	}
	slots := make(chan struct{}, maxOutstanding)
	start := time.Now()
	nextTick := start.Add(interval)
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * period)
		if due.Sub(start) >= d {
			break
		}
		if wait := time.Until(due); wait > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
		if ctx.Err() != nil {
			break
		}
		if tick != nil && interval > 0 && !due.Before(nextTick) {
			mu.Lock()
			sofar := result{n: all.n, errors: all.errors, firstErr: all.firstErr, lat: slices.Clone(all.lat)}
			mu.Unlock()
			sofar.finish(time.Since(start))
			tick(time.Since(start), sofar)
			nextTick = nextTick.Add(interval)
		}
		select {
		case slots <- struct{}{}:
		default:
			record(0, fmt.Errorf("over %d requests outstanding", maxOutstanding))
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := call(rctx)
			record(time.Since(due), err)
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	all.finish(time.Since(start))
	return all
}
