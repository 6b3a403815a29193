package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// memorySettings reads the collector's settings without changing them:
// SetGCPercent returns the previous value, and a negative limit only reads.
func memorySettings() (gogc int, limit int64) {
	gogc = debug.SetGCPercent(100)
	debug.SetGCPercent(gogc)
	return gogc, debug.SetMemoryLimit(-1)
}

func TestApplyMemoryDefaults(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		wantGOGC  int
		wantLimit int64
		want      string
	}{
		{
			name:     "neither set: kmsproxyd's defaults",
			wantGOGC: defaultGOGC, wantLimit: defaultMemoryLimit,
			want: "GOGC=200 GOMEMLIMIT=28MiB (kmsproxyd's defaults)",
		},
		{
			// The runtime applied GOGC=50 at start; kmsproxyd leaves it.
			name:     "GOGC from the environment",
			env:      map[string]string{"GOGC": "50"},
			wantGOGC: 50, wantLimit: defaultMemoryLimit,
			want: "GOGC=50 GOMEMLIMIT=28MiB (GOMEMLIMIT: kmsproxyd's default)",
		},
		{
			name:     "GOMEMLIMIT=off from the environment",
			env:      map[string]string{"GOMEMLIMIT": "off"},
			wantGOGC: defaultGOGC, wantLimit: math.MaxInt64,
			want: "GOGC=200 GOMEMLIMIT=off (GOGC: kmsproxyd's default)",
		},
		{
			name:     "both from the environment",
			env:      map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"},
			wantGOGC: -1, wantLimit: 1 << 30,
			want: "GOGC=off GOMEMLIMIT=1GiB (from the environment)",
		},
	}
	gogc0, limit0 := memorySettings()
	t.Cleanup(func() {
		debug.SetGCPercent(gogc0)
		debug.SetMemoryLimit(limit0)
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// What the runtime would have set from the environment at start.
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			switch tt.env["GOGC"] {
			case "50":
				debug.SetGCPercent(50)
			case "off":
				debug.SetGCPercent(-1)
			}
			if tt.env["GOMEMLIMIT"] == "1GiB" {
				debug.SetMemoryLimit(1 << 30)
			}
			got := applyMemoryDefaults(func(k string) string { return tt.env[k] })
			if got != tt.want {
				t.Errorf("applyMemoryDefaults = %q, want %q", got, tt.want)
			}
			gogc, limit := memorySettings()
			if gogc != tt.wantGOGC || limit != tt.wantLimit {
				t.Errorf("GOGC %d, GOMEMLIMIT %d after; want %d, %d", gogc, limit, tt.wantGOGC, tt.wantLimit)
			}
		})
	}
}
