package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// build is one way of compiling kmsproxyd and the programs measured beside
// it (the floor daemon, rsatime): the enclave image's default, OpenSSL's
// libcrypto through cgo and linked statically, or pure Go.
type build struct {
	// name is "openssl" or "go", as kmsproxyd's --version names its RSA
	// backend.
	name string
	// label says in the table what the build is.
	label string
	env   []string
	tags  string
	flags []string
}

// The two builds, each as `make build` compiles kmsproxyd-sim: the same
// tags and link flags as Dockerfile.enclave, plus nsmsim for the simulator.
var (
	buildOpenSSL = build{
		name:  "openssl",
		label: "default build (OpenSSL, static)",
		env:   []string{"CGO_ENABLED=1"},
		tags:  "netgo,osusergo,openssl,nsmsim",
		flags: []string{"-ldflags", "-extldflags=-static"},
	}
	buildGo = build{
		name:  "go",
		label: "pure Go build (CGO_ENABLED=0)",
		env:   []string{"CGO_ENABLED=0"},
		tags:  "nsmsim",
	}
)

// dir is where the build's binaries go under bin.
func (b build) dir(bin string) string { return filepath.Join(bin, b.name) }

// opensslProbe is what `make check-libcrypto` compiles: OpenSSL 3's
// headers must be there.
const opensslProbe = "#include <openssl/evp.h>\n#if OPENSSL_VERSION_MAJOR < 3\n#error OpenSSL 3 needed\n#endif\n"

// haveLibcrypto reports whether this machine can build the OpenSSL
// backend statically, as `make check-libcrypto` decides: a C compiler,
// OpenSSL 3's headers and a static libcrypto.a. When it cannot, the reason
// says what is missing.
func haveLibcrypto(ctx context.Context) (ok bool, reason string) {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		return false, fmt.Sprintf("no C compiler (%s)", cc)
	}
	probe := exec.CommandContext(ctx, cc, "-E", "-x", "c", "-")
	probe.Stdin = strings.NewReader(opensslProbe)
	if err := probe.Run(); err != nil {
		return false, "no OpenSSL 3 headers (openssl/evp.h)"
	}
	out, err := exec.CommandContext(ctx, cc, "-print-file-name=libcrypto.a").Output()
	if err != nil || !hasPath(string(out)) {
		return false, "no static libcrypto.a"
	}
	return true, ""
}

// hasPath reports whether `cc -print-file-name=X` found X: it prints the
// bare name when it did not.
func hasPath(printed string) bool {
	p := strings.TrimSpace(printed)
	return p != "" && strings.ContainsRune(p, filepath.Separator)
}

// compile runs one go build in the repository at root; its output is shown
// only when it fails (the static link's warnings about glibc's resolver
// are expected: netgo keeps it out of the binary's path).
func compile(ctx context.Context, root string, env []string, args ...string) error {
	cmd := exec.CommandContext(ctx, goTool(), append([]string{"build", "-trimpath"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s go build %s: %w\n%s", strings.Join(env, " "), strings.Join(args, " "), err, out.Bytes())
	}
	return nil
}
