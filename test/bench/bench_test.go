package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/policy"
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
	threadsBefore, err := threadsCPU(pid)
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
	threadsAfter, err := threadsCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := threadsAfter - threadsBefore; got < 40*time.Millisecond {
		t.Errorf("schedstat: CPU time grew by %s while /proc/self/stat's grew by %s", got, after-before)
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
	if _, err := threadsCPU(-1); err == nil {
		t.Error("threadsCPU of a process that does not exist succeeded")
	}
}

func TestTablePrint(t *testing.T) {
	tb := &table{header: []string{"kmsproxy benchmark"}}
	tb.check("met", 1, "1", atMost(2, countF), "one")
	tb.check("missed", 3, "3", atMost(2, countF), "")
	tb.report("reported", "4", "four")
	tb.section("where the time went:", "line one")
	tb.note("a note")
	var out strings.Builder
	tb.print(&out)
	got := out.String()
	for _, want := range []string{"1  met", "met, 1 to spare", "MISSED by 1 (50 %)", "—", "1 targets met, 1 missed", "  1  one", "  3  four", "where the time went:\n  line one", "  - a note"} {
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

func TestGoalVerdict(t *testing.T) {
	tests := []struct {
		name       string
		g          goal
		v          float64
		want       string
		wantMissed bool
	}{
		{"at most, under", atMost(2.2, xFloor), 1.9, "met, 0.30 × t_floor to spare", false},
		{"at most, equal", atMost(2.2, xFloor), 2.2, "met, 0.00 × t_floor to spare", false},
		{"at most, over", atMost(2.2, xFloor), 2.75, "MISSED by 0.55 × t_floor (25 %)", true},
		{"at least, over", atLeast(0.45, ofFloor), 0.5, "met, 0.05 of 1/t_floor to spare", false},
		{"at least, under", atLeast(0.45, ofFloor), 0.36, "MISSED by 0.09 of 1/t_floor (20 %)", true},
		{"zero, met", atMost(0, countF), 0, "met", false},
		{"zero, missed", atMost(0, countF), 3, "MISSED by 3", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, missed := tt.g.verdict(tt.v)
			if got != tt.want || missed != tt.wantMissed {
				t.Errorf("verdict(%v) = %q, %v; want %q, %v", tt.v, got, missed, tt.want, tt.wantMissed)
			}
		})
	}
	if got, want := atMost(48, mibF).String(), "≤ 48.0 MiB"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestParseRSATimes(t *testing.T) {
	tests := []struct {
		name      string
		line      string
		wantFloor time.Duration
		wantName  string
		wantGo    time.Duration
		wantErr   string
	}{
		{
			name:      "openssl and go",
			line:      `{"backends":[{"name":"openssl","version":"OpenSSL 3","median_ns":300000,"n":10},{"name":"go","version":"crypto/rsa","median_ns":800000,"n":10}]}`,
			wantFloor: 300 * time.Microsecond, wantName: "openssl", wantGo: 800 * time.Microsecond,
		},
		{
			name:      "go alone",
			line:      `{"backends":[{"name":"go","version":"crypto/rsa","median_ns":800000,"n":10}]}`,
			wantFloor: 800 * time.Microsecond, wantName: "go", wantGo: 800 * time.Microsecond,
		},
		{
			name:      "the fastest is the floor whatever its name",
			line:      `{"backends":[{"name":"openssl","median_ns":900000,"n":10},{"name":"go","median_ns":800000,"n":10}]}`,
			wantFloor: 800 * time.Microsecond, wantName: "go", wantGo: 800 * time.Microsecond,
		},
		{name: "no go", line: `{"backends":[{"name":"openssl","median_ns":300000,"n":10}]}`, wantErr: "without crypto/rsa"},
		{name: "zero time", line: `{"backends":[{"name":"go","median_ns":0,"n":10}]}`, wantErr: "a time of 0 ns"},
		{name: "not JSON", line: `rsatime: error: boom`, wantErr: "rsatime answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRSATimes([]byte(tt.line))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.floor != tt.wantFloor || got.floorBackend != tt.wantName || got.goTime != tt.wantGo {
				t.Errorf("got floor %s (%s), go %s; want %s (%s), %s", got.floor, got.floorBackend, got.goTime, tt.wantFloor, tt.wantName, tt.wantGo)
			}
		})
	}
}

// perfScript is `perf script -F comm,tid,ip,sym,dso` output of five
// samples, shortened.
const perfScript = `kmsproxyd 30284 
	          4f00 ossl_rsaz_amm52x20_x2_256 (/tmp/bin/openssl/kmsproxyd)
	          4e00 github.com/enclavekit/kmsproxy/internal/cms._Cfunc_kp_decrypt (/tmp/bin/openssl/kmsproxyd)

kmsproxyd 30285 
	ffffffff81e74b0e finish_task_switch.isra.0 ([kernel.kallsyms])
	ffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
	            c2ce runtime.usleep.abi0 (/tmp/bin/openssl/kmsproxyd)
	           4d0f4 runtime.sysmon (/tmp/bin/openssl/kmsproxyd)

kmsproxyd 30284 
	ffffffff81e74b0e _raw_spin_unlock_irqrestore ([kernel.kallsyms])
	            c2ce internal/runtime/syscall/linux.Syscall6 (/tmp/bin/openssl/kmsproxyd)
	           4d0f4 internal/poll.(*FD).Write (/tmp/bin/openssl/kmsproxyd)

kmsproxyd 30284 
	          569cab crypto/internal/fips140/sha256.blockSHANI.abi0 (/tmp/bin/openssl/kmsproxyd)
	          379232 github.com/aws/aws-sdk-go-v2/aws/signer/v4.makeHash (/tmp/bin/openssl/kmsproxyd)

kmsproxyd 30286 
	          569cab runtime.scanObject (/tmp/bin/openssl/kmsproxyd)
`

