package attestation

import "strings"

// Check names the check an attestation document (or a request for one)
// failed. Every error this package returns is an *Error carrying one.
type Check int

// The checks, in the order Parse and Verify run them.
const (
	// CheckMalformed: the bytes are not a COSE_Sign1 attestation document of
	// the shape NSM emits (CBOR, structure, field types, required fields).
	CheckMalformed Check = iota + 1
	// CheckTooLarge: the document or one of its fields exceeds an NSM limit,
	// or a request carries a field NSM would refuse.
	CheckTooLarge
	// CheckAlgorithm: the COSE protected header does not name ES384.
	CheckAlgorithm
	// CheckDigest: the digest field is not one NSM uses, or not SHA384.
	CheckDigest
	// CheckPCRs: the PCR map is not what a Nitro Enclave reports.
	CheckPCRs
	// CheckLeafKey: the signing certificate's key is not ECDSA P-384.
	CheckLeafKey
	// CheckSignature: the COSE_Sign1 signature does not verify.
	CheckSignature
	// CheckChain: the certificate chain does not lead to a trusted root.
	CheckChain
	// CheckExpired: a certificate in the chain expired before the
	// verification time.
	CheckExpired
	// CheckNotYetValid: a certificate in the chain is not valid yet at the
	// verification time.
	CheckNotYetValid
	// CheckNoDevice: /dev/nsm does not exist (not inside a Nitro Enclave).
	CheckNoDevice
	// CheckDevice: the NSM device failed or refused a request.
	CheckDevice
	// CheckKind: the payload holds both an enclave's pcrs and a NitroTPM's
	// nitrotpm_pcrs, or neither, so it is of no one kind.
	CheckKind
	// CheckModuleID: module_id does not have the form of the document's
	// kind (i-<instance>-enc<enclave> or i-<instance>-tpm<16 hex digits>).
	CheckModuleID
	// CheckPublicKey: the document's public_key cannot serve as a KMS
	// Recipient key (RecipientKey): absent, not DER, or not RSA of a size
	// KMS takes.
	CheckPublicKey
)

var checkNames = map[Check]string{
	CheckMalformed:   "malformed document",
	CheckTooLarge:    "too large",
	CheckAlgorithm:   "unsupported algorithm",
	CheckDigest:      "wrong digest",
	CheckPCRs:        "bad PCRs",
	CheckLeafKey:     "leaf key not P-384",
	CheckSignature:   "bad signature",
	CheckChain:       "untrusted certificate chain",
	CheckExpired:     "certificate expired",
	CheckNotYetValid: "certificate not yet valid",
	CheckNoDevice:    "no NSM device",
	CheckDevice:      "NSM device failed",
	CheckKind:        "unknown document kind",
	CheckModuleID:    "wrong module ID form",
	CheckPublicKey:   "unusable recipient public key",
}

// String returns the check's name as it appears in error messages.
func (c Check) String() string {
	if s, ok := checkNames[c]; ok {
		return s
	}
	return "unknown check"
}

// Error reports which check failed and why. Reason never contains key
// material or whole untrusted blobs, only sizes, field names and
// certificate subjects.
type Error struct {
	Check  Check
	Reason string // what exactly was wrong; empty in the sentinels
	Err    error  // underlying error, if any
}

// The sentinels, one per check, for errors.Is:
//
//	if errors.Is(err, attestation.ErrExpired) { ... }
var (
	ErrMalformed   = &Error{Check: CheckMalformed}
	ErrTooLarge    = &Error{Check: CheckTooLarge}
	ErrAlgorithm   = &Error{Check: CheckAlgorithm}
	ErrDigest      = &Error{Check: CheckDigest}
	ErrPCRs        = &Error{Check: CheckPCRs}
	ErrLeafKey     = &Error{Check: CheckLeafKey}
	ErrSignature   = &Error{Check: CheckSignature}
	ErrChain       = &Error{Check: CheckChain}
	ErrExpired     = &Error{Check: CheckExpired}
	ErrNotYetValid = &Error{Check: CheckNotYetValid}
	ErrNoDevice    = &Error{Check: CheckNoDevice}
	ErrDevice      = &Error{Check: CheckDevice}
	ErrKind        = &Error{Check: CheckKind}
	ErrModuleID    = &Error{Check: CheckModuleID}
	ErrPublicKey   = &Error{Check: CheckPublicKey}
)

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("attestation: ")
	b.WriteString(e.Check.String())
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel for e's check.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == "" && t.Err == nil && t.Check == e.Check
}

func newError(c Check, reason string, err error) *Error {
	return &Error{Check: c, Reason: reason, Err: err}
}
