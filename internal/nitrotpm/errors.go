package nitrotpm

import (
	"errors"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Reason says what went wrong on the way to a document. Every error this
// package returns, apart from a request over the NSM limits (an
// *attestation.Error with CheckTooLarge) and ctx.Err(), is an *Error
// carrying one.
type Reason int

// The reasons.
const (
	// ReasonNoDevice: the TPM device does not exist or is not a TPM
	// character device (not an EC2 instance with NitroTPM enabled).
	ReasonNoDevice Reason = iota + 1
	// ReasonTransport: reading or writing the device failed.
	ReasonTransport
	// ReasonTPM: the TPM answered a command with an error response code.
	ReasonTPM
	// ReasonResponse: a TPM response or the NSM response in the message
	// buffer was short, oversized or malformed.
	ReasonResponse
	// ReasonNSM: the Nitro Hypervisor answered the attestation request
	// with an NSM error code instead of a document.
	ReasonNSM
	// ReasonDocument: the document is not a NitroTPM document of the
	// expected form (wrong kind, wrong module ID form, malformed) or does
	// not carry the fields that were requested.
	ReasonDocument
	// ReasonClosed: the Device was closed.
	ReasonClosed
)

var reasonNames = map[Reason]string{
	ReasonNoDevice:  "no TPM device",
	ReasonTransport: "TPM device I/O failed",
	ReasonTPM:       "TPM refused a command",
	ReasonResponse:  "malformed response",
	ReasonNSM:       "NSM refused the request",
	ReasonDocument:  "unusable document",
	ReasonClosed:    "device closed",
}

func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return "unknown reason"
}

// Error reports which step of a NitroTPM attestation failed and why. It
// never holds document or key bytes: only sizes, handles, response codes
// and NSM error names.
type Error struct {
	Reason Reason
	Step   string     // what was being done, e.g. "write the request to the NV message buffer"
	Detail string     // what exactly was wrong; empty in the sentinels
	RC     tpm2.TPMRC // the TPM's response code, with ReasonTPM
	NSM    string     // the NSM error code (e.g. "InputTooLarge"), with ReasonNSM
	Err    error      // underlying error, if any
	hint   string     // what to do about it, when there is something
}

// The sentinels, one per reason, for errors.Is.
var (
	ErrNoDevice  = &Error{Reason: ReasonNoDevice}
	ErrTransport = &Error{Reason: ReasonTransport}
	ErrTPM       = &Error{Reason: ReasonTPM}
	ErrResponse  = &Error{Reason: ReasonResponse}
	ErrNSM       = &Error{Reason: ReasonNSM}
	ErrDocument  = &Error{Reason: ReasonDocument}
	ErrClosed    = &Error{Reason: ReasonClosed}
)

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("nitrotpm: ")
	b.WriteString(e.Reason.String())
	if e.Step != "" {
		b.WriteString(": failed to ")
		b.WriteString(e.Step)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	if e.hint != "" {
		b.WriteString(" (")
		b.WriteString(e.hint)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the underlying error (a tpm2.TPMRC with ReasonTPM).
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel for e's reason.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Step == "" && t.Detail == "" && t.Err == nil && t.Reason == e.Reason
}

// tpmError wraps an error from a TPM command: a response code becomes
// ReasonTPM with RC set, a failure of the transport ReasonTransport, and
// anything else (a response go-tpm could not unmarshal) the fallback.
func tpmError(step string, err error, fallback Reason) *Error {
	var se *sendError
	if errors.As(err, &se) {
		return &Error{Reason: ReasonTransport, Step: step, Err: se.err}
	}
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		e := &Error{Reason: ReasonTPM, Step: step, RC: rc, Err: err}
		switch {
		case rc == tpm2.TPMRCNVSpace:
			e.hint = "the TPM's NV memory is full: remove unused NV indices (tpm2_nvundefine)"
		case rc.Is(tpm2.TPMRCBadAuth) || rc.Is(tpm2.TPMRCAuthFail):
			e.hint = "the TPM's owner hierarchy has an authorization value; kmsproxyd defines its message buffer with the empty owner authorization NitroTPM starts with"
		case rc == tpm2.TPMRCCommandCode:
			e.hint = "the TPM does not know the AWS NSM vendor command: this is not a NitroTPM"
		}
		return e
	}
	return &Error{Reason: fallback, Step: step, Err: err}
}
