package nitrotpmsim

import (
	"bytes"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// MaxMeasurementsSize bounds a measurements file
// (attestation.MaxMeasurementsSize).
const MaxMeasurementsSize = attestation.MaxMeasurementsSize

// LoadMeasurements reads the JSON that AWS's nitro-tpm-pcr-compute prints
// for an Attestable AMI (attestation.LoadMeasurements of an instance's).
func LoadMeasurements(path string) (map[int][]byte, error) {
	return attestation.LoadMeasurements(path, attestation.KindNitroTPM)
}

// ParseMeasurements decodes nitro-tpm-pcr-compute's JSON
// (attestation.ParseMeasurements of an instance's): any of PCR0-PCR23.
func ParseMeasurements(b []byte) (map[int][]byte, error) {
	return attestation.ParseMeasurements(b, attestation.KindNitroTPM)
}

// MarshalMeasurements is the inverse of ParseMeasurements: the JSON
// nitro-tpm-pcr-compute prints for these PCRs, for tests and tools that
// stand in for an AMI build.
func MarshalMeasurements(pcrs map[int][]byte) ([]byte, error) {
	return attestation.MarshalMeasurements(pcrs, attestation.KindNitroTPM)
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
