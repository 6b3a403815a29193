// Command enclaveapp is the in-enclave application of the end-to-end tests:
// the tests run it inside the enclave's network namespace, where it reaches
// kmsproxyd only through the local listener, as an app packaged in the
// enclave image would.
//
//	enclaveapp mission --enclave tcp://127.0.0.1:8000 < input.json > result.json
//	enclaveapp dial tcp://127.0.0.1:4599
//
// mission reads a mission.Input as JSON on stdin, does the mission with the
// client package and writes the mission.Result as JSON on stdout. dial tries
// to open a connection and exits 0 if it could, 1 (printing why) if not:
// the tests use it to show what the namespace cannot reach.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/test/internal/mission"
)

// maxInput bounds the mission input read from stdin: a ciphertext (at most
// 6144 bytes for KMS), a public key and a few names, in JSON.
const maxInput = 64 << 10

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: enclaveapp mission --enclave ADDR < input.json | enclaveapp dial ADDR")
		return 2
	}
	switch args[0] {
	case "mission":
		return runMission(args[1:], stdin, stdout, stderr)
	case "dial":
		return runDial(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "enclaveapp: error: unknown command %q\n", args[0])
	return 2
}

func runMission(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mission", flag.ContinueOnError)
	fs.SetOutput(stderr)
	enclave := fs.String("enclave", "tcp://127.0.0.1:8000", "kmsproxyd address")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	b, err := io.ReadAll(io.LimitReader(stdin, maxInput+1))
	if err != nil || len(b) > maxInput {
		fmt.Fprintf(stderr, "enclaveapp: error: failed to read the input (at most %d bytes): %v\n", maxInput, err)
		return 1
	}
	var in mission.Input
	if err := json.Unmarshal(b, &in); err != nil {
		fmt.Fprintf(stderr, "enclaveapp: error: failed to parse the input: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := client.New(ctx, *enclave)
	if err != nil {
		fmt.Fprintf(stderr, "enclaveapp: error: %v\n", err)
		return 1
	}
	r, err := mission.Run(ctx, c, in)
	if err != nil {
		fmt.Fprintf(stderr, "enclaveapp: error: %v\n", err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(r); err != nil {
		fmt.Fprintf(stderr, "enclaveapp: error: failed to write the result: %v\n", err)
		return 1
	}
	return 0
}

func runDial(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: enclaveapp dial ADDR")
		return 2
	}
	a, err := transport.Parse(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "enclaveapp: error: %v\n", err)
		return 2
	}
	if a.Network == transport.VSOCK {
		// The test machines' vsock device leads outside the sandbox
		// (the test machines' vsock device leads outside the sandbox): never dial it.
		fmt.Fprintln(stderr, "enclaveapp: error: refusing to dial a vsock address")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := transport.DialFunc(a)(ctx, "", "")
	if err != nil {
		fmt.Fprintf(stdout, "cannot connect: %v\n", err)
		return 1
	}
	c.Close()
	fmt.Fprintln(stdout, "connected")
	return 0
}
