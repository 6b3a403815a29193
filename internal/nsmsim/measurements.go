package nsmsim

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// MaxMeasurementsSize bounds a measurements file. `nitro-cli build-enclave`
// and `describe-eif` print well under 4 KiB (the measurements plus, for
// describe-eif, signing-certificate details and build metadata); 64 KiB
// leaves room for verbose metadata.
const MaxMeasurementsSize = 64 << 10

// LoadMeasurements reads a file holding the JSON that `nitro-cli
// build-enclave` or `nitro-cli describe-eif` prints and returns its PCRs by
// index (see ParseMeasurements).
func LoadMeasurements(path string) (map[int][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to open the measurements: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxMeasurementsSize+1))
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to read %s: %w", path, err)
	}
	pcrs, err := ParseMeasurements(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return pcrs, nil
}

// ParseMeasurements decodes nitro-cli's measurements JSON, documented at
// https://docs.aws.amazon.com/enclaves/latest/user/cmd-nitro-describe-eif.html:
//
//	{"Measurements": {"HashAlgorithm": "Sha384 { ... }",
//	                  "PCR0": "<96 hex digits>", "PCR1": ..., "PCR2": ..., "PCR8": ...}}
//
// Other top-level fields (describe-eif adds EifVersion, IsSigned, ...) are
// ignored; the bare inner object, as people often save it, is accepted too.
// Inside it only HashAlgorithm (which must be Sha384) and PCR0-PCR15 (48
// bytes each, in hex) are allowed, and at least one PCR must be present.
func ParseMeasurements(b []byte) (map[int][]byte, error) {
	if len(b) > MaxMeasurementsSize {
		return nil, fmt.Errorf("nsmsim: measurements are %d bytes; the limit is %d", len(b), MaxMeasurementsSize)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("nsmsim: failed to decode the measurements JSON: %w", err)
	}
	inner, ok := top["Measurements"]
	if !ok {
		inner = b // the bare {"HashAlgorithm": ..., "PCR0": ...} object
	}
	if bytes.Equal(bytes.TrimSpace(inner), []byte("null")) {
		return nil, fmt.Errorf("nsmsim: Measurements is null")
	}
	var fields map[string]string
	if err := json.Unmarshal(inner, &fields); err != nil {
		return nil, fmt.Errorf("nsmsim: Measurements must map names to strings: %w", err)
	}
	pcrs := make(map[int][]byte)
	for name, value := range fields {
		if name == "HashAlgorithm" {
			// nitro-cli prints Rust's Debug form, "Sha384 { ... }".
			if !strings.HasPrefix(value, "Sha384") {
				return nil, fmt.Errorf("nsmsim: HashAlgorithm is %.40q; Nitro Enclaves measure with Sha384", value)
			}
			continue
		}
		idx, ok := pcrIndex(name)
		if !ok {
			return nil, fmt.Errorf("nsmsim: unexpected field %.40q in Measurements (want HashAlgorithm and PCR0-PCR%d)", name, attestation.PCRCount-1)
		}
		if len(value) != 2*attestation.PCRSize {
			return nil, fmt.Errorf("nsmsim: %s is %d hex digits; SHA-384 PCRs are %d", name, len(value), 2*attestation.PCRSize)
		}
		v, err := hex.DecodeString(value)
		if err != nil {
			return nil, fmt.Errorf("nsmsim: %s is not hex", name)
		}
		pcrs[idx] = v
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("nsmsim: the measurements hold no PCRs")
	}
	return pcrs, nil
}

// pcrIndex parses "PCR<n>" with n in 0-15 written canonically.
func pcrIndex(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, "PCR")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || n >= attestation.PCRCount || strconv.Itoa(n) != digits {
		return 0, false
	}
	return n, true
}

// MarshalMeasurements is the inverse of ParseMeasurements: the JSON that
// `nitro-cli build-enclave` prints for an image with these PCRs (each 48
// bytes), for tools and tests that stand in for a build.
func MarshalMeasurements(pcrs map[int][]byte) ([]byte, error) {
	fields := map[string]string{"HashAlgorithm": "Sha384 { ... }"}
	for i, v := range pcrs {
		if i < 0 || i >= attestation.PCRCount || len(v) != attestation.PCRSize {
			return nil, fmt.Errorf("nsmsim: PCR%d of %d bytes cannot be measured (want PCR0-PCR%d of %d bytes)", i, len(v), attestation.PCRCount-1, attestation.PCRSize)
		}
		fields["PCR"+strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return json.MarshalIndent(map[string]any{"Measurements": fields}, "", "  ")
}

// ImagePCRs returns made-up measurements of an enclave image named label:
// PCR0 (image), PCR1 (kernel) and PCR2 (application) are the SHA-384 of
// label+"/image", "/kernel" and "/application", so that two labels are two
// images whose every PCR differs.
func ImagePCRs(label string) map[int][]byte {
	pcrs := make(map[int][]byte)
	for i, part := range []string{"image", "kernel", "application"} {
		h := sha512.Sum384([]byte(label + "/" + part))
		pcrs[i] = h[:]
	}
	return pcrs
}
