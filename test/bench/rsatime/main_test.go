package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/cms"
)

func TestRunAnswersEachCount(t *testing.T) {
	var out strings.Builder
	if err := run(strings.NewReader("3\n\n5\n"), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d answers for 2 counts:\n%s", len(lines), out.String())
	}
	for i, want := range []int{3, 5} {
		var a Answer
		if err := json.Unmarshal([]byte(lines[i]), &a); err != nil {
			t.Fatal(err)
		}
		if len(a.Backends) != len(cms.Backends()) {
			t.Errorf("answer %d has %d backends, the binary links %v", i, len(a.Backends), cms.Backends())
		}
		for j, b := range a.Backends {
			if b.Name != string(cms.Backends()[j]) || b.N != want || b.MedianNs <= 0 || b.Version == "" {
				t.Errorf("answer %d, backend %d: %+v; want %s, n=%d, a positive time and a version", i, j, b, cms.Backends()[j], want)
			}
		}
	}
}

func TestParseCount(t *testing.T) {
	tests := []struct {
		line string
		want int
		ok   bool
	}{
		{"1", 1, true},
		{"100000", maxCount, true}, // the limit
		{"100001", 0, false},       // one past it
		{"0", 0, false},
		{"-1", 0, false},
		{"many", 0, false},
	}
	for _, tt := range tests {
		got, err := parseCount(tt.line)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("parseCount(%q) = %d, %v; want %d, ok %v", tt.line, got, err, tt.want, tt.ok)
		}
	}
}

func TestRunStopsAtABadCount(t *testing.T) {
	var out strings.Builder
	err := run(strings.NewReader("2\nmany\n3\n"), &out)
	if err == nil || !strings.Contains(err.Error(), `want a count from 1 to 100000 per line, got "many"`) {
		t.Errorf("err = %v", err)
	}
	if n := strings.Count(out.String(), "\n"); n != 1 {
		t.Errorf("%d answers before the bad line, want 1", n)
	}
}
