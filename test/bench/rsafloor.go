package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// maxRSATimeLine bounds one answer of rsatime: a few hundred bytes of JSON.
const maxRSATimeLine = 64 << 10

// rsaTimes is one measurement of the bare RSA-2048 OAEP-SHA256 decryption.
type rsaTimes struct {
	// floor is the fastest linked backend's time: t_floor.
	floor time.Duration
	// floorBackend names that backend ("openssl" or "go").
	floorBackend string
	// goTime is crypto/rsa's: t_go.
	goTime time.Duration
	// versions describes each backend, e.g. "openssl": "OpenSSL 3.0.17 ...".
	versions map[string]string
	// byName is each backend's time.
	byName map[string]time.Duration
}

// rsaTimer is a running rsatime (test/bench/rsatime).
type rsaTimer struct {
	p   *proc
	in  io.WriteCloser
	out *bufio.Reader
}

// startRSATimer starts rsatime, with more environment variables in env;
// exe should be the build of the kmsproxyd under test, so that it has the
// same backends.
func (w *world) startRSATimer(name, exe string, env ...string) (*rsaTimer, error) {
	logPath := w.path(name + ".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = harness.CleanEnv(env...)
	cmd.Stderr = logf
	in, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), started: time.Now()}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("failed to start rsatime: %w", err)
	}
	w.procs = append(w.procs, p)
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return &rsaTimer{p: p, in: in, out: bufio.NewReaderSize(out, 4096)}, nil
}

// measure times n decryptions with each backend.
func (r *rsaTimer) measure(n int) (rsaTimes, error) {
	if _, err := fmt.Fprintf(r.in, "%d\n", n); err != nil {
		return rsaTimes{}, fmt.Errorf("rsatime: %w", err)
	}
	line, err := readLine(r.out, maxRSATimeLine)
	if err != nil {
		b, _ := os.ReadFile(r.p.logPath)
		return rsaTimes{}, fmt.Errorf("rsatime: %w: %s", err, b)
	}
	return parseRSATimes(line)
}

// readLine reads one line of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("a line longer than %d bytes", max)
		}
		if !isPrefix {
			return line, nil
		}
	}
}

// noIFMA masks AVX-512 IFMA from OpenSSL's CPU detection: the second
// OPENSSL_ia32cap word is CPUID leaf 7's EBX (low 32 bits) and ECX, and
// AVX512IFMA is EBX bit 21 (OpenSSL's doc/man3/OPENSSL_ia32cap.pod).
const noIFMA = "OPENSSL_ia32cap=:~0x200000"

// rsaTimeAnswer is rsatime's answer (test/bench/rsatime.Answer).
type rsaTimeAnswer struct {
	Backends []struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		MedianNs int64  `json:"median_ns"`
		N        int    `json:"n"`
	} `json:"backends"`
}

// parseRSATimes reads one answer of rsatime. crypto/rsa must be among the
// backends; t_floor is the fastest one.
func parseRSATimes(line []byte) (rsaTimes, error) {
	var a rsaTimeAnswer
	if err := json.Unmarshal(line, &a); err != nil {
		return rsaTimes{}, fmt.Errorf("rsatime answered %q: %w", line, err)
	}
	t := rsaTimes{versions: map[string]string{}, byName: map[string]time.Duration{}}
	for _, b := range a.Backends {
		if b.MedianNs <= 0 {
			return rsaTimes{}, fmt.Errorf("rsatime answered a time of %d ns for %s", b.MedianNs, b.Name)
		}
		d := time.Duration(b.MedianNs)
		t.versions[b.Name] = b.Version
		t.byName[b.Name] = d
		if b.Name == string(cms.BackendGo) {
			t.goTime = d
		}
		if t.floor == 0 || d < t.floor {
			t.floor, t.floorBackend = d, b.Name
		}
	}
	if t.goTime == 0 {
		return rsaTimes{}, errors.New("rsatime answered without crypto/rsa's time")
	}
	return t, nil
}

// rsaSeries is every measurement of a run, in order.
type rsaSeries []rsaTimes

func (s rsaSeries) floors() []time.Duration {
	out := make([]time.Duration, len(s))
	for i, t := range s {
		out[i] = t.floor
	}
	return out
}

func (s rsaSeries) goTimes() []time.Duration {
	out := make([]time.Duration, len(s))
	for i, t := range s {
		out[i] = t.goTime
	}
	return out
}

// spread is (max-min)/min of the values.
func spread(ds []time.Duration) float64 {
	lo, hi := slices.Min(ds), slices.Max(ds)
	return float64(hi-lo) / float64(lo)
}
