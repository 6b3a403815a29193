package attestation

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// MaxMeasurementsSize bounds a measurements file. `nitro-cli build-enclave`
// and `describe-eif` print well under 4 KiB (the measurements plus, for
// describe-eif, signing-certificate details and build metadata) and
// nitro-tpm-pcr-compute three PCRs in under 1 KiB; 64 KiB leaves room for
// verbose metadata and for all 24 of an instance's PCRs.
const MaxMeasurementsSize = 64 << 10

// measurementsFormat is how the build tool of one kind of document writes
// its PCRs.
type measurementsFormat struct {
	tool string // who writes it, for messages
	// hashAlgorithm is what the tool writes in HashAlgorithm; accepted
	// says whether a value names that bank.
	hashAlgorithm string
	accepted      func(string) bool
}

var measurementsFormats = map[Kind]measurementsFormat{
	// nitro-cli prints Rust's Debug form of the algorithm, "Sha384 { ... }"
	// (https://docs.aws.amazon.com/enclaves/latest/user/cmd-nitro-describe-eif.html).
	KindEnclave: {tool: "nitro-cli", hashAlgorithm: "Sha384 { ... }",
		accepted: func(v string) bool { return strings.HasPrefix(v, "Sha384") }},
	// nitro-tpm-pcr-compute prints aws-lc-rs's name, "SHA384"
	// (github.com/aws/NitroTPM-Tools, nitro-tpm-pcr-compute/README.md and
	// src/build_info.rs, which "mimic the Nitro Enclave build info
	// output"); nitro-cli's "Sha384 { ... }" names the same bank.
	KindNitroTPM: {tool: "nitro-tpm-pcr-compute", hashAlgorithm: "SHA384",
		accepted: func(v string) bool { return strings.HasPrefix(strings.ToUpper(v), "SHA384") }},
}

// LoadMeasurements reads a measurements file of the given kind (see
// ParseMeasurements).
func LoadMeasurements(path string, kind Kind) (map[int][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("measurements: failed to open: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxMeasurementsSize+1))
	if err != nil {
		return nil, fmt.Errorf("measurements: failed to read %s: %w", path, err)
	}
	pcrs, err := ParseMeasurements(b, kind)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return pcrs, nil
}

// ParseMeasurements decodes the measurements JSON of an enclave image
// (what `nitro-cli build-enclave` and `nitro-cli describe-eif` print) or of
// an Attestable AMI (what AWS's nitro-tpm-pcr-compute prints), the same
// shape for both:
//
//	{"Measurements": {"HashAlgorithm": "Sha384 { ... }" or "SHA384",
//	                  "PCR0": "<96 hex digits>", ...}}
//
// Other top-level fields (describe-eif adds EifVersion, IsSigned, ...) are
// ignored; the bare inner object, as people often save it, is accepted too.
// Inside it only HashAlgorithm (which must name SHA-384) and the kind's
// PCRs (PCR0-PCR15 of an enclave, PCR0-PCR23 of an instance; 48 bytes each,
// in hex) are allowed, and at least one PCR must be present.
func ParseMeasurements(b []byte, kind Kind) (map[int][]byte, error) {
	format, ok := measurementsFormats[kind]
	if !ok {
		return nil, fmt.Errorf("measurements: no format for documents of kind %v", kind)
	}
	if len(b) > MaxMeasurementsSize {
		return nil, fmt.Errorf("measurements: %d bytes; the limit is %d", len(b), MaxMeasurementsSize)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("measurements: failed to decode the JSON: %w", err)
	}
	inner, ok := top["Measurements"]
	if !ok {
		inner = b // the bare {"HashAlgorithm": ..., "PCR0": ...} object
	}
	if bytes.Equal(bytes.TrimSpace(inner), []byte("null")) {
		return nil, fmt.Errorf("measurements: Measurements is null")
	}
	var fields map[string]string
	if err := json.Unmarshal(inner, &fields); err != nil {
		return nil, fmt.Errorf("measurements: Measurements must map names to strings: %w", err)
	}
	pcrs := make(map[int][]byte)
	for name, value := range fields {
		if name == "HashAlgorithm" {
			if !format.accepted(value) {
				return nil, fmt.Errorf("measurements: HashAlgorithm is %.40q; %s documents report the SHA-384 bank (%s writes %q)", value, kind, format.tool, format.hashAlgorithm)
			}
			continue
		}
		idx, ok := measuredPCRIndex(name, kind)
		if !ok {
			return nil, fmt.Errorf("measurements: unexpected field %.40q in Measurements (want HashAlgorithm and PCR0-PCR%d)", name, kind.PCRCount()-1)
		}
		if len(value) != 2*PCRSize {
			return nil, fmt.Errorf("measurements: %s is %d hex digits; SHA-384 PCRs are %d", name, len(value), 2*PCRSize)
		}
		v, err := hex.DecodeString(value)
		if err != nil {
			return nil, fmt.Errorf("measurements: %s is not hex", name)
		}
		pcrs[idx] = v
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("measurements: no PCRs")
	}
	return pcrs, nil
}

// measuredPCRIndex parses "PCR<n>", n written canonically and in the
// kind's range.
func measuredPCRIndex(name string, kind Kind) (int, bool) {
	digits, ok := strings.CutPrefix(name, "PCR")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || n >= kind.PCRCount() || strconv.Itoa(n) != digits {
		return 0, false
	}
	return n, true
}

// MarshalMeasurements is the inverse of ParseMeasurements: the JSON that the
// kind's build tool prints for these PCRs (each 48 bytes), for tools and
// tests that stand in for a build.
func MarshalMeasurements(pcrs map[int][]byte, kind Kind) ([]byte, error) {
	format, ok := measurementsFormats[kind]
	if !ok {
		return nil, fmt.Errorf("measurements: no format for documents of kind %v", kind)
	}
	fields := map[string]string{"HashAlgorithm": format.hashAlgorithm}
	for i, v := range pcrs {
		if i < 0 || i >= kind.PCRCount() || len(v) != PCRSize {
			return nil, fmt.Errorf("measurements: PCR%d of %d bytes cannot be measured (want PCR0-PCR%d of %d bytes)", i, len(v), kind.PCRCount()-1, PCRSize)
		}
		fields["PCR"+strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return json.MarshalIndent(map[string]any{"Measurements": fields}, "", "  ")
}
