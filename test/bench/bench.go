package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// The targets, each a ratio or an amount from one run. t_floor is one
// RSA-2048 OAEP-SHA256 decryption by the fastest backend the build links
// (OpenSSL's libcrypto in the enclave image): the one operation no
// attested request can avoid, since KMS encrypts every answer to the
// enclave's key.
const (
	targetCPU      = 2.2  // kmsproxyd CPU per attested Decrypt ≤ 2.2 × t_floor
	targetCacheHit = 0.5  // kmsproxyd CPU per cache hit ≤ 0.5 × t_floor
	targetAdded    = 3.0  // added p50 latency at concurrency 1 ≤ 3 × t_floor
	targetPinned   = 0.45 // throughput on one core ≥ 0.45 × 1/t_floor
	targetIdleMiB  = 24   // idle RSS
	targetPeakMiB  = 48   // peak RSS under the concurrent clients
	targetReadyMs  = 300  // start to ready
)

// Load shapes.
const (
	defaultClients = 256 // concurrent clients of the load rows
	// pinnedConcurrency keeps enough requests in flight to keep one core
	// busy while others wait for devkms.
	pinnedConcurrency = 16
	// pinnedRounds is how many times each build takes its turn on CPU 0.
	pinnedRounds = 2
	// cpuConcurrency is the CPU rows' clients: kmsproxyd's default
	// --upstream-conns, so requests flow without queueing.
	cpuConcurrency = 4
	// warmups is how many Decrypts each daemon answers before it is
	// measured: connections, TLS sessions, devkms's verification cache.
	warmups = 200
	// pairWarmup is how many calls of each kind precede the latency rows'
	// samples.
	pairWarmup = 50
	// profileRequests is how many Decrypts the profile of the CPU row
	// records.
	profileRequests = 3000
	// noisyFloor is how much t_floor may vary over a run before the table
	// says that the machine was busy.
	noisyFloor = 0.10
)

type benchConfig struct {
	duration  time.Duration
	pinned    time.Duration
	clients   int
	starts    int
	requests  int
	rounds    int
	samples   int
	oneShots  int
	rsaN      int
	keep      bool
	strict    bool
	goOnly    bool
	profile   bool
	perfFile  string
	perfStat  bool
	command   string
	kmsEnv    []string
	startedAt time.Time
}

