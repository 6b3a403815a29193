package nsmsim_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// FuzzParseMeasurements: no panic, nsmsim: errors, and whatever parses is
// a usable PCR set for New.
func FuzzParseMeasurements(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if len(files) == 0 {
		f.Fatal("FuzzParseMeasurements has no seeds: testdata/*.json is missing")
	}
	ca, err := nsmsim.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pcrs, err := nsmsim.ParseMeasurements(b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "nsmsim: ") {
				t.Fatalf("error without the nsmsim: prefix: %v", err)
			}
			return
		}
		if len(pcrs) == 0 || len(pcrs) > attestation.PCRCount {
			t.Fatalf("%d PCRs parsed", len(pcrs))
		}
		if _, err := nsmsim.New(ca, nsmsim.Options{PCRs: pcrs}); err != nil {
			t.Fatalf("parsed measurements are not usable: %v", err)
		}
	})
}
