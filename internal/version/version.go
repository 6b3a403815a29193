// Package version says which release of kmsproxy a binary is, so that
// kmsproxyd's --version, its ready log line and /v1/info, and the other
// commands' --version, name the release an operator deployed.
//
// Production builds cannot rely on Go's build information for that: the
// enclave image is built with -buildvcs=false (a VCS stamp would make the
// binary, and so the enclave's measurements, depend on the checkout) and
// from a copied source tree, where the module version is "(devel)". Release
// builds therefore stamp the version with the linker:
//
//	go build -ldflags "-X github.com/enclavekit/kmsproxy/internal/version.Version=v1.4.2" ./cmd/kmsproxyd
//
// "make build" and "make reproducible" do so with git describe, the
// enclave image with its VERSION build argument. The same version gives the
// same bytes: the stamp is the only input.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is the release, set by -ldflags -X at build time; empty in an
// unstamped build.
var Version string

// String returns the stamped release; without one, the module version Go
// recorded (a tagged version for go install, "(devel)" for a build from a
// checkout) with the first 12 digits of the VCS revision when Go stamped it,
// and "+dirty" for a modified checkout.
func String() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " " + rev
		if dirty {
			v += "+dirty"
		}
	}
	return v
}

// Go is the Go release the binary was built with, e.g. go1.26.8.
func Go() string { return runtime.Version() }