func runBench(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./test/bench [flags]
       go run ./test/bench soak [flags]
       go run ./test/bench ab [flags]

Builds kmsproxyd twice (OpenSSL's libcrypto, static, as the enclave image
does, when this machine has gcc and libssl-dev; and pure Go), starts devkms
and both daemons (simulated NSM), measures them in alternating rounds, and
prints one table of ratios to t_floor, the time of one RSA-2048 OAEP-SHA256
decryption by the fastest backend the build has, with each target met or
missed and by how much (docs/performance.md explains every row). Progress
goes to stderr, the table to stdout.

Examples:
  go run ./test/bench                     # the full run, about 2 minutes
  go run ./test/bench -quick              # about a minute, fewer samples
  go run ./test/bench -perf /tmp/k.perf   # keep the CPU row's perf recording
  go run ./test/bench -env GOGC=100,GOMEMLIMIT=off   # the daemons under another environment

Flags:
`)
		fs.PrintDefaults()
	}
	c := benchConfig{startedAt: time.Now()}
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long the concurrent-clients rows run, per build")
	fs.IntVar(&c.clients, "clients", defaultClients, "concurrent clients of the load rows, each on its own connection")
	fs.IntVar(&c.starts, "starts", 5, "starts per build timed for the start-to-ready row (median)")
	fs.IntVar(&c.requests, "requests", 3000, "Decrypts per daemon over which CPU time is divided, in -rounds rounds")
	fs.IntVar(&c.rounds, "rounds", 6, "alternating rounds of the CPU rows, each with its own t_floor")
	fs.IntVar(&c.samples, "samples", 600, "Decrypts of each kind (direct, through each build) at concurrency 1")
	fs.DurationVar(&c.pinned, "pinned", 10*time.Second, "how long each build runs alone on CPU 0 for the throughput row")
	fs.IntVar(&c.oneShots, "one-shots", 10, "runs of the kmstool-style one-shot client (median)")
	fs.IntVar(&c.rsaN, "rsa", 200, "decryptions per backend in each t_floor measurement")
	quick := fs.Bool("quick", false, "shorter, noisier run: -duration 5s -starts 3 -requests 800 -rounds 4 -samples 150 -pinned 4s -one-shots 3 -rsa 100")
	fs.BoolVar(&c.keep, "keep", false, "keep the working directory (logs, CA, configuration)")
	fs.BoolVar(&c.strict, "strict", false, "exit 1 when a target is missed")
	fs.BoolVar(&c.goOnly, "go-only", false, "measure only the pure Go build, even where OpenSSL could be linked")
	fs.BoolVar(&c.profile, "profile", true, "record the default build with Linux perf for one more round and say where its CPU went (needs perf)")
	fs.StringVar(&c.perfFile, "perf", "", "keep that perf recording in this `file` (perf report -i FILE)")
	fs.BoolVar(&c.perfStat, "perf-stat", false, "count the default build's system calls and context switches per Decrypt (perf stat)")
	env := fs.String("env", "", "extra environment for every kmsproxyd, comma-separated KEY=VALUE (e.g. GOGC=100,GOMEMLIMIT=off)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: error: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range map[string]string{"duration": "5s", "starts": "3", "requests": "800", "rounds": "4", "samples": "150", "pinned": "4s", "one-shots": "3", "rsa": "100"} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	if c.clients < 1 || c.starts < 1 || c.requests < c.rounds || c.rounds < 1 || c.samples < 1 || c.oneShots < 1 || c.rsaN < 1 || c.duration <= 0 || c.pinned <= 0 {
		fmt.Fprintln(os.Stderr, "bench: error: counts and durations must be positive, and -requests at least -rounds")
		return 2
	}
	if c.perfFile != "" && !havePerf() {
		fmt.Fprintln(os.Stderr, "bench: error: -perf needs Linux perf (Debian: apt-get install linux-perf)")
		return 2
	}
	c.kmsEnv = splitEnv(*env)
	c.command = strings.TrimSpace("go run ./test/bench " + strings.Join(args, " "))

	w, err := newWorld(ctx, os.Stderr, c.keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	t, err := bench(ctx, w, c)
	w.close(c.keep)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: error: %v\n", err)
		return 1
	}
	t.print(os.Stdout)
	if c.strict && t.missed() > 0 {
		return 1
	}
	return 0
}

// chooseBuilds returns the builds to measure, the default (the enclave
// image's) first, and why OpenSSL is not among them when it is not.
func chooseBuilds(ctx context.Context, goOnly bool) ([]build, string) {
	if goOnly {
		return []build{buildGo}, "-go-only"
	}
	if ok, reason := haveLibcrypto(ctx); !ok {
		return []build{buildGo}, reason + " (Debian/Ubuntu: apt-get install gcc libssl-dev)"
	}
	return []build{buildOpenSSL, buildGo}, ""
}

// subject is one daemon the run measures.
type subject struct {
	label string // in the table
	b     build
	d     *daemon
	// call makes a caller on hc, a client shared by up to
	// pinnedConcurrency workers.
	call func(int) caller
	hc   *http.Client

	readies []time.Duration
	idleRSS int64
	idleMem string

	cpu   []time.Duration // CPU per Decrypt in each round
	total time.Duration   // CPU over every round (per-thread accounting)
	ticks time.Duration   // the same from /proc/PID/stat, for the cross-check
	kms   time.Duration   // devkms's CPU meanwhile
	n     int

	cache   bool        // the decrypt cache is on: the cache-hit rows
	sdk     *kms.Client // for the latency rows
	sdkHTTP *http.Client
	lat     result
}

func (s *subject) pid() int { return s.d.pid() }

func bench(ctx context.Context, w *world, c benchConfig) (*table, error) {
	t := &table{header: []string{
		"kmsproxy benchmark, " + time.Now().UTC().Format("2006-01-02 15:04 MST"),
		"machine: " + machine(),
		"load average at start: " + loadAverage(),
		"command: " + c.command,
	}}
	if len(c.kmsEnv) > 0 {
		t.header = append(t.header, "kmsproxyd environment: "+strings.Join(c.kmsEnv, " "))
	}

	builds, noOpenSSL := chooseBuilds(ctx, c.goOnly)
	names := make([]string, len(builds))
	for i, b := range builds {
		names[i] = b.label
	}
	w.say("building devkms, the kmstool-style client, and kmsproxyd, floor and rsatime as: %s", strings.Join(names, "; "))
	if noOpenSSL != "" {
		w.say("no OpenSSL build: %s; t_floor is crypto/rsa's", noOpenSSL)
	}
	if err := w.buildAll(builds); err != nil {
		return nil, err
	}
	def := builds[0]
	w.say("starting devkms (TLS, SigV4, key policy bound to the simulated PCRs)")
	if err := w.setup(); err != nil {
		return nil, err
	}
	timer, err := w.startRSATimer("rsatime", w.binary(def, "rsatime"))
	if err != nil {
		return nil, err
	}
	var floors rsaSeries
	measureFloor := func() (rsaTimes, error) {
		r, err := timer.measure(c.rsaN)
		if err == nil {
			floors = append(floors, r)
		}
		return r, err
	}
	w.say("t_floor: %d decryptions per backend", c.rsaN)
	if _, err := timer.measure(c.rsaN); err != nil { // warm-up, not counted
		return nil, err
	}
	first, err := measureFloor()
	if err != nil {
		return nil, err
	}

	// Start to ready, alternating builds; the last start of each stays up.
	var subjects []*subject
	for _, b := range builds {
		subjects = append(subjects, &subject{label: "kmsproxyd, " + b.label, b: b})
	}
	w.say("start to ready: %d starts of each build", c.starts)
	for i := range c.starts {
		for j := range subjects {
			s := subjects[(i+j)%len(subjects)]
			d, err := w.startKmsproxyd(fmt.Sprintf("kmsproxyd-%s-%d", s.b.name, i), w.binary(s.b, "kmsproxyd"), c.kmsEnv)
			if err != nil {
				return nil, err
			}
			s.readies = append(s.readies, d.ready)
			if i < c.starts-1 {
				if err := w.stop(d.proc); err != nil {
					return nil, err
				}
			} else {
				s.d = d
			}
		}
	}

	// Idle memory: after ready, the background pre-generation of the next
	// key, and a few requests.
	for _, s := range subjects {
		if err := s.d.waitSettled(ctx); err != nil {
			return nil, err
		}
		hc := unixClient(s.d.sock, 1)
		one := proxyDecrypt(hc, w.blob, w.plaintext)
		for range 10 {
			if err := one(ctx); err != nil {
				return nil, w.failed(s.d.proc, fmt.Errorf("failed to decrypt through kmsproxyd: %w", err))
			}
		}
		hc.CloseIdleConnections()
	}
	time.Sleep(time.Second)
	for _, s := range subjects {
		rss, _, err := memory(s.pid())
		if err != nil {
			return nil, err
		}
		s.idleRSS = rss
		s.idleMem = s.d.memoryDetail()
		if anon, file, err := rssSplit(s.pid()); err == nil {
			s.idleMem = fmt.Sprintf("anonymous %s, file-backed %s (the executable's pages); %s", mib(anon), mib(file), s.idleMem)
		}
	}

	// The floor daemon, built like the default build.
	w.say("starting the floor daemon (test/bench/floor, %s)", def.label)
	fl, err := w.startKmsproxyd("floor", w.binary(def, "floor"), append(slices.Clone(floorGC), c.kmsEnv...))
	if err != nil {
		return nil, err
	}
	floorSubject := &subject{label: "floor daemon (test/bench/floor), " + def.label, b: def, d: fl}

	// The same builds with the decrypt cache on the parent listener: every
	// Decrypt after the first is a hit, answered without KMS or RSA.
	policyFile := w.path("cache-policy.yaml")
	if err := os.WriteFile(policyFile, []byte(cachePolicy), 0o600); err != nil {
		return nil, err
	}
	var cached []*subject
	for _, b := range builds {
		w.say("starting kmsproxyd with the decrypt cache on (%s)", b.label)
		d, err := w.startKmsproxyd("kmsproxyd-"+b.name+"-cache", w.binary(b, "kmsproxyd"), c.kmsEnv, "--policy", policyFile)
		if err != nil {
			return nil, err
		}
		cached = append(cached, &subject{label: "kmsproxyd, " + b.label, b: b, d: d, cache: true})
	}

	cpuSubjects := append(append(slices.Clone(subjects), floorSubject), cached...)
	for _, s := range cpuSubjects {
		hc := unixClient(s.d.sock, pinnedConcurrency)
		s.hc = hc
		s.call = func(int) caller { return proxyDecrypt(hc, w.blob, w.plaintext) }
		if r := closedLoop(ctx, cpuConcurrency, warmups, 0, s.call); r.errors > 0 {
			return nil, w.failed(s.d.proc, fmt.Errorf("warm-up: %s", r.errorText()))
		}
	}

	// CPU per Decrypt: alternating rounds, each with its own t_floor.
	w.say("CPU per Decrypt: %d rounds of %d Decrypts from %d clients to each daemon, each round with its own t_floor", c.rounds, c.requests/c.rounds, cpuConcurrency)
	var stopStat func() map[string]float64
	if c.perfStat {
		if stopStat, err = startPerfStat(subjects[0].pid()); err != nil {
			return nil, err
		}
	}
	roundFloors := len(floors)
	for round := range c.rounds {
		if _, err := measureFloor(); err != nil {
			return nil, err
		}
		n := c.requests / c.rounds
		for j := range cpuSubjects {
			s := cpuSubjects[(round+j)%len(cpuSubjects)]
			kms0, err := threadsCPU(w.devkms.pid())
			if err != nil {
				return nil, err
			}
			cpu, ticks, done, err := w.cpuDuring(ctx, s.d.proc, cpuConcurrency, n, s.call)
			if err != nil {
				return nil, fmt.Errorf("CPU rows, %s: %w", s.label, err)
			}
			kms1, err := threadsCPU(w.devkms.pid())
			if err != nil {
				return nil, err
			}
			s.kms += kms1 - kms0
			s.total += cpu
			s.ticks += ticks
			s.n += done
			s.cpu = append(s.cpu, cpu/time.Duration(done))
		}
		w.say("round %d: t_floor %s, t_go %s; CPU per Decrypt: %s", round+1, ms(floors[len(floors)-1].floor), ms(floors[len(floors)-1].goTime), cpuLine(cpuSubjects, round))
	}
	var counts map[string]float64
	if stopStat != nil {
		counts = stopStat()
	}
	cpuFloors := floors[roundFloors:]
	tFloor := median(floors.floors())
	tGo := median(floors.goTimes())

	// Where the default build's time went, and the floor daemon's beside
	// it: the difference is what kmsproxyd's own work costs, part by part.
	var profile, floorProfile []profileShare
	var profileErr error
	if c.profile && havePerf() {
		record := func(s *subject, file string) ([]profileShare, error) {
			stop, err := startPerf(file, s.pid())
			if err != nil {
				return nil, err
			}
			_, _, _, err = w.cpuDuring(ctx, s.d.proc, cpuConcurrency, profileRequests, s.call)
			stop()
			if err != nil {
				return nil, err
			}
			return perfReport(ctx, file)
		}
		file := c.perfFile
		if file == "" {
			file = tempPerfFile(w.dir)
		}
		w.say("profile: perf record on the default build and on the floor daemon during %d more Decrypts each", profileRequests)
		if profile, profileErr = record(subjects[0], file); profileErr == nil {
			floorProfile, profileErr = record(floorSubject, file+".floor")
		}
	}

	// Latency at concurrency 1 with aws-sdk-go-v2 on both sides: straight
	// to devkms with a Recipient of the caller's own, and through each
	// build, in turn, so that drift affects all alike.
	w.say("latency at concurrency 1: %d Decrypts each, direct and through each build, in turn", c.samples)
	rcpt, err := w.recipient()
	if err != nil {
		return nil, err
	}
	direct := w.sdkClient(roleKey, roleSecret, roleToken)
	directCall := func(ctx context.Context) error {
		out, err := direct.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: w.blob, Recipient: rcpt})
		if err != nil {
			return fmt.Errorf("failed to decrypt directly at devkms: %w", err)
		}
		if len(out.CiphertextForRecipient) == 0 {
			return errors.New("devkms answered without CiphertextForRecipient")
		}
		return nil
	}
	latCalls := []caller{directCall}
	for _, s := range subjects {
		if s.sdkHTTP, err = client.HTTPClient("unix://" + s.d.sock); err != nil {
			return nil, err
		}
		if s.sdk, err = client.New(ctx, "unix://"+s.d.sock, func(o *kms.Options) {
			o.Retryer = aws.NopRetryer{}
			o.HTTPClient = s.sdkHTTP
		}); err != nil {
			return nil, err
		}
		latCalls = append(latCalls, sdkDecrypt(s.sdk, w.blob, w.plaintext))
	}
	lats := make([]result, len(latCalls))
	for range pairWarmup {
		for i, call := range latCalls {
			if err := call(ctx); err != nil {
				return nil, fmt.Errorf("latency rows, warm-up of call %d: %w", i, err)
			}
		}
	}
	latFloorBefore, err := measureFloor()
	if err != nil {
		return nil, err
	}
	for k := range c.samples {
		for j := range latCalls {
			i := (k + j) % len(latCalls)
			start := time.Now()
			err := latCalls[i](ctx)
			lats[i].lat = append(lats[i].lat, time.Since(start))
			lats[i].n++
			if err != nil {
				return nil, fmt.Errorf("latency rows: %w", err)
			}
		}
	}
	for i := range lats {
		lats[i].finish(0)
	}
	for i, s := range subjects {
		s.lat = lats[i+1]
	}
	latFloorAfter, err := measureFloor()
	if err != nil {
		return nil, err
	}

	// Throughput with each build alone on CPU 0 and everything else the
	// run started (devkms, the load, the other daemons) on the others.
	type pinnedResult struct {
		n                  int
		elapsed            time.Duration
		self, devkms, load time.Duration
		idle0, total0      time.Duration // CPU 0's idle and all time (/proc/stat)
	}
	pinned := make([]pinnedResult, len(subjects))
	others := "1"
	if n := runtime.NumCPU(); n > 2 {
		others = fmt.Sprintf("1-%d", n-1)
	}
	if runtime.NumCPU() >= 2 {
		w.say("throughput: each build alone on CPU 0 for %s (%d turns each), devkms and the load on CPU %s", c.pinned, pinnedRounds, others)
		var all []int
		for _, p := range w.procs {
			if !p.exited() {
				all = append(all, p.pid())
			}
		}
		all = append(all, os.Getpid())
		for _, pid := range all {
			if err := pin(pid, others); err != nil {
				return nil, err
			}
		}
		for k := range pinnedRounds * len(subjects) {
			i := k % len(subjects)
			if k/len(subjects)%2 == 1 {
				i = len(subjects) - 1 - i
			}
			s := subjects[i]
			if err := pin(s.pid(), "0"); err != nil {
				return nil, err
			}
			closedLoop(ctx, pinnedConcurrency, 0, time.Second/2, s.call) // settle on CPU 0
			pids := []int{s.pid(), w.devkms.pid(), os.Getpid()}
			before, err := cpuTimes(pids)
			if err != nil {
				return nil, err
			}
			idleBefore, totalBefore, err := cpuStat(0)
			if err != nil {
				return nil, err
			}
			r := closedLoop(ctx, pinnedConcurrency, 0, c.pinned/pinnedRounds, s.call)
			after, err := cpuTimes(pids)
			if err != nil {
				return nil, err
			}
			idleAfter, totalAfter, err := cpuStat(0)
			if err != nil {
				return nil, err
			}
			if r.errors > 0 {
				return nil, w.failed(s.d.proc, fmt.Errorf("throughput row: %s", r.errorText()))
			}
			if err := pin(s.pid(), others); err != nil {
				return nil, err
			}
			p := &pinned[i]
			p.n += r.n
			p.elapsed += r.elapsed
			p.self += after[0] - before[0]
			p.devkms += after[1] - before[1]
			p.load += after[2] - before[2]
			p.idle0 += idleAfter - idleBefore
			p.total0 += totalAfter - totalBefore
		}
		for _, pid := range all {
			if err := pin(pid, allCPUs()); err != nil {
				return nil, err
			}
		}
	}

	// Many concurrent clients, each on its own connection, one build after
	// the other.
	type loadResult struct {
		r   result
		hwm int64
		mid string
	}
	loads := make([]loadResult, len(subjects))
	for i, s := range subjects {
		w.say("%d concurrent clients for %s: %s", c.clients, c.duration, s.label)
		// The parent listener's every place for the load: the earlier
		// rows' kept-alive connections would hold some.
		s.hc.CloseIdleConnections()
		s.sdkHTTP.CloseIdleConnections()
		time.Sleep(100 * time.Millisecond) // for kmsproxyd to see them close
		clients := make([]*http.Client, c.clients)
		for k := range clients {
			clients[k] = unixClient(s.d.sock, 1)
		}
		midDone := make(chan struct{})
		go func() {
			defer close(midDone)
			select {
			case <-time.After(c.duration * 3 / 4):
				loads[i].mid = s.d.memoryDetail()
			case <-ctx.Done():
			}
		}()
		loads[i].r = closedLoop(ctx, c.clients, 0, c.duration, func(k int) caller { return proxyDecrypt(clients[k], w.blob, w.plaintext) })
		<-midDone
		for _, hc := range clients {
			hc.CloseIdleConnections()
		}
		if _, loads[i].hwm, err = memory(s.pid()); err != nil {
			return nil, err
		}
	}

	// The cost avoided: a kmstool-style process per Decrypt.
	w.say("kmstool-style one-shot client: %d runs", c.oneShots)
	oneShot, err := w.oneShots(ctx, c.oneShots)
	if err != nil {
		return nil, err
	}
	if _, err := measureFloor(); err != nil {
		return nil, err
	}
	// OpenSSL's lead depends on AVX-512 IFMA: time it once more without.
	var noIFMATime rsaTimes
	if first.floorBackend == "openssl" && hasIFMA() {
		t, err := w.startRSATimer("rsatime-noifma", w.binary(def, "rsatime"), noIFMA)
		if err != nil {
			return nil, err
		}
		if noIFMATime, err = t.measure(c.rsaN); err != nil {
			return nil, err
		}
	}

	// The table.
	backendOf := func(b build) string {
		if v := first.versions[b.name]; v != "" {
			return v
		}
		return first.versions["go"]
	}
	if first.floorBackend == "go" {
		why := ""
		if noOpenSSL != "" {
			why = " (" + noOpenSSL + ")"
		}
		t.report("t_floor: one RSA-2048 OAEP-SHA256 decrypt, fastest backend = crypto/rsa, no OpenSSL in this build", ms(tFloor),
			fmt.Sprintf("%s; median of %d measurements over the run (%s to %s), each the median of %d decryptions timed with the thread's CPU clock; no OpenSSL%s", backendOf(def), len(floors), ms(slices.Min(floors.floors())), ms(slices.Max(floors.floors())), c.rsaN, why))
	} else {
		t.report("t_floor: one RSA-2048 OAEP-SHA256 decrypt, fastest backend = "+first.floorBackend, ms(tFloor),
			fmt.Sprintf("%s; median of %d measurements over the run (%s to %s), each the median of %d decryptions timed with the thread's CPU clock, alternating with crypto/rsa's", first.versions[first.floorBackend], len(floors), ms(slices.Min(floors.floors())), ms(slices.Max(floors.floors())), c.rsaN))
	}
	t.report("t_go: the same decrypt with crypto/rsa", fmt.Sprintf("%s = %.2f × t_floor", ms(tGo), float64(tGo)/float64(tFloor)),
		fmt.Sprintf("%s; measured with t_floor, decryption by decryption", first.versions["go"]))
	if noIFMATime.floor != 0 {
		ossl := noIFMATime.byName["openssl"]
		t.report("OpenSSL's decrypt with AVX-512 IFMA masked (as on a CPU without it)", fmt.Sprintf("%s = %.2f × t_floor = %.2f × t_go", ms(ossl), float64(ossl)/float64(tFloor), float64(ossl)/float64(noIFMATime.goTime)),
			fmt.Sprintf("one measurement at the end of the run with %s; crypto/rsa does not use IFMA", noIFMA))
	}
	if noOpenSSL != "" && !c.goOnly {
		t.note("the OpenSSL rows are skipped: %s; every row is the pure Go build's and t_floor is crypto/rsa's", noOpenSSL)
	}

	// CPU rows.
	cpuRatio := func(s *subject) (med, lo, hi float64) {
		var r []float64
		for i, d := range s.cpu {
			r = append(r, float64(d)/float64(cpuFloors[i].floor))
		}
		slices.Sort(r)
		return r[len(r)/2], r[0], r[len(r)-1]
	}
	cpuDetail := func(s *subject) string {
		_, lo, hi := cpuRatio(s)
		d := fmt.Sprintf("median of %d rounds of %d Decrypts from %d clients (%.2f to %.2f × that round's t_floor); %s per Decrypt = %.2f × t_go; all rounds: %s of CPU over %d Decrypts, summed over the threads' schedstat (/proc/PID/stat: %s); devkms meanwhile %s per Decrypt",
			len(s.cpu), c.requests/c.rounds, cpuConcurrency, lo, hi, ms(median(s.cpu)), float64(median(s.cpu))/float64(tGo), ms(s.total), s.n, ms(s.ticks), ms(s.kms/time.Duration(max(s.n, 1))))
		return d
	}
	for i, s := range subjects {
		med, _, _ := cpuRatio(s)
		name := "CPU per attested Decrypt, " + s.label
		val := fmt.Sprintf("%s = %.2f × t_floor", ms(median(s.cpu)), med)
		detail := cpuDetail(s) + "; RSA backend " + backendOf(s.b)
		if i == 0 {
			if counts != nil {
				for _, k := range []string{"raw_syscalls:sys_enter", "context-switches"} {
					if v, ok := counts[k]; ok {
						detail += fmt.Sprintf("; %.1f %s per Decrypt", v/float64(s.n), strings.TrimPrefix(k, "raw_syscalls:"))
					}
				}
			}
			t.check(name, med, val, atMost(targetCPU, xFloor), detail)
		} else {
			t.report(name, val, detail)
		}
	}
	// kmsproxyd (default build) over the floor daemon, round by round.
	var over []float64
	for i := range floorSubject.cpu {
		over = append(over, float64(subjects[0].cpu[i])/float64(floorSubject.cpu[i]))
	}
	slices.Sort(over)
	{
		med, _, _ := cpuRatio(floorSubject)
		t.report("CPU per attested Decrypt, "+floorSubject.label, fmt.Sprintf("%s = %.2f × t_floor", ms(median(floorSubject.cpu)), med),
			cpuDetail(floorSubject)+fmt.Sprintf("; kmsproxyd (default build) / floor per round: median %.2f (%.2f to %.2f). The floor daemon: net/http server, aws-sdk-go-v2 Decrypt with Recipient over keep-alive TLS, the envelope opened, the answer; no policy, logs, metrics or limits; kmsproxyd's GC settings (%s)",
				over[len(over)/2], over[0], over[len(over)-1], strings.Join(floorGC, " ")))
	}

	// Cache-hit rows.
	for i, s := range cached {
		med, _, _ := cpuRatio(s)
		name := "CPU per cache hit, " + s.label
		val := fmt.Sprintf("%s = %.2f × t_floor", ms(median(s.cpu)), med)
		detail := cpuDetail(s) + fmt.Sprintf(" (%s per Decrypt without the cache): a hit is answered without KMS, and an entry goes back to KMS only after max_uses hits; policy: listeners.parent.decrypt_cache %s",
			ms(subjects[i].kms/time.Duration(max(subjects[i].n, 1))), cacheSettings)
		if i == 0 {
			t.check(name, med, val, atMost(targetCacheHit, xFloor), detail)
		} else {
			t.report(name, val, detail)
		}
	}

	// Latency rows.
	latFloor := (latFloorBefore.floor + latFloorAfter.floor) / 2
	for i, s := range subjects {
		added50 := s.lat.pct(50) - lats[0].pct(50)
		ratio := float64(added50) / float64(latFloor)
		name := "latency added at concurrency 1 (p50), " + s.label
		val := fmt.Sprintf("%s = %.2f × t_floor", ms(added50), ratio)
		detail := fmt.Sprintf("aws-sdk-go-v2 on both sides: p50 through kmsproxyd %s − straight to devkms with a Recipient %s, %d of each in turn; p99 %s − %s = %s; t_floor next to this row %s",
			ms(s.lat.pct(50)), ms(lats[0].pct(50)), c.samples, ms(s.lat.pct(99)), ms(lats[0].pct(99)), ms(s.lat.pct(99)-lats[0].pct(99)), ms(latFloor))
		if i == 0 {
			t.check(name, ratio, val, atMost(targetAdded, xFloor), detail)
		} else {
			t.report(name, val, detail)
		}
	}

	// Throughput rows.
	for i, s := range subjects {
		name := "throughput on one core (taskset -c 0), " + s.label
		if runtime.NumCPU() < 2 {
			t.add(name, "not measured", atLeast(targetPinned, ofFloor).String(), ptr(false), "this machine has one CPU: kmsproxyd cannot have one to itself")
			continue
		}
		p := pinned[i]
		rate := float64(p.n) / p.elapsed.Seconds()
		frac := rate * tFloor.Seconds()
		per := func(d time.Duration) string { return ms(d / time.Duration(max(p.n, 1))) }
		busy0 := float64(p.self) / float64(p.elapsed)
		busy1 := float64(p.devkms+p.load) / float64(p.elapsed)
		idle0 := float64(p.idle0) / float64(max(p.total0, 1))
		detail := fmt.Sprintf("1/t_floor = %.0f/s; %d requests in flight, %d turns of %s; CPU 0: %.0f %% kmsproxyd at %s per Decrypt (%.2f × t_floor), %.0f %% idle, %.0f %% other processes of this machine; CPU %s: devkms %s and the load %s per Decrypt (%.0f %% of one CPU); per second of kmsproxyd's CPU: %.0f Decrypts = %.2f of 1/t_floor",
			1/tFloor.Seconds(), pinnedConcurrency, pinnedRounds, c.pinned/pinnedRounds, 100*busy0, per(p.self), float64(p.self)/float64(p.n)/float64(tFloor),
			100*idle0, 100*max(0, 1-idle0-busy0), others, per(p.devkms), per(p.load), 100*busy1,
			float64(p.n)/p.self.Seconds(), float64(p.n)/p.self.Seconds()*tFloor.Seconds())
		switch {
		case busy0 < 0.9 && busy1 > 0.9:
			detail += "; kmsproxyd was not the bottleneck: devkms and the load generator filled CPU " + others
		case busy0 < 0.9 && 1-idle0-busy0 > 0.1:
			detail += "; other processes of this machine took part of CPU 0"
		}
		val := fmt.Sprintf("%.0f Decrypts/s = %.2f of 1/t_floor", rate, frac)
		if i == 0 {
			t.check(name, frac, val, atLeast(targetPinned, ofFloor), detail)
		} else {
			t.report(name, val, detail)
		}
	}

	// Concurrent clients and memory.
	for i, s := range subjects {
		l := loads[i]
		name := fmt.Sprintf("%d concurrent clients for %s, %s", c.clients, c.duration, s.label)
		t.check(name+": errors", float64(l.r.errors), fmt.Sprintf("%d of %d", l.r.errors, l.r.n), atMost(0, countF),
			fmt.Sprintf("%.0f Decrypts/s, each client on its own connection; latency p50 %s, p99 %s%s", l.r.rate(), ms(l.r.pct(50)), ms(l.r.pct(99)), firstError(l.r)))
	}
	for i, s := range subjects {
		l := loads[i]
		name := "peak RSS (VmHWM) over the run, " + s.label
		detail := fmt.Sprintf("reached with %d concurrent clients; at 3/4 of that row: %s", c.clients, l.mid)
		if i == 0 {
			t.check(name, float64(l.hwm)/(1<<20), mib(l.hwm), atMost(targetPeakMiB, mibF), detail)
		} else {
			t.report(name, mib(l.hwm), detail)
		}
	}
	for i, s := range subjects {
		name := "idle RSS (VmRSS, 1 s after ready and 10 requests), " + s.label
		if i == 0 {
			t.check(name, float64(s.idleRSS)/(1<<20), mib(s.idleRSS), atMost(targetIdleMiB, mibF), s.idleMem)
		} else {
			t.report(name, mib(s.idleRSS), s.idleMem)
		}
	}
	for i, s := range subjects {
		ready := median(s.readies)
		name := "start to ready (first 200 on /readyz), " + s.label
		detail := fmt.Sprintf("median of %d starts: %s (process start to the first 200, polling every millisecond)", len(s.readies), msList(s.readies))
		if i == 0 {
			t.check(name, float64(ready)/float64(time.Millisecond), ms(ready), atMost(targetReadyMs, msF), detail)
		} else {
			t.report(name, ms(ready), detail)
		}
	}
	t.report("kmstool-style one-shot Decrypt", ms(oneShot.pct(50)),
		fmt.Sprintf("median of %d runs (p90 %s): a new process that generates an RSA-2048 key, gets an attestation document, opens a TLS connection, calls Decrypt with Recipient and opens the envelope", oneShot.n, ms(oneShot.pct(90))))
	t.report("cost avoided: one-shot / kmsproxyd at concurrency 1", fmt.Sprintf("%.0f×", float64(oneShot.pct(50))/float64(subjects[0].lat.pct(50))),
		fmt.Sprintf("%s / %s (p50 through the %s)", ms(oneShot.pct(50)), ms(subjects[0].lat.pct(50)), subjects[0].label))

	// Where the time went.
	switch {
	case profile != nil:
		per := float64(median(subjects[0].cpu)) / float64(tFloor)
		floorPer := float64(median(floorSubject.cpu)) / float64(tFloor)
		floorBy := map[string]float64{}
		for _, p := range floorProfile {
			floorBy[p.part] = p.share / 100 * floorPer
		}
		lines := []string{fmt.Sprintf("%-7s  %-9s  %-9s  %-9s  %s", "share", "× t_floor", "floor", "kmsproxyd", "part (where the CPU was, by function and call stack)"),
			fmt.Sprintf("%-7s  %-9s  %-9s  %-9s", "", "", "daemon", "− floor")}
		rsa := 0.0
		for _, p := range profile {
			v := p.share / 100 * per
			lines = append(lines, fmt.Sprintf("%5.1f %%  %5.2f      %5.2f      %+5.2f      %s", p.share, v, floorBy[p.part], v-floorBy[p.part], p.part))
			delete(floorBy, p.part)
			if strings.HasPrefix(p.part, "RSA decryption") {
				rsa += p.share
			}
		}
		for _, p := range floorProfile { // parts only the floor daemon has
			if v, ok := floorBy[p.part]; ok {
				lines = append(lines, fmt.Sprintf("%5.1f %%  %5.2f      %5.2f      %+5.2f      %s", 0.0, 0.0, v, -v, p.part))
			}
		}
		lines = append(lines, fmt.Sprintf("RSA decryption under load: %.2f × t_floor (t_floor is measured alone); the rest: %.2f × t_floor; the %.1f × t_floor target leaves %.2f × t_floor for the rest; kmsproxyd − floor daemon in all: %+.2f × t_floor",
			rsa/100*per, (1-rsa/100)*per, targetCPU, targetCPU-rsa/100*per, per-floorPer))
		t.section(fmt.Sprintf("where the %s's CPU per attested Decrypt went, beside the floor daemon's (perf record -g, %d more Decrypts each from %d clients, after the CPU rounds; each part in units of t_floor is its share of the daemon's CPU per Decrypt in the CPU rows):", subjects[0].label, profileRequests, cpuConcurrency), lines...)
	case profileErr != nil:
		t.note("no profile of the CPU row: %v", profileErr)
	case c.profile:
		t.note("no profile of the CPU row: Linux perf is not installed (Debian: apt-get install linux-perf)")
	}

	// When the CPU row misses, say whether the target or the parts are
	// the cause: the floor daemon has only the parts any such daemon
	// needs, and the pinned row shows kmsproxyd's cost on one CPU.
	if med, _, _ := cpuRatio(subjects[0]); med > targetCPU {
		if fmed, _, _ := cpuRatio(floorSubject); fmed > targetCPU {
			t.note("the CPU row's target is below what the parts alone cost here: the floor daemon (net/http, aws-sdk-go-v2, TLS, the envelope; nothing of kmsproxyd's own) needs %.2f × t_floor per Decrypt in the same rounds, and kmsproxyd %.2f × what the floor daemon needs", fmed, over[len(over)/2])
		}
		if p := pinned[0]; p.n > 0 && float64(p.self)/float64(p.elapsed) >= 0.9 {
			one := float64(p.self) / float64(p.n) / float64(tFloor)
			t.note("on one CPU (the throughput row, saturated) the %s needs %.2f × t_floor per Decrypt, against %.2f × with %d clients over %d CPUs: %.2f × t_floor of the CPU row is the cost of spreading the work over CPUs (threads waking each other, the Go scheduler and sysmon)",
				subjects[0].label, one, med, cpuConcurrency, runtime.NumCPU(), med-one)
		}
	}

	all := floors.floors()
	if s := spread(all); s > noisyFloor {
		t.note("t_floor varied by %.0f %% during the run (%s to %s): something else was using this machine's CPUs; the CPU rows divide by the t_floor of their own round, the others by the run's median", 100*s, ms(slices.Min(all)), ms(slices.Max(all)))
	}

	// Every daemon drains and exits 0 on SIGTERM, having logged no error.
	for _, s := range cpuSubjects {
		if err := w.stop(s.d.proc); err != nil {
			return nil, err
		}
		if b, err := os.ReadFile(s.d.logPath); err == nil && strings.Contains(string(b), `"level":"ERROR"`) {
			return nil, w.failed(s.d.proc, errors.New("logged an error during the benchmark"))
		}
	}
	return t, nil
}

// cpuLine is one round's CPU per Decrypt of each subject, for progress.
func cpuLine(ss []*subject, round int) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmt.Sprintf("%s %s", s.b.name, ms(s.cpu[round]))
		switch {
		case strings.HasPrefix(s.label, "floor"):
			parts[i] = "floor " + ms(s.cpu[round])
		case s.cache:
			parts[i] = s.b.name + " hit " + ms(s.cpu[round])
		}
	}
	return strings.Join(parts, ", ")
}

// cpuTimes reads each process's CPU time (per-thread accounting).
func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := threadsCPU(pid)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// floorGC gives the floor daemon kmsproxyd's garbage-collector defaults
// (cmd/kmsproxyd/memory.go), so that the two differ only in code.
var floorGC = []string{"GOGC=200", "GOMEMLIMIT=28MiB"}

// cacheSettings are the decrypt cache's settings of the cache-hit rows, as
// an operator would write them.
const cacheSettings = "{max_age: 5m, max_uses: 1000, max_entries: 10000}"

// cachePolicy is the policy of the kmsproxyd daemons of the cache-hit rows:
// the built-in policy's rights on both listeners, and the decrypt cache on
// the parent listener.
const cachePolicy = `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    control: ["*"]
    decrypt_cache: ` + cacheSettings + `
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
`

func firstError(r result) string {
	if r.firstErr == nil {
		return ""
	}
	return fmt.Sprintf("; first error: %v", r.firstErr)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// oneShots runs the kmstool-style client n times, one after another, and
// checks each printed plaintext.
func (w *world) oneShots(ctx context.Context, n int) (result, error) {
	want := base64.StdEncoding.EncodeToString(w.plaintext)
	args := []string{
		"--endpoint", w.kmsURL, "--dial", "unix://" + w.kmsSock, "--ca", w.path("tls/ca.pem"), "--region", region,
		"--sim-ca", w.path("simca"), "--sim-pcrs", w.path("measurements.json"),
		"--aws-access-key-id", roleKey, "--aws-secret-access-key", roleSecret, "--aws-session-token", roleToken,
		"--ciphertext", base64.StdEncoding.EncodeToString(w.blob),
	}
	var r result
	for range n {
		cmd := exec.CommandContext(ctx, w.exe("kmstool"), args...)
		cmd.Env = harness.CleanEnv()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := cmd.Output()
		lat := time.Since(start)
		if err != nil {
			return r, fmt.Errorf("kmstool: %v: %s", err, stderr.String())
		}
		if strings.TrimSpace(string(out)) != want {
			return r, errors.New("kmstool printed a wrong plaintext")
		}
		r.lat = append(r.lat, lat)
		r.n++
	}
	r.finish(0)
	return r, nil
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
