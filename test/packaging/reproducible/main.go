// Command reproducible is "make reproducible": it builds kmsproxyd twice, in
// two clean directories, exactly as Dockerfile.enclave builds it, and fails
// unless the two binaries are byte-identical. The enclave's PCRs are hashes
// of the image that holds this binary, so anyone who rebuilds the same source
// must get the same bytes for a key policy's measurements to mean anything.
//
// It then runs the binary's --version alone in an empty root directory, as
// the enclave image runs it, to show that it is static and that its RSA
// backend is the one the Dockerfile chose.
//
// Usage:
//
//	go run ./test/packaging/reproducible [-out build/kmsproxyd] [-goarch arm64] [-build-arg VERSION=v1.4.2] [-build-arg CGO_ENABLED=0]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/enclavekit/kmsproxy/test/packaging"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reproducible", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", ".", "module root and docker build context")
	dockerfile := fs.String("dockerfile", "", "Dockerfile to replay (default ROOT/Dockerfile.enclave)")
	out := fs.String("out", "", "write the (identical) binary to this file, e.g. build/kmsproxyd")
	goarch := fs.String("goarch", "", "GOARCH to build for (default: the go command's, as docker builds for the host)")
	work := fs.String("work", "", "directory for the two build directories (default: the system temporary directory)")
	buildArgs := map[string]string{}
	fs.Func("build-arg", "`NAME=value` as docker build --build-arg gives it, e.g. VERSION=v1.4.2 or CGO_ENABLED=0 (repeatable)", func(s string) error {
		name, value, ok := strings.Cut(s, "=")
		if !ok || name == "" {
			return fmt.Errorf("want NAME=value, e.g. VERSION=v1.4.2")
		}
		buildArgs[name] = value
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: go run ./test/packaging/reproducible [flags]

Build kmsproxyd twice in separate clean directories (fresh copies of what
Dockerfile.enclave's builder stage copies, different paths, separate GOCACHE
and GOTMPDIR; only the module cache is shared) with the Dockerfile's exact
go build line and build arguments, and fail unless the two binaries are
byte-identical; then run the binary's --version alone in an empty root.
The default build links OpenSSL's libcrypto statically: it needs gcc and
libssl-dev here (-build-arg CGO_ENABLED=0 replays the pure Go build).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "reproducible: error: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	absRoot, err := filepath.Abs(*root)
	if err != nil {
		fmt.Fprintf(stderr, "reproducible: error: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	fmt.Fprintln(stdout, "reproducible: building kmsproxyd twice (a minute or two)")
	rep, err := packaging.Reproduce(ctx, packaging.ReproduceConfig{
		Root:       absRoot,
		Dockerfile: *dockerfile,
		WorkDir:    *work,
		GOARCH:     *goarch,
		BuildArgs:  buildArgs,
		Out:        *out,
		Log:        prefixWriter{stdout},
	})
	if rep != nil {
		fmt.Fprintf(stdout, "reproducible: %s with %s\n", rep.Command, strings.Join(rep.Env, " "))
		for i, sum := range rep.SHA256 {
			if sum != "" {
				fmt.Fprintf(stdout, "kmsproxyd build %d sha256 %s\n", i+1, sum)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "reproducible: error: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "reproducible: OK: the two builds are byte-identical (%d bytes, RSA backend %s)\n", rep.Size, rep.Backend)
	if runtime.GOOS == "linux" && (*goarch == "" || *goarch == runtime.GOARCH) {
		v, err := packaging.RunInEmptyRoot(ctx, rep.Binary, "--version")
		if err != nil {
			fmt.Fprintf(stderr, "reproducible: error: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "reproducible: OK: runs alone in an empty root: %s\n", strings.TrimSpace(v))
	}
	if rep.Libcrypto != "" && rep.LocalLibcrypto != rep.Libcrypto {
		fmt.Fprintf(stdout, "reproducible: note: built with libssl-dev %s; Dockerfile.enclave pins %s, so the image's binary will differ from this one\n",
			rep.LocalLibcrypto, rep.Libcrypto)
	}
	if rep.BuilderGoVersion != "" && "go"+rep.BuilderGoVersion != rep.GoVersion {
		fmt.Fprintf(stdout, "reproducible: note: built with %s; Dockerfile.enclave's builder has go%s, so the image's binary will differ from this one\n",
			rep.GoVersion, rep.BuilderGoVersion)
	} else {
		fmt.Fprintf(stdout, "reproducible: built with %s, the Go release of Dockerfile.enclave's builder image\n", rep.GoVersion)
	}
	if *out != "" {
		fmt.Fprintf(stdout, "reproducible: wrote %s\n", *out)
	}
	return 0
}

type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(p.w, "reproducible: %s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}
