package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var r result
	for i := 100; i >= 1; i-- {
		r.lat = append(r.lat, time.Duration(i)*time.Millisecond)
	}
	r.finish(time.Second)
	tests := []struct {
		name string
		p    float64
		want time.Duration
	}{
		{"p50", 50, 50 * time.Millisecond},
		{"p90", 90, 90 * time.Millisecond},
		{"p99", 99, 99 * time.Millisecond},
		{"max", 100, 100 * time.Millisecond},
		{"smallest", 0.5, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.pct(tt.p); got != tt.want {
				t.Errorf("pct(%v) = %s, want %s", tt.p, got, tt.want)
			}
		})
	}
	var empty result
	if got := empty.pct(50); got != 0 {
		t.Errorf("pct of no samples = %s, want 0", got)
	}
}

func TestClosedLoopCount(t *testing.T) {
	var calls atomic.Int64
	fail := errors.New("every tenth call fails")
	r := closedLoop(context.Background(), 8, 100, 0, func(int) caller {
		return func(context.Context) error {
			if calls.Add(1)%10 == 0 {
				return fail
			}
			return nil
		}
	})
	if r.n != 100 || calls.Load() != 100 || r.errors != 10 || !errors.Is(r.firstErr, fail) || len(r.lat) != 100 {
		t.Errorf("closedLoop sent %d (calls %d), %d errors (%v), %d latencies; want 100, 10 errors", r.n, calls.Load(), r.errors, r.firstErr, len(r.lat))
	}
}

func TestClosedLoopDurationLetsRequestsFinish(t *testing.T) {
	var inFlight, maxAfterEnd atomic.Int64
	start := time.Now()
	r := closedLoop(context.Background(), 4, 0, 100*time.Millisecond, func(int) caller {
		return func(ctx context.Context) error {
			inFlight.Add(1)
			defer inFlight.Add(-1)
			select {
			case <-time.After(30 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err() // cut off: the loop must not do this
			}
			if time.Since(start) > 100*time.Millisecond {
				maxAfterEnd.Add(1)
			}
			return nil
		}
	})
	if r.errors != 0 {
		t.Fatalf("requests under way at the end were cut off: %v", r.firstErr)
	}
	if maxAfterEnd.Load() == 0 || r.n < 4 {
		t.Errorf("%d requests, %d finished after the end; want the last ones counted", r.n, maxAfterEnd.Load())
	}
}

func TestOpenLoopKeepsSchedule(t *testing.T) {
	var ticks, inFlight, peak atomic.Int64
	r := openLoop(context.Background(), 100, 500*time.Millisecond, 1000, func(context.Context) error {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(50 * time.Millisecond) // slower than the 10ms period
		inFlight.Add(-1)
		return nil
	}, 100*time.Millisecond, func(time.Duration, result) { ticks.Add(1) })
	if r.n != 50 || r.errors != 0 {
		t.Errorf("sent %d with %d errors, want 50 and 0", r.n, r.errors)
	}
	if peak.Load() < 2 {
		t.Errorf("at most %d request in flight: the loop waited for answers", peak.Load())
	}
	if n := ticks.Load(); n != 4 {
		t.Errorf("%d progress ticks in 500ms every 100ms, want 4", n)
	}
	if r.pct(50) < 50*time.Millisecond {
		t.Errorf("p50 %s is shorter than the call itself", r.pct(50))
	}
}

func TestOpenLoopBoundsOutstanding(t *testing.T) {
	release := make(chan struct{})
	done := make(chan result)
	go func() {
		done <- openLoop(context.Background(), 1000, 50*time.Millisecond, 5, func(context.Context) error {
			<-release
			return nil
		}, 0, nil)
	}()
	time.Sleep(100 * time.Millisecond)
	close(release)
	r := <-done
	if r.n != 50 || r.errors != 45 {
		t.Errorf("sent %d, %d errors; want 50 of which 45 over the 5 outstanding", r.n, r.errors)
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	before, err := cpuTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Work until the CPU time grows by a few clock ticks (bounded).
	after := before
	for deadline := time.Now().Add(10 * time.Second); after-before < 50*time.Millisecond && time.Now().Before(deadline); {
		for end := time.Now().Add(10 * time.Millisecond); time.Now().Before(end); {
		}
		if after, err = cpuTime(pid); err != nil {
			t.Fatal(err)
		}
	}
	if after-before < 50*time.Millisecond {
		t.Errorf("/proc/self/stat: CPU time grew by %s in 10s of spinning", after-before)
	}
	rss, hwm, err := memory(pid)
	if err != nil || rss <= 0 || hwm < rss {
		t.Errorf("memory = %d, %d, %v; want 0 < VmRSS ≤ VmHWM", rss, hwm, err)
	}
	anon, file, err := rssSplit(pid)
	if err != nil || anon <= 0 || file <= 0 {
		t.Errorf("rssSplit = %d, %d, %v", anon, file, err)
	}
	if _, err := cpuTime(-1); err == nil {
		t.Error("cpuTime of a process that does not exist succeeded")
	}
}

func TestTablePrint(t *testing.T) {
	tb := &table{header: []string{"kmsproxy benchmark"}}
	tb.add("met", "1", "≤ 2", ptr(true), "one")
	tb.add("missed", "3", "≤ 2", ptr(false), "")
	tb.add("reported", "4", "reported", nil, "four")
	tb.note("a note")
	var out strings.Builder
	tb.print(&out)
	got := out.String()
	for _, want := range []string{"1  met", "PASS", "MISS", "—", "1 targets met, 1 missed", "  1  one", "  3  four", "  - a note"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "  2  \n") {
		t.Errorf("a row without details has a details line:\n%s", got)
	}
	if tb.missed() != 1 {
		t.Errorf("missed() = %d, want 1", tb.missed())
	}
}
