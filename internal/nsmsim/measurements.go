package nsmsim

import (
	"crypto/sha512"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// MaxMeasurementsSize bounds a measurements file
// (attestation.MaxMeasurementsSize).
const MaxMeasurementsSize = attestation.MaxMeasurementsSize

// LoadMeasurements reads a file holding the JSON that `nitro-cli
// build-enclave` or `nitro-cli describe-eif` prints and returns its PCRs by
// index (attestation.LoadMeasurements of an enclave's).
func LoadMeasurements(path string) (map[int][]byte, error) {
	return attestation.LoadMeasurements(path, attestation.KindEnclave)
}

// ParseMeasurements decodes nitro-cli's measurements JSON
// (attestation.ParseMeasurements of an enclave's).
func ParseMeasurements(b []byte) (map[int][]byte, error) {
	return attestation.ParseMeasurements(b, attestation.KindEnclave)
}

// MarshalMeasurements is the inverse of ParseMeasurements: the JSON that
// `nitro-cli build-enclave` prints for an image with these PCRs, for tools
// and tests that stand in for a build.
func MarshalMeasurements(pcrs map[int][]byte) ([]byte, error) {
	return attestation.MarshalMeasurements(pcrs, attestation.KindEnclave)
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
