package nsmsim_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The PCRs of testdata/build-enclave.json and testdata/describe-eif.json.
const (
	examplePCR0 = "d2a31bdbfb3e7f57c8a256baddf79d92b3352fdf8c0d8a47d8d50d5879fe8ddd93e0eef438d9296a694672369b451ece"
	examplePCR1 = "09115e1d9af21e420adffd1754de23473e8e0f4f414fa0f416fd23e34a9a4f361bc1b2ce062dc02fdd8464598f5a3d53"
	examplePCR2 = "4048b77215c238fa4b6fc5205c9617f58379e46aa3bacf08ceaca7896e01470bb9a1ba3bb3105f228bbc4fe28b4f6d8a"
	examplePCR8 = "4444549a101b70d6bf74cb8bccda17b7dc78b08ddd7444691882d7045cf30f7ab51f461da366943daf4678f7ae8c7d8d"
)

func TestLoadMeasurements(t *testing.T) {
	base := map[int][]byte{0: mustHex(t, examplePCR0), 1: mustHex(t, examplePCR1), 2: mustHex(t, examplePCR2)}
	signed := map[int][]byte{0: base[0], 1: base[1], 2: base[2], 8: mustHex(t, examplePCR8)}
	tests := []struct {
		name string
		file string
		want map[int][]byte
	}{
		{name: "nitro-cli build-enclave", file: "build-enclave.json", want: base},
		{name: "nitro-cli describe-eif of a signed image", file: "describe-eif.json", want: signed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nsmsim.LoadMeasurements(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PCRs (-want +got):\n%s", diff)
			}
			// The simulator reports them.
			ca := newCA(t)
			doc := parseVerify(t, ca, attest(t, newSim(t, ca, nsmsim.Options{PCRs: got}), attestation.Request{}))
			for i, v := range tt.want {
				if string(doc.PCRs[i]) != string(v) {
					t.Errorf("document PCR%d = %x, want %x", i, doc.PCRs[i], v)
				}
			}
		})
	}
	if _, err := nsmsim.LoadMeasurements(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("LoadMeasurements of a missing file succeeded")
	}
}

func TestParseMeasurements(t *testing.T) {
	pcr := func(name, value string) string { return `"` + name + `": "` + value + `"` }
	wrap := func(fields ...string) string {
		return `{"Measurements": {` + strings.Join(fields, ", ") + `}}`
	}
	hashAlg := `"HashAlgorithm": "Sha384 { ... }"`
	tests := []struct {
		name    string
		json    string
		want    map[int][]byte
		wantErr string // substring of the error; empty: success
	}{
		{name: "bare measurements object", json: `{` + hashAlg + `, ` + pcr("PCR0", examplePCR0) + `}`,
			want: map[int][]byte{0: mustHex(t, examplePCR0)}},
		{name: "upper-case hex", json: wrap(pcr("PCR2", strings.ToUpper(examplePCR2))), want: map[int][]byte{2: mustHex(t, examplePCR2)}},
		{name: "PCR15", json: wrap(pcr("PCR15", examplePCR0)), want: map[int][]byte{15: mustHex(t, examplePCR0)}},
		{name: "truncated JSON", json: wrap(pcr("PCR0", examplePCR0))[:40], wantErr: "failed to decode"},
		{name: "not an object", json: `["PCR0"]`, wantErr: "failed to decode"},
		{name: "empty", json: ``, wantErr: "failed to decode"},
		{name: "Measurements null", json: `{"Measurements": null}`, wantErr: "null"},
		{name: "Measurements not an object", json: `{"Measurements": "x"}`, wantErr: "must map names to strings"},
		{name: "PCR as a number", json: `{"Measurements": {"PCR0": 1}}`, wantErr: "must map names to strings"},
		{name: "no PCRs", json: wrap(hashAlg), wantErr: "no PCRs"},
		{name: "SHA-256 measurements", json: wrap(`"HashAlgorithm": "Sha256 { ... }"`, pcr("PCR0", examplePCR0)), wantErr: "Sha384"},
		{name: "PCR of 95 hex digits", json: wrap(pcr("PCR0", examplePCR0[:95])), wantErr: "95 hex digits"},
		{name: "PCR of 32 bytes", json: wrap(pcr("PCR0", examplePCR0[:64])), wantErr: "64 hex digits"},
		{name: "PCR not hex", json: wrap(pcr("PCR0", "zz"+examplePCR0[2:])), wantErr: "not hex"},
		{name: "PCR16", json: wrap(pcr("PCR16", examplePCR0)), wantErr: "unexpected field"},
		{name: "PCR01", json: wrap(pcr("PCR01", examplePCR0)), wantErr: "unexpected field"},
		{name: "PCR-1", json: wrap(pcr("PCR-1", examplePCR0)), wantErr: "unexpected field"},
		{name: "unknown field", json: wrap(pcr("PCR0", examplePCR0), `"Extra": "x"`), wantErr: "unexpected field"},
		{name: "past the size limit", json: wrap(pcr("PCR0", examplePCR0)) + strings.Repeat(" ", nsmsim.MaxMeasurementsSize), wantErr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nsmsim.ParseMeasurements([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "measurements: ") {
					t.Fatalf("ParseMeasurements = %v; want a measurements: error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PCRs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMeasurementsSizeLimit(t *testing.T) {
	valid := `{"Measurements": {"PCR0": "` + examplePCR0 + `"}}`
	atLimit := valid + strings.Repeat(" ", nsmsim.MaxMeasurementsSize-len(valid))
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		data string
		ok   bool
	}{
		{name: "at the limit", data: atLimit, ok: true},
		{name: "past the limit", data: atLimit + " "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "m.json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := nsmsim.LoadMeasurements(path)
			if tt.ok != (err == nil) {
				t.Fatalf("LoadMeasurements of %d bytes: %v", len(tt.data), err)
			}
		})
	}
}

func TestMarshalMeasurements(t *testing.T) {
	pcrs := nsmsim.ImagePCRs("some image")
	if len(pcrs) != 3 || bytes.Equal(pcrs[0], pcrs[1]) || bytes.Equal(pcrs[0], nsmsim.ImagePCRs("another image")[0]) {
		t.Fatalf("ImagePCRs = %x", pcrs)
	}
	b, err := nsmsim.MarshalMeasurements(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	back, err := nsmsim.ParseMeasurements(b)
	if err != nil {
		t.Fatalf("ParseMeasurements of %s: %v", b, err)
	}
	for i, v := range pcrs {
		if !bytes.Equal(back[i], v) {
			t.Errorf("PCR%d = %x after a round trip, want %x", i, back[i], v)
		}
	}
	if len(back) != len(pcrs) {
		t.Errorf("round trip gave %d PCRs, want %d", len(back), len(pcrs))
	}
	for _, bad := range []map[int][]byte{{0: make([]byte, 32)}, {16: make([]byte, 48)}, {-1: make([]byte, 48)}} {
		if _, err := nsmsim.MarshalMeasurements(bad); err == nil {
			t.Errorf("nsmsim.MarshalMeasurements(%v) succeeded", bad)
		}
	}
}