func TestParseProfile(t *testing.T) {
	got, err := parseProfile(strings.NewReader(perfScript))
	if err != nil {
		t.Fatal(err)
	}
	want := []profileShare{
		{"Go garbage collector", 20},
		{partSysmon, 20},
		{"RSA decryption: OpenSSL's libcrypto (and the C library), through cgo", 20},
		{"SHA-256 and HMAC (SigV4 signing, TLS, the envelope's key id)", 20},
		{partSockets, 20},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(profileShare{})); diff != "" {
		t.Errorf("parseProfile (-want +got):\n%s", diff)
	}
	if _, err := parseProfile(strings.NewReader("# nothing\n")); err == nil {
		t.Error("a profile without samples parsed")
	}
}

func TestClassify(t *testing.T) {
	const exe = "/bin/kmsproxyd"
	tests := []struct {
		name  string
		stack []frame
		want  string
	}{
		{"crypto/rsa", []frame{{"crypto/internal/fips140/bigmod.addMulVVW1024.abi0", exe}}, "RSA decryption: crypto/rsa"},
		{"a C function in the executable", []frame{{"bn_mulx4x_mont", exe}}, "RSA decryption: OpenSSL's libcrypto (and the C library), through cgo"},
		{"the vDSO is not OpenSSL", []frame{{"__vdso_clock_gettime", "[vdso]"}}, "other"},
		{"an unresolved address", []frame{{"0x4567", exe}}, "other"},
		{"an unknown symbol", []frame{{"[unknown]", exe}}, "other"},
		{"the SDK", []frame{{"github.com/aws/smithy-go/middleware.(*Stack).HandleMiddleware", exe}}, "aws-sdk-go-v2: middleware, serialization, SigV4, deserialization"},
		{"the envelope", []frame{{"github.com/enclavekit/kmsproxy/internal/cms.Parse", exe}}, "CMS envelope: parsing, AES-256-CBC"},
		{"the proxy", []frame{{"github.com/enclavekit/kmsproxy/internal/proxy.(*listenerHandler).serveAPI", exe}}, "kmsproxyd's own request handling, policy, upstream queue"},
		{"a futex sleep", []frame{{"finish_task_switch.isra.0", "[kernel.kallsyms]"}, {"runtime.futex.abi0", exe}, {"runtime.stopm", exe}}, partWakeups},
		{"an interrupt during RSA", []frame{{"irqentry_exit_to_user_mode", "[kernel.kallsyms]"}, {"ossl_rsaz_amm52x20_x2_256", exe}}, partInterrupts},
		{"a kernel thread", []frame{{"do_idle", "[kernel.kallsyms]"}}, partInterrupts},
		{"allocation", []frame{{"runtime.mallocgc", exe}}, "Go memory allocation"},
		{"scheduler", []frame{{"runtime.findRunnable", exe}}, "Go scheduler, other runtime work"},
		{"empty", nil, "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.stack); got != tt.want {
				t.Errorf("classify = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCPUInfo(t *testing.T) {
	text := "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f avx512ifma sha_ni\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n"
	model, flags := cpuInfo(text)
	if model != "Intel(R) Xeon(R) Processor" || flags != "fpu avx512f avx512ifma sha_ni" {
		t.Errorf("cpuInfo = %q, %q", model, flags)
	}
	if model, flags := cpuInfo(""); model != "unknown CPU" || flags != "" {
		t.Errorf("cpuInfo of nothing = %q, %q", model, flags)
	}
}

func TestHasPath(t *testing.T) {
	tests := []struct {
		printed string
		want    bool
	}{
		{"/usr/lib/gcc/x86_64-linux-gnu/12/../../../x86_64-linux-gnu/libcrypto.a\n", true},
		{"libcrypto.a\n", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := hasPath(tt.printed); got != tt.want {
			t.Errorf("hasPath(%q) = %v, want %v", tt.printed, got, tt.want)
		}
	}
}

func TestParseCPUStat(t *testing.T) {
	const text = "cpu  535686 0 114172 243826 1694 0 1090 96 0 0\ncpu0 267043 0 56161 124474 417 0 189 49 7 3\ncpu1 268642 0 58011 119352 1277 0 900 46 0 0\n"
	idle, total, err := parseCPUStat(text, 0)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Second / time.Duration(clockTicks())
	if want := (124474 + 417) * tick; idle != want {
		t.Errorf("idle = %s, want %s", idle, want)
	}
	if want := (267043 + 56161 + 124474 + 417 + 189 + 49) * tick; total != want {
		t.Errorf("total = %s, want %s", total, want)
	}
	if _, _, err := parseCPUStat(text, 2); err == nil {
		t.Error("a CPU that is not there parsed")
	}
	if _, _, err := parseCPUStat("cpu0 1 2 x 4 5 6\n", 0); err == nil {
		t.Error("a malformed line parsed")
	}
}

// TestCachePolicy checks that the cache-hit rows' policy loads as kmsproxyd
// loads it, with the decrypt cache on the parent listener only.
func TestCachePolicy(t *testing.T) {
	p, err := policy.Parse([]byte(cachePolicy), "cache-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &policy.DecryptCache{MaxAge: 5 * time.Minute, MaxUses: 1000, MaxEntries: 10000}
	if diff := cmp.Diff(want, p.Rules(policy.ListenerParent).DecryptCache); diff != "" {
		t.Errorf("parent listener's decrypt cache (-want +got):\n%s", diff)
	}
	if got := p.Rules(policy.ListenerLocal).DecryptCache; got != nil {
		t.Errorf("local listener's decrypt cache = %+v, want none", got)
	}
}
