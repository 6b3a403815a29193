package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// runAB compares two kmsproxyd builds (or one build under two
// environments) on this machine. The CPUs of a shared virtual machine
// drift by 10-20 % within minutes, more than most changes to kmsproxyd
// move its cost, so two separate runs of the benchmark table cannot tell
// builds apart. ab runs both daemons at once against the same devkms and
// alternates short rounds between them, so drift affects both alike, and
// reports the medians of each and of the per-round ratios B/A.
func runAB(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("ab", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./test/bench ab [flags]

Starts two kmsproxyd daemons, A and B, and alternates rounds between them:
kmsproxyd CPU per Decrypt (4 clients unless -clients), and latency at
concurrency 1; each round starts with one t_floor. Prints the medians of
each, of CPU per Decrypt over t_floor, and of the per-round ratios B/A,
and each daemon's peak RSS.

A and B are this tree's default build (OpenSSL when this machine can
link it, else pure Go; -go-only for pure Go) unless -a or -b names a
binary.

Examples:
  go run ./test/bench ab -b /tmp/kmsproxyd-new            # this tree against a build
  go run ./test/bench ab -b-env GOGC=100,GOMEMLIMIT=off   # this tree, two environments
  go build -o /tmp/floor ./test/bench/floor && go run ./test/bench ab -b /tmp/floor
                                                          # kmsproxyd against the floor daemon

Flags:
`)
		fs.PrintDefaults()
	}
	a := fs.String("a", "", "kmsproxyd binary A (built with -tags nsmsim); empty: this tree's default build")
	goOnly := fs.Bool("go-only", false, "build this tree without OpenSSL")
	b := fs.String("b", "", "kmsproxyd binary B; empty: this tree's default build")
	aEnv := fs.String("a-env", "", "extra environment for A, comma-separated KEY=VALUE")
	bEnv := fs.String("b-env", "", "extra environment for B, comma-separated KEY=VALUE")
	rounds := fs.Int("rounds", 8, "rounds per daemon")
	requests := fs.Int("requests", 600, "Decrypts per round in the CPU measurement")
	samples := fs.Int("samples", 200, "Decrypts per round at concurrency 1")
	clients := fs.Int("clients", cpuConcurrency, "concurrent clients of the CPU measurement")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *rounds < 1 || *requests < 1 || *samples < 1 || *clients < 1 || *clients > pinnedConcurrency {
		fmt.Fprintf(os.Stderr, "bench: error: ab takes positive -rounds, -requests, -samples, -clients of at most %d, and no arguments\n", pinnedConcurrency)
		return 2
	}
	w, err := newWorld(ctx, os.Stderr, false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	defer w.close(false)
	if err := ab(ctx, w, *goOnly, *a, *b, splitEnv(*aEnv), splitEnv(*bEnv), *rounds, *requests, *samples, *clients); err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	return 0
}

func splitEnv(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func ab(ctx context.Context, w *world, goOnly bool, aBin, bBin string, aEnv, bEnv []string, rounds, requests, samples, clients int) error {
	builds, _ := chooseBuilds(ctx, goOnly)
	def := builds[0]
	w.say("building this tree: %s", def.label)
	if err := w.buildAll(builds[:1]); err != nil {
		return err
	}
	if aBin == "" {
		aBin = w.binary(def, "kmsproxyd")
	}
	if bBin == "" {
		bBin = w.binary(def, "kmsproxyd")
	}
	if err := w.setup(); err != nil {
		return err
	}
	timer, err := w.startRSATimer("rsatime", w.binary(def, "rsatime"))
	if err != nil {
		return err
	}
	type side struct {
		name   string
		d      *daemon
		cpu    []time.Duration // per Decrypt, one per round
		lat    []time.Duration // p50 at concurrency 1, one per round
		caller func(int) caller
		serial caller
	}
	sides := []*side{{name: "A"}, {name: "B"}}
	for i, s := range sides {
		exe, env := aBin, aEnv
		if i == 1 {
			exe, env = bBin, bEnv
		}
		d, err := w.startKmsproxyd("kmsproxyd-"+s.name, exe, env)
		if err != nil {
			return err
		}
		if err := d.waitSettled(ctx); err != nil {
			return err
		}
		hc := unixClient(d.sock, pinnedConcurrency)
		s.d = d
		s.caller = func(int) caller { return proxyDecrypt(hc, w.blob, w.plaintext) }
		s.serial = proxyDecrypt(unixClient(d.sock, 1), w.blob, w.plaintext)
		if r := closedLoop(ctx, cpuConcurrency, warmups, 0, s.caller); r.errors > 0 {
			return w.failed(d.proc, fmt.Errorf("warm-up of %s: %d of %d Decrypts failed%s", s.name, r.errors, r.n, firstError(r)))
		}
	}
	var floors []time.Duration
	for round := range rounds {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := timer.measure(100)
		if err != nil {
			return err
		}
		floors = append(floors, r.floor)
		order := sides
		if round%2 == 1 {
			order = []*side{sides[1], sides[0]}
		}
		for _, s := range order {
			cpu, _, n, err := w.cpuDuring(ctx, s.d.proc, clients, requests, s.caller)
			if err != nil {
				return fmt.Errorf("round %d of %s: %w", round+1, s.name, err)
			}
			s.cpu = append(s.cpu, cpu/time.Duration(n))
			lat := closedLoop(ctx, 1, samples, 0, func(int) caller { return s.serial })
			if lat.errors > 0 || lat.n < samples {
				return w.failed(s.d.proc, fmt.Errorf("round %d of %s at concurrency 1: %d of %d Decrypts done, %d failed%s", round+1, s.name, lat.n, samples, lat.errors, firstError(lat)))
			}
			s.lat = append(s.lat, lat.pct(50))
		}
		w.say("round %d: t_floor %s; CPU/Decrypt A %s B %s; p50 A %s B %s", round+1, ms(floors[round]),
			ms(sides[0].cpu[round]), ms(sides[1].cpu[round]), ms(sides[0].lat[round]), ms(sides[1].lat[round]))
	}
	ratios := func(f func(*side) []time.Duration) []float64 {
		var r []float64
		for i := range rounds {
			r = append(r, float64(f(sides[1])[i])/float64(f(sides[0])[i]))
		}
		slices.Sort(r)
		return r
	}
	cpuR := ratios(func(s *side) []time.Duration { return s.cpu })
	latR := ratios(func(s *side) []time.Duration { return s.lat })
	fmt.Printf("A: %s %s\nB: %s %s\n", aBin, strings.Join(aEnv, " "), bBin, strings.Join(bEnv, " "))
	fmt.Printf("CPU per Decrypt (%d clients), median of %d rounds: A %s, B %s; B/A per round: median %.3f (min %.3f, max %.3f)\n",
		clients, rounds, ms(median(sides[0].cpu)), ms(median(sides[1].cpu)), cpuR[len(cpuR)/2], cpuR[0], cpuR[len(cpuR)-1])
	perFloor := func(s *side) float64 {
		var r []float64
		for i := range rounds {
			r = append(r, float64(s.cpu[i])/float64(floors[i]))
		}
		slices.Sort(r)
		return r[len(r)/2]
	}
	fmt.Printf("CPU per Decrypt over the round's t_floor (median t_floor %s), median of %d rounds: A %.2f ×, B %.2f ×\n",
		ms(median(floors)), rounds, perFloor(sides[0]), perFloor(sides[1]))
	fmt.Printf("latency p50 at concurrency 1, median of %d rounds: A %s, B %s; B/A per round: median %.3f (min %.3f, max %.3f)\n",
		rounds, ms(median(sides[0].lat)), ms(median(sides[1].lat)), latR[len(latR)/2], latR[0], latR[len(latR)-1])
	var hwm [2]int64
	for i, s := range sides {
		if _, hwm[i], err = memory(s.d.pid()); err != nil {
			return err
		}
	}
	fmt.Printf("peak RSS (VmHWM): A %s, B %s\n", mib(hwm[0]), mib(hwm[1]))
	return nil
}
