package main

import (
	"fmt"
	"runtime/debug"
)

// kmsproxyd's garbage-collector defaults, used where the environment does
// not set GOGC or GOMEMLIMIT (the Go runtime reads those itself, and they
// win). Measured with `go run ./test/bench ab`, which alternates rounds of
// two daemons against the same devkms (docs/performance.md):
//
//   - GOGC=defaultGOGC instead of Go's 100 lets the heap grow to three
//     times what is live between collections instead of twice: the
//     collector runs half as often, and kmsproxyd spends 7 to 8 % less CPU
//     per attested Decrypt (ab: 0.934 over 10 rounds; Go's defaults
//     against these, 1.088 over 12). Its steady heap is small (about
//     4 MiB live at rest, 10 to 15 MiB under hundreds of concurrent
//     requests), so the extra headroom costs a few MiB.
//   - GOMEMLIMIT=defaultMemoryLimit caps what that headroom may cost: the
//     collector runs more often as the Go runtime's memory (heap, stacks,
//     its own structures; not the executable's pages nor libcrypto's
//     allocations) nears the limit. The executable's pages (12 to 16 MiB
//     resident) and the limit stay under the 48 MiB of resident memory
//     kmsproxyd is meant to need at 256 concurrent requests. The limit is
//     soft: a daemon that needs more live memory gets it, and collects
//     continually instead of failing.
const (
	defaultGOGC        = 200
	defaultMemoryLimit = 28 << 20
)

// applyMemoryDefaults sets GOGC and GOMEMLIMIT to kmsproxyd's defaults
// where getenv does not set them, and describes the settings in force for
// the ready log line, e.g. "GOGC=200 GOMEMLIMIT=28MiB (kmsproxyd's
// defaults)".
func applyMemoryDefaults(getenv func(string) string) string {
	gogc, limit := getenv("GOGC"), getenv("GOMEMLIMIT")
	var set []string
	if gogc == "" {
		debug.SetGCPercent(defaultGOGC)
		gogc = fmt.Sprint(defaultGOGC)
		set = append(set, "GOGC")
	}
	if limit == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
		limit = fmt.Sprintf("%dMiB", defaultMemoryLimit>>20)
		set = append(set, "GOMEMLIMIT")
	}
	s := fmt.Sprintf("GOGC=%s GOMEMLIMIT=%s", gogc, limit)
	switch len(set) {
	case 2:
		s += " (kmsproxyd's defaults)"
	case 1:
		s += fmt.Sprintf(" (%s: kmsproxyd's default)", set[0])
	default:
		s += " (from the environment)"
	}
	return s
}
