package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The parts of kmsproxyd's CPU time a profile is split into, in the order
// the table lists them. A sample goes to the first part whose rule matches
// its function (perf's self time: where the CPU was, not who called).
var profileParts = []struct {
	name string
	// matches sees the function's symbol, the object it is in (perf's
	// dso: the executable, [kernel.kallsyms], [vdso]) and whether it is
	// the kernel's.
	matches func(sym, dso string, kernel bool) bool
}{
	{"RSA decryption: OpenSSL's libcrypto (and the C library), through cgo", func(s, dso string, k bool) bool {
		return !k && ((isCSymbol(s) && !strings.HasPrefix(dso, "[")) || hasAnyPrefix(s, "runtime.cgocall", "runtime.asmcgocall", "runtime.cgoCheck", "github.com/enclavekit/kmsproxy/internal/cms._Cfunc"))
	}},
	{"RSA decryption: crypto/rsa", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "crypto/rsa.", "crypto/internal/fips140/rsa.", "crypto/internal/fips140/bigmod.")
	}},
	{"aws-sdk-go-v2: middleware, serialization, SigV4, deserialization", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "github.com/aws/")
	}},
	{"net/http server and client, buffered I/O", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "net/http.", "net/textproto.", "net/url.", "net.", "bufio.", "internal/poll.", "mime.", "vendor/golang.org/x/net/")
	}},
	{"TLS to KMS: records, AES-GCM, handshakes", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "crypto/tls.", "crypto/aes.", "crypto/cipher.", "crypto/internal/fips140/aes", "crypto/internal/fips140/mlkem", "crypto/internal/fips140/ecdh", "crypto/internal/fips140/nistec", "crypto/internal/fips140/edwards25519", "crypto/ecdh.", "crypto/x509.", "vendor/golang.org/x/crypto/")
	}},
	{"SHA-256 and HMAC (SigV4 signing, TLS, the envelope's key id)", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "crypto/sha256.", "crypto/hmac.", "crypto/internal/fips140/sha256", "crypto/internal/fips140/hmac", "crypto/sha512.", "crypto/internal/fips140/sha512")
	}},
	{"JSON and base64 (KMS API bodies)", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "encoding/json.", "encoding/base64.", "strconv.", "unicode/utf8.")
	}},
	{"logging (log/slog)", func(s, _ string, _ bool) bool { return hasAnyPrefix(s, "log/slog.") }},
	{"metrics (Prometheus client)", func(s, _ string, _ bool) bool { return hasAnyPrefix(s, "github.com/prometheus/") }},
	{"CMS envelope: parsing, AES-256-CBC", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "github.com/enclavekit/kmsproxy/internal/cms.")
	}},
	{"kmsproxyd's own request handling, policy, upstream queue", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "github.com/enclavekit/kmsproxy/")
	}},
	{"Go garbage collector", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "runtime.gc", "runtime.scanobject", "runtime.scanObject", "runtime.greyobject", "runtime.markBits", "runtime.findObject",
			"runtime.(*gcWork)", "runtime.(*gcBits)", "runtime.wbBuf", "runtime.bulkBarrier", "runtime.(*mspan).sweep", "runtime.sweepone",
			"runtime.bgsweep", "runtime.(*sweepLocked)", "runtime.markroot", "runtime.scanstack", "runtime.scanframe", "runtime.scanblock",
			"runtime.(*stkframe)", "runtime.typePointers", "runtime.(*mspan).typePointers", "runtime.spanOf", "runtime.pageIndexOf",
			"runtime.(*gcControllerState)", "runtime.gcWriteBarrier", "runtime.(*mspan).heapBits", "runtime.heapSetType", "runtime.(*mheap).freeSpan",
			"runtime.tryDeferToSpanScan", "runtime.scanSpan", "runtime.(*spanInlineMarkBits)", "runtime.spanSet", "internal/runtime/gc/")
	}},
	{"Go memory allocation", func(s, _ string, _ bool) bool {
		return hasAnyPrefix(s, "runtime.mallocgc", "runtime.(*mcache)", "runtime.(*mcentral)", "runtime.nextFreeFast", "runtime.newobject",
			"runtime.makeslice", "runtime.growslice", "runtime.(*mheap)", "runtime.memclrNoHeapPointers", "runtime.rawstring", "runtime.rawbyteslice",
			"runtime.slicebytetostring", "runtime.concatstring", "runtime.makemap", "runtime.mapassign", "runtime.(*mspan)", "runtime.deductAssistCredit")
	}},
	{"Go scheduler, other runtime work", func(s, _ string, _ bool) bool { return hasAnyPrefix(s, "runtime.", "sync.", "internal/") }},
	{"other", func(string, string, bool) bool { return true }},
}

