package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// Soak targets: after warm-up, kmsproxyd's memory and goroutines
// grow by at most 10 % over the run, and no request fails.
const targetSoakGrowth = 0.10

// soakMaxOutstanding bounds requests in flight in the paced load: at 200/s
// and a few milliseconds each, a handful are; thousands mean kmsproxyd has
// stalled, and the soak records errors instead of piling up goroutines.
const soakMaxOutstanding = 2000

// soakRest is how long the start and end samples wait after closing the
// client's idle connections, for kmsproxyd's goroutines serving them to
// see the connections close and return.
const soakRest = 500 * time.Millisecond

// soakBurst is the concurrency of the burst that ends the warm-up: more
// than kmsproxyd's upstream workers (2 per connection, 4 connections by
// default), so that every upstream connection opens.
const soakBurst = 16

type soakSample struct {
	at         time.Duration
	rss        int64
	goroutines int
	upstream   int // open upstream connections
}

func runSoak(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./test/bench soak [flags]

Runs kmsproxyd at a fixed request rate (open loop: requests are sent on
schedule whether or not earlier ones are answered) and reports its resident
memory and goroutines after warm-up and at the end, their growth, and the
errors (targets: growth ≤ 10 %, 0 errors).

Examples:
  go run ./test/bench soak                   # 10 minutes at 200 requests/s
  go run ./test/bench soak -duration 1m      # a short check

Flags:
`)
		fs.PrintDefaults()
	}
	duration := fs.Duration("duration", 10*time.Minute, "how long the soak runs after warm-up")
	rate := fs.Float64("rate", 200, "requests per second")
	warmup := fs.Duration("warmup", 30*time.Second, "load at the same rate before the start sample")
	every := fs.Duration("every", 30*time.Second, "progress line interval")
	keep := fs.Bool("keep", false, "keep the working directory (logs, CA, configuration)")
	strict := fs.Bool("strict", false, "exit 1 when a target is missed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *duration <= 0 || *rate <= 0 || *warmup < 0 || *every <= 0 {
		fmt.Fprintln(os.Stderr, "bench: error: soak takes positive -duration, -rate, -every and a non-negative -warmup, and no arguments")
		return 2
	}
	w, err := newWorld(ctx, os.Stderr, *keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	command := strings.TrimSpace("go run ./test/bench soak " + strings.Join(args, " "))
	t, err := soak(ctx, w, *duration, *rate, *warmup, *every, command)
	w.close(*keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	t.print(os.Stdout)
	if *strict && t.missed() > 0 {
		return 1
	}
	return 0
}

func soak(ctx context.Context, w *world, duration time.Duration, rate float64, warmup, every time.Duration, command string) (*table, error) {
	t := &table{header: []string{
		"kmsproxy soak, " + time.Now().UTC().Format("2006-01-02 15:04 MST"),
		"machine: " + machine(),
		"load average at start: " + loadAverage(),
		"command: " + command,
	}}
	builds, _ := chooseBuilds(ctx, false)
	w.say("building devkms and kmsproxyd: %s", builds[0].label)
	if err := w.buildAll(builds[:1]); err != nil {
		return nil, err
	}
	w.say("starting devkms and kmsproxyd")
	if err := w.setup(); err != nil {
		return nil, err
	}
	d, err := w.startKmsproxyd("kmsproxyd", w.binary(builds[0], "kmsproxyd"), nil)
	if err != nil {
		return nil, err
	}
	if err := d.waitSettled(ctx); err != nil {
		return nil, err
	}
	// One shared client, as one parent application with a connection pool.
	hc := unixClient(d.sock, 64)
	call := proxyDecrypt(hc, w.blob, w.plaintext)
	sample := func(at time.Duration) (soakSample, error) {
		rss, _, err := memory(d.pid())
		if err != nil {
			return soakSample{}, err
		}
		m, err := d.metrics()
		if err != nil {
			return soakSample{}, err
		}
		g, ok := m["go_goroutines"]
		if !ok {
			return soakSample{}, errors.New("no go_goroutines in kmsproxyd's /metrics")
		}
		return soakSample{at: at, rss: rss, goroutines: int(g), upstream: int(m["kmsproxy_upstream_connections"])}, nil
	}
	// atRest samples with no request in flight and the client's idle
	// connections closed: each open connection has a goroutine in
	// kmsproxyd, and how many the client's pool holds at a given moment
	// says nothing about leaks.
	atRest := func(at time.Duration) (soakSample, error) {
		hc.CloseIdleConnections()
		time.Sleep(soakRest)
		return sample(at)
	}

	if warmup > 0 {
		w.say("warm-up: %s at %.0f requests/s", warmup, rate)
		r := openLoop(ctx, rate, warmup, soakMaxOutstanding, call, 0, nil)
		if r.errors > 0 {
			return nil, w.failed(d.proc, fmt.Errorf("warm-up: %s", r.errorText()))
		}
	}
	// End the warm-up with a burst that opens every upstream connection
	// kmsproxyd may keep (--upstream-conns): the paced load alone opens
	// them one by one as bursts happen over the run, and each adds two
	// goroutines, which would pass for growth.
	if r := closedLoop(ctx, soakBurst, 8*soakBurst, 0, func(int) caller { return call }); r.errors > 0 {
		return nil, w.failed(d.proc, fmt.Errorf("warm-up burst: %s", r.errorText()))
	}
	first, err := atRest(0)
	if err != nil {
		return nil, err
	}
	w.say("soak: %s at %.0f requests/s; start: RSS %s, %d goroutines", duration, rate, mib(first.rss), first.goroutines)
	minRSS, maxRSS := first.rss, first.rss
	minG, maxG := first.goroutines, first.goroutines
	var sampleErr error
	r := openLoop(ctx, rate, duration, soakMaxOutstanding, call, every, func(el time.Duration, sofar result) {
		s, err := sample(el)
		if err != nil {
			sampleErr = err
			return
		}
		minRSS, maxRSS = min(minRSS, s.rss), max(maxRSS, s.rss)
		minG, maxG = min(minG, s.goroutines), max(maxG, s.goroutines)
		w.say("%6s: %d requests, %d errors, p99 %s, RSS %s, %d goroutines",
			el.Round(time.Second), sofar.n, sofar.errors, ms(sofar.pct(99)), mib(s.rss), s.goroutines)
	})
	if sampleErr != nil {
		return nil, sampleErr
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	last, err := atRest(r.elapsed)
	if err != nil {
		return nil, err
	}
	minRSS, maxRSS = min(minRSS, last.rss), max(maxRSS, last.rss)
	minG, maxG = min(minG, last.goroutines), max(maxG, last.goroutines)
	rssGrowth := float64(last.rss-first.rss) / float64(first.rss)
	gGrowth := float64(last.goroutines-first.goroutines) / float64(first.goroutines)

	t.add("requests (paced, open loop)", fmt.Sprintf("%d in %s = %.1f/s", r.n, r.elapsed.Round(time.Second), r.rate()), fmt.Sprintf("%.0f/s", rate), nil,
		fmt.Sprintf("sent on schedule whether or not earlier ones were answered, after %s of warm-up at the same rate and a burst of %d concurrent requests", warmup, soakBurst))
	t.check("errors", float64(r.errors), fmt.Sprintf("%d of %d", r.errors, r.n), atMost(0, countF), strings.TrimPrefix(firstError(r), "; "))
	t.add("latency p50 / p99 / max", fmt.Sprintf("%s / %s / %s", ms(r.pct(50)), ms(r.pct(99)), ms(r.pct(100))), "reported", nil,
		"measured from the time each request was due")
	t.add("kmsproxyd RSS: start (after warm-up) → end", fmt.Sprintf("%s → %s = %+.1f%%", mib(first.rss), mib(last.rss), 100*rssGrowth),
		"growth ≤ 10%", ptr(rssGrowth <= targetSoakGrowth),
		fmt.Sprintf("VmRSS at rest (%s after the last request, the client's idle connections closed); between %s and %s under load at the %s samples", soakRest, mib(minRSS), mib(maxRSS), every))
	t.add("kmsproxyd goroutines: start → end", fmt.Sprintf("%d → %d = %+.1f%%", first.goroutines, last.goroutines, 100*gGrowth),
		"growth ≤ 10%", ptr(gGrowth <= targetSoakGrowth),
		fmt.Sprintf("go_goroutines from /metrics at rest, as RSS, with %d → %d upstream connections open (2 goroutines each, at most --upstream-conns, opened by a burst at the end of the warm-up); between %d and %d under load, where each open client connection adds one",
			first.upstream, last.upstream, minG, maxG))

	if err := w.stop(d.proc); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(d.logPath); err == nil && strings.Contains(string(b), `"level":"ERROR"`) {
		return nil, w.failed(d.proc, errors.New("kmsproxyd logged an error during the soak"))
	}
	return t, nil
}
