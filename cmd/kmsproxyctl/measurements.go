package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// The two kinds of attestation a key policy can be bound to, as --kind
// names them. KMS evaluates an enclave's document under
// kms:RecipientAttestation:ImageSha384 and PCR<n>, an EC2 instance's
// NitroTPM document under kms:RecipientAttestation:NitroTPMPCR<n> (KMS
// Developer Guide, "Condition keys for Nitro Enclaves" and "Condition keys
// for NitroTPM"), and neither kind's document sets the other's keys.
const (
	kindEnclave  = "enclave"
	kindNitroTPM = "nitrotpm"
)

// kindFlag is --kind: enclave (the default) or nitrotpm.
type kindFlag struct {
	kind attestation.Kind
	set  bool // given on the command line
}

// newKindFlag is --kind with its default, enclave.
func newKindFlag() kindFlag { return kindFlag{kind: attestation.KindEnclave} }

func (k *kindFlag) String() string {
	switch {
	case k == nil || k.kind == 0:
		return "" // the zero value, which flag's usage compares the default with
	case k.kind == attestation.KindNitroTPM:
		return kindNitroTPM
	}
	return kindEnclave
}

func (k *kindFlag) Set(v string) error {
	switch strings.ToLower(v) {
	case kindEnclave:
		k.kind = attestation.KindEnclave
	case kindNitroTPM:
		k.kind = attestation.KindNitroTPM
	default:
		return fmt.Errorf("want %s (a Nitro Enclave's attestation) or %s (an EC2 instance's NitroTPM)", kindEnclave, kindNitroTPM)
	}
	k.set = true
	return nil
}

// value is the kind, enclave unless --kind nitrotpm was given.
func (k *kindFlag) value() attestation.Kind {
	if k.kind == attestation.KindNitroTPM {
		return attestation.KindNitroTPM
	}
	return attestation.KindEnclave
}

// maxMeasurementsFile is the larger of the two measurements parsers'
// limits, so that the parser of the file's kind, not the read, decides.
const maxMeasurementsFile = attestation.MaxMeasurementsSize

// The HashAlgorithm each tool writes: nitro-cli build-enclave and
// describe-eif print Rust's Debug form of the algorithm, "Sha384 { ... }"
// (aws-nitro-enclaves-cli); nitro-tpm-pcr-compute prints "SHA384"
// (aws/NitroTPM-Tools, nitro-tpm-pcr-compute's README: {"Measurements":
// {"HashAlgorithm": "SHA384", "PCR4": ..., "PCR7": ..., "PCR12": ...}}).
// The two files are otherwise alike, which is how one would be given for
// the other.
const (
	nitroCLIHashAlgorithm      = "Sha384"
	nitroTPMToolsHashAlgorithm = "SHA384"
)

// hashAlgorithm returns the HashAlgorithm of a measurements file, or ""
// when it has none or is not JSON (the kind's parser then says what is
// wrong).
func hashAlgorithm(b []byte) string {
	var top map[string]json.RawMessage
	if json.Unmarshal(b, &top) != nil {
		return ""
	}
	inner, ok := top["Measurements"]
	if !ok {
		inner = b
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(inner, &fields) != nil {
		return ""
	}
	var alg string
	if json.Unmarshal(fields["HashAlgorithm"], &alg) != nil {
		return ""
	}
	return alg
}

// loadMeasurements reads the --measurements file of policy generate and
// policy check: nitro-cli's JSON for an enclave image, or
// nitro-tpm-pcr-compute's for an instance's Attestable AMI
// (attestation.ParseMeasurements). A file of the other kind is
// refused, naming the tool that wrote it, so that a policy is never bound
// to PCR values of the wrong kind.
func loadMeasurements(kind attestation.Kind, path string) (map[int][]byte, error) {
	b, err := readFile("measurements", path, maxMeasurementsFile)
	if err != nil {
		return nil, err
	}
	alg := hashAlgorithm(b)
	if kind == attestation.KindNitroTPM {
		if strings.HasPrefix(alg, nitroCLIHashAlgorithm) {
			return nil, withHint(fmt.Errorf("--measurements %s is nitro-cli's output (HashAlgorithm %q): an enclave image's measurements, not an instance's boot", path, alg),
				"for a Nitro Enclave, leave out --kind nitrotpm; for an instance that attests with its NitroTPM, give what nitro-tpm-pcr-compute prints for the Attestable AMI")
		}
		pcrs, err := attestation.ParseMeasurements(b, attestation.KindNitroTPM)
		if err != nil {
			return nil, withHint(fmt.Errorf("--measurements %s: %s", path, strings.TrimPrefix(err.Error(), "measurements: ")),
				"with --kind nitrotpm, --measurements takes the JSON \"nitro-tpm-pcr-compute --image UKI.efi\" prints")
		}
		return pcrs, nil
	}
	if alg == nitroTPMToolsHashAlgorithm {
		return nil, withHint(fmt.Errorf("--measurements %s is nitro-tpm-pcr-compute's output (HashAlgorithm %q): an instance's boot measurements (NitroTPM), not an enclave image's", path, alg),
			"for an instance that attests with its NitroTPM, add --kind nitrotpm; for a Nitro Enclave, give what \"nitro-cli build-enclave\" prints")
	}
	pcrs, err := attestation.ParseMeasurements(b, attestation.KindEnclave)
	if err != nil {
		// ParseMeasurements's errors start "measurements: "; the operator
		// knows the file by the flag.
		return nil, withHint(fmt.Errorf("--measurements %s: %s", path, strings.TrimPrefix(err.Error(), "measurements: ")),
			"--measurements takes the JSON \"nitro-cli build-enclave\" or \"nitro-cli describe-eif\" prints (with --kind nitrotpm, what nitro-tpm-pcr-compute prints)")
	}
	return pcrs, nil
}

// atResetValue reports whether a PCR of the kind holds the value it has
// before anything is measured into it: all zeros, except a NitroTPM's
// PCR17-22, which a TPM resets to all ones (TCG PC Client Platform TPM
// Profile, the locality-restricted PCRs; every real NitroTPM document in
// internal/attestation/testdata/nitrotpm shows them so). A debug-mode
// enclave reports PCR0, 1, 2 and 8 as zeros too (Nitro Enclaves User
// Guide, "Cryptographic attestation"). A key policy that admits such a
// value admits whatever runs without that measurement.
func atResetValue(kind attestation.Kind, index int, v []byte) bool {
	reset := byte(0)
	if kind == attestation.KindNitroTPM && index >= 17 && index <= 22 {
		reset = 0xff
	}
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		if c != reset {
			return false
		}
	}
	return true
}