// isCSymbol reports whether a symbol is a C function's: Go's are
// qualified with their package path (a dot, often a slash).
func isCSymbol(sym string) bool {
	if strings.HasPrefix(sym, "0x") || strings.HasPrefix(sym, "[") { // not resolved: 0x..., [unknown]
		return false
	}
	return !strings.ContainsAny(sym, "./") || strings.HasPrefix(sym, "_cgo_") || strings.HasPrefix(sym, "x_cgo_")
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Parts a sample goes to by its whole stack rather than by the function
// it was in.
const (
	partSysmon     = "Go runtime's sysmon thread (polls every 20 µs while calls block, e.g. cgo)"
	partWakeups    = "kernel: threads sleeping and waking (goroutine hand-offs between threads, futex)"
	partSockets    = "kernel: socket reads and writes, epoll"
	partInterrupts = "kernel: interrupts, preemption, page faults"
)

// profileShare is one part's share of the samples, in percent.
type profileShare struct {
	part  string
	share float64
}

// frame is one line of a stack in `perf script` output.
type frame struct {
	sym, dso string
}

func (f frame) kernel() bool { return f.dso == "[kernel.kallsyms]" }

// classify names the part of kmsproxyd a sample belongs to, from its
// stack, leaf first. Work on behalf of sysmon counts as sysmon's; kernel
// time counts by what the process asked of the kernel (a sleep or wake-up
// between goroutines, a socket operation) or as an interruption; user
// time counts by the function the CPU was in.
func classify(stack []frame) string {
	if len(stack) == 0 {
		return "other"
	}
	for _, f := range stack {
		if f.sym == "runtime.sysmon" {
			return partSysmon
		}
	}
	leaf := stack[0]
	if !leaf.kernel() {
		for _, p := range profileParts {
			if p.matches(leaf.sym, leaf.dso, false) {
				return p.name
			}
		}
		return "other"
	}
	for _, f := range stack {
		if f.kernel() {
			continue
		}
		switch {
		case hasAnyPrefix(f.sym, "runtime.futex", "runtime.usleep", "runtime.osyield", "runtime.notesleep", "runtime.notewakeup",
			"runtime.semasleep", "runtime.semawakeup", "runtime.tgkill", "runtime.signalM", "runtime.preemptM"):
			return partWakeups
		case hasAnyPrefix(f.sym, "runtime.netpoll", "internal/poll.", "syscall.", "internal/runtime/syscall", "net.", "runtime.write", "runtime.read"):
			return partSockets
		}
	}
	return partInterrupts
}

// parseProfile reads `perf script -F comm,tid,ip,sym,dso` output of a
// recording with call stacks (a header line per sample, then one indented
// line per frame, "\taddr symbol (dso)", leaf first, and a blank line)
// and returns each part's share of the samples, the largest first, without
// the parts that have none.
func parseProfile(r io.Reader) ([]profileShare, error) {
	byPart := map[string]int{}
	total := 0
	var stack []frame
	inSample := false
	flush := func() {
		if inSample {
			byPart[classify(stack)]++
			total++
		}
		stack, inSample = stack[:0], false
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case strings.HasPrefix(line, "#"):
			continue
		case line[0] != ' ' && line[0] != '\t':
			flush()
			inSample = true
		default:
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			dso := strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "("), ")")
			sym := strings.Join(f[1:len(f)-1], " ")
			if i := strings.LastIndex(sym, "+0x"); i > 0 {
				sym = sym[:i]
			}
			stack = append(stack, frame{sym: sym, dso: dso})
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if total == 0 {
		return nil, fmt.Errorf("the profile has no samples")
	}
	var out []profileShare
	for part, n := range byPart {
		out = append(out, profileShare{part, 100 * float64(n) / float64(total)})
	}
	slices.SortFunc(out, func(a, b profileShare) int {
		switch {
		case a.share > b.share:
			return -1
		case a.share < b.share:
			return 1
		}
		return strings.Compare(a.part, b.part)
	})
	return out, nil
}

// havePerf reports whether Linux perf can be run here.
func havePerf() bool {
	_, err := exec.LookPath("perf")
	return err == nil
}

// startPerf starts `perf record -g` on pid into file and returns a
// function that stops it.
func startPerf(file string, pid int) (func(), error) {
	cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", file)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start perf: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // let it attach
	return func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}, nil
}

// perfReport summarizes a perf recording of kmsproxyd by part.
func perfReport(ctx context.Context, file string) ([]profileShare, error) {
	cmd := exec.CommandContext(ctx, "perf", "script", "-i", file, "-F", "comm,tid,ip,sym,dso")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("perf script: %w", err)
	}
	shares, perr := parseProfile(out)
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("perf script: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return shares, perr
}

// startPerfStat starts `perf stat` counting pid's system calls and context
// switches and returns a function that stops it and returns the counts by
// event name.
func startPerfStat(pid int) (func() map[string]float64, error) {
	var out strings.Builder
	cmd := exec.Command("perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches", "-p", strconv.Itoa(pid))
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start perf stat: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // let it attach
	return func() map[string]float64 {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
		m := map[string]float64{}
		for line := range strings.SplitSeq(out.String(), "\n") {
			f := strings.Split(line, ",") // value,unit,event,...
			if len(f) < 3 {
				continue
			}
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				m[f[2]] = v
			}
		}
		return m
	}, nil
}

// tempPerfFile is a file name for a recording nobody asked to keep.
func tempPerfFile(dir string) string { return dir + string(os.PathSeparator) + "kmsproxyd.perf" }
