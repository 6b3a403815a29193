package nitrotpmsim

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// MaxMeasurementsSize bounds a measurements file. nitro-tpm-pcr-compute
// prints three PCRs in well under 1 KiB; 64 KiB leaves room for all 24 and
// whatever else a build pipeline adds around them.
const MaxMeasurementsSize = 64 << 10

// LoadMeasurements reads a measurements file (see ParseMeasurements).
func LoadMeasurements(path string) (map[int][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nitrotpmsim: failed to open the measurements: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxMeasurementsSize+1))
	if err != nil {
		return nil, fmt.Errorf("nitrotpmsim: failed to read %s: %w", path, err)
	}
	pcrs, err := ParseMeasurements(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return pcrs, nil
}

// ParseMeasurements decodes the JSON that AWS's nitro-tpm-pcr-compute
// prints for an Attestable AMI's Unified Kernel Image
// (github.com/aws/NitroTPM-Tools, nitro-tpm-pcr-compute/README.md and
// src/build_info.rs, which "mimic the Nitro Enclave build info output"):
//
//	{"Measurements": {"HashAlgorithm": "SHA384",
//	                  "PCR4": "<96 hex digits>", "PCR7": ..., "PCR12": ...}}
//
// The bare inner object is accepted too, other top-level fields are
// ignored, and any of PCR0-PCR23 may appear (so a file can also pin the
// PCRs the tool does not compute). HashAlgorithm must name SHA-384 (the
// only bank NitroTPM documents report); each value is 48 bytes in hex; at
// least one PCR must be present.
func ParseMeasurements(b []byte) (map[int][]byte, error) {
	if len(b) > MaxMeasurementsSize {
		return nil, fmt.Errorf("nitrotpmsim: measurements are %d bytes; the limit is %d", len(b), MaxMeasurementsSize)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("nitrotpmsim: failed to decode the measurements JSON: %w", err)
	}
	inner, ok := top["Measurements"]
	if !ok {
		inner = b
	}
	if bytes.Equal(bytes.TrimSpace(inner), []byte("null")) {
		return nil, fmt.Errorf("nitrotpmsim: Measurements is null")
	}
	var fields map[string]string
	if err := json.Unmarshal(inner, &fields); err != nil {
		return nil, fmt.Errorf("nitrotpmsim: Measurements must map names to strings: %w", err)
	}
	pcrs := make(map[int][]byte)
	for name, value := range fields {
		if name == "HashAlgorithm" {
			// nitro-tpm-pcr-compute prints aws-lc-rs's algorithm name,
			// "SHA384"; nitro-cli's Rust Debug form "Sha384 { ... }" is
			// the same bank.
			if !strings.HasPrefix(strings.ToUpper(value), "SHA384") {
				return nil, fmt.Errorf("nitrotpmsim: HashAlgorithm is %.40q; NitroTPM documents report the SHA384 bank", value)
			}
			continue
		}
		idx, ok := pcrIndex(name)
		if !ok {
			return nil, fmt.Errorf("nitrotpmsim: unexpected field %.40q in Measurements (want HashAlgorithm and PCR0-PCR%d)", name, attestation.NitroTPMPCRCount-1)
		}
		if len(value) != 2*attestation.PCRSize {
			return nil, fmt.Errorf("nitrotpmsim: %s is %d hex digits; SHA-384 PCRs are %d", name, len(value), 2*attestation.PCRSize)
		}
		v, err := hex.DecodeString(value)
		if err != nil {
			return nil, fmt.Errorf("nitrotpmsim: %s is not hex", name)
		}
		pcrs[idx] = v
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("nitrotpmsim: the measurements hold no PCRs")
	}
	return pcrs, nil
}

// pcrIndex parses "PCR<n>" with n in 0-23 written canonically.
func pcrIndex(name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, "PCR")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 0 || n >= attestation.NitroTPMPCRCount || strconv.Itoa(n) != digits {
		return 0, false
	}
	return n, true
}

// MarshalMeasurements is the inverse of ParseMeasurements: the JSON
// nitro-tpm-pcr-compute prints for these PCRs, for tests and tools that
// stand in for an AMI build.
func MarshalMeasurements(pcrs map[int][]byte) ([]byte, error) {
	fields := map[string]string{"HashAlgorithm": "SHA384"}
	for i, v := range pcrs {
		if i < 0 || i >= attestation.NitroTPMPCRCount || len(v) != attestation.PCRSize {
			return nil, fmt.Errorf("nitrotpmsim: PCR%d of %d bytes cannot be measured (want PCR0-PCR%d of %d bytes)", i, len(v), attestation.NitroTPMPCRCount-1, attestation.PCRSize)
		}
		fields["PCR"+strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return json.MarshalIndent(map[string]any{"Measurements": fields}, "", "  ")
}

// DefaultPCRs returns the PCRs of a freshly booted simulated instance
// before pcrs are applied: all zero except PCR17-22, which a TPM resets to
// all ones (TCG PC Client Platform TPM Profile: the locality-restricted
// PCRs for dynamic launch; every real NitroTPM document in
// internal/attestation/testdata/nitrotpm shows them so). The values in pcrs
// replace the defaults.
func DefaultPCRs(pcrs map[int][]byte) map[int][]byte {
	out := make(map[int][]byte, attestation.NitroTPMPCRCount)
	for i := range attestation.NitroTPMPCRCount {
		v := make([]byte, attestation.PCRSize)
		if i >= 17 && i <= 22 {
			for j := range v {
				v[j] = 0xff
			}
		}
		out[i] = v
	}
	for i, v := range pcrs {
		out[i] = bytes.Clone(v)
	}
	return out
}
