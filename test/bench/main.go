// Command bench is kmsproxy's load and benchmark harness (`make bench`,
// `make soak`). It exists to publish how fast kmsproxyd is, measured
// against the one cost no attested request can avoid, with numbers anyone
// can reproduce on their own machine in one run.
//
// Every attested request needs exactly one RSA-2048 OAEP-SHA256 private-key
// operation: KMS encrypts the answer to the enclave's key. t_floor, the time
// of that operation with the fastest backend the build links (OpenSSL's
// libcrypto when it is there), is the unit of every CPU and latency row.
//
// It builds kmsproxyd twice with the NSM simulator, as `make build` builds
// kmsproxyd-sim (OpenSSL's libcrypto through cgo and linked statically, the
// enclave image's default; and pure Go), plus devkms, the floor daemon
// (test/bench/floor), rsatime (test/bench/rsatime, which times t_floor) and
// a kmstool-style one-shot client (test/bench/kmstool). It starts devkms
// (TLS, SigV4, a key whose policy requires the simulated image's PCRs) and
// the daemons as separate processes with their production defaults,
// measures them in alternating rounds, reads their CPU time from the
// kernel's per-thread accounting and their memory from /proc, and prints
// one table whose every number was measured in that run, each target met or
// missed and by how much:
//
//	go run ./test/bench                 # the benchmark table (about 2 minutes)
//	go run ./test/bench -quick          # a shorter, noisier run of the same table
//	go run ./test/bench soak            # 10 minutes at 200 requests/s
//	go run ./test/bench soak -duration 1m
//	go run ./test/bench ab -b /tmp/kmsproxyd-new   # two builds, side by side
//
// Without a C compiler and OpenSSL 3's static libcrypto the OpenSSL build
// is skipped with a message, and t_floor is crypto/rsa's. With Linux perf
// installed, one more round of the CPU row is recorded and the table says
// where the default build's time went (-perf FILE keeps the recording).
//
// Everything runs on unix sockets in a temporary directory,
// and every process is stopped at the end, also on failure or Ctrl-C.
// docs/performance.md explains each row and holds a published run.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	var code int
	switch {
	case len(args) > 0 && args[0] == "soak":
		code = runSoak(ctx, args[1:])
	case len(args) > 0 && args[0] == "ab":
		code = runAB(ctx, args[1:])
	default:
		code = runBench(ctx, args)
	}
	stop()
	os.Exit(code)
}
