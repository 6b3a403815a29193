// Command rsatime times the one operation no attested request can avoid,
// an RSA-2048 RSAES-OAEP-SHA256 decryption of a 32-byte content-encryption
// key, with every RSA backend linked into it (internal/cms: OpenSSL's
// libcrypto when built with cgo and -tags openssl, and crypto/rsa). The
// benchmark harness (test/bench) builds it with the same flags as the
// kmsproxyd it measures, so that t_floor is the fastest implementation that
// build can run, and asks it for a measurement between its other rounds.
//
// It reads one count per line on standard input and answers each with one
// JSON line on standard output: for every backend, the median CPU time of
// that many decryptions, each timed alone with the thread's CPU clock
// (CLOCK_THREAD_CPUTIME_ID) on one locked OS thread, the backends taking
// turns decryption by decryption. Time the thread spends descheduled does
// not count, so other processes on a busy machine do not inflate it. It
// exits at the end of its input.
//
//	$ echo 200 | rsatime
//	{"backends":[{"name":"openssl","version":"OpenSSL 3.0.17 ...","median_ns":372000,"n":200},{"name":"go",...}]}
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/enclavekit/kmsproxy/internal/cms"
)

// maxCount bounds one request: 100,000 decryptions take under a few
// minutes with the slowest backend on any machine that runs Nitro
// Enclaves; a larger number is a typing error.
const maxCount = 100_000

// Result is one backend's measurement.
type Result struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	MedianNs int64  `json:"median_ns"`
	N        int    `json:"n"`
}

// Answer is one line of output: every linked backend, the default first.
type Answer struct {
	Backends []Result `json:"backends"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "rsatime: error: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, make([]byte, 32), nil)
	if err != nil {
		return err
	}
	names := cms.Backends()
	keys := make([]*cms.Key, len(names))
	for i, b := range names {
		// Each backend its own copy, as kmsproxyd's keys are made.
		k := *priv
		if keys[i], err = cms.NewKeyWithBackend(&k, b); err != nil {
			return err
		}
	}
	runtime.LockOSThread()
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		n, err := parseCount(line)
		if err != nil {
			return err
		}
		times := make([][]int64, len(keys))
		for r := range n {
			for j := range keys {
				i := (r + j) % len(keys) // rotate who goes first
				t0, err := threadCPU()
				if err != nil {
					return err
				}
				cek, err := keys[i].DecryptOAEP(ct)
				t1, err2 := threadCPU()
				if err != nil || err2 != nil || len(cek) != 32 {
					return fmt.Errorf("%s: decryption failed: %v %v", names[i], err, err2)
				}
				times[i] = append(times[i], t1-t0)
			}
		}
		var a Answer
		for i, b := range names {
			slices.Sort(times[i])
			a.Backends = append(a.Backends, Result{Name: string(b), Version: cms.BackendVersion(b), MedianNs: times[i][n/2], N: n})
		}
		if err := enc.Encode(a); err != nil {
			return err
		}
	}
	return sc.Err()
}

// parseCount reads one line of input: a count from 1 to maxCount.
func parseCount(line string) (int, error) {
	n, err := strconv.Atoi(line)
	if err != nil || n < 1 || n > maxCount {
		return 0, fmt.Errorf("want a count from 1 to %d per line, got %q", maxCount, line)
	}
	return n, nil
}

// threadCPU is the CPU time the calling OS thread has used, in ns.
func threadCPU() (int64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime: %w", err)
	}
	return ts.Nano(), nil
}
