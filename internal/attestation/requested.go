package attestation

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// A document kmsproxyd requests from the NSM for a caller (POST
// /v1/attestation, for remote verifiers) is signed by the same NSM, with the
// same PCRs, as the documents the enclave makes for itself. If the caller's
// bytes went into user_data as they are, anything that reads user_data as
// something the enclave asserted could be handed a document saying whatever
// the parent instance chose. So kmsproxyd never puts a caller's bytes there
// alone: user_data of a requested document is always this canonical CBOR
// map (RFC 8949 §4.2.1, core deterministic encoding), whatever the caller
// sent, even nothing:
//
//	{
//	  "data":     h'...',                                 ; the caller's bytes
//	  "purpose":  "kmsproxyd/requested-attestation/v1",   ; RequestedPurpose
//	  "listener": "parent"                                ; where the request came in
//	}
//
// A verifier that finds this structure knows the data came from a caller of
// that listener, not from the enclave. A document the enclave makes for
// itself never carries it (kmsproxyd's own documents carry a public key and
// no user_data).
const (
	// RequestedPurpose is the purpose string of the structure.
	RequestedPurpose = requestedPurposePrefix + "v1"
	// requestedPurposePrefix is the part of the purpose string every
	// version shares.
	requestedPurposePrefix = "kmsproxyd/requested-attestation/"

	// MaxRequestedListenerLen bounds the listener name in the structure.
	// kmsproxyd's listeners are "parent" and "local"; 16 leaves room.
	MaxRequestedListenerLen = 16

	// requestedOverhead is the most the structure adds to the caller's
	// data, in bytes: the map head (1), the keys "data" (1+4), "purpose"
	// (1+7) and "listener" (1+8), the purpose string (2+34), a listener
	// name of MaxRequestedListenerLen bytes (1+16) and the head of a byte
	// string of 256 to 65535 bytes (3).
	requestedOverhead = 1 + (1 + 4) + (1 + 7) + (1 + 8) + (2 + len(RequestedPurpose)) + (1 + MaxRequestedListenerLen) + 3

	// MaxRequestedDataSize is the most data a caller of POST
	// /v1/attestation may have signed into a document: NSM's user_data
	// limit (MaxUserDataSize, 1024) less the structure around it, 945
	// bytes.
	MaxRequestedDataSize = MaxUserDataSize - requestedOverhead
)

// Requested is the structure kmsproxyd writes into user_data of a document
// it requests for a caller.
type Requested struct {
	// Purpose is RequestedPurpose.
	Purpose string `cbor:"purpose"`
	// Listener is the kmsproxyd listener the request came in on.
	Listener string `cbor:"listener"`
	// Data is the caller's bytes, never nil in a parsed structure (an
	// empty byte string when the caller sent none).
	Data []byte `cbor:"data"`
}

// ErrNotRequested is what ParseRequested returns for user_data that is not
// the structure at all (raw bytes, another CBOR value, a map without
// kmsproxyd's purpose string).
var ErrNotRequested = errors.New("attestation: user_data is not a kmsproxyd requested-attestation structure")

// requestedEnc writes the structure in core deterministic encoding: map
// keys sorted, shortest heads, definite lengths.
var requestedEnc = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // the options are constants
	}
	return em
}()

// EncodeRequested returns the user_data of a document requested on
// listener carrying data. It refuses an empty or overlong listener name and
// data over MaxRequestedDataSize with an *Error whose check is
// CheckTooLarge or CheckMalformed; the result is then at most
// MaxUserDataSize bytes.
func EncodeRequested(listener string, data []byte) ([]byte, error) {
	if listener == "" || len(listener) > MaxRequestedListenerLen {
		return nil, newError(CheckMalformed, fmt.Sprintf("listener name of %d bytes: want 1 to %d", len(listener), MaxRequestedListenerLen), nil)
	}
	if len(data) > MaxRequestedDataSize {
		return nil, newError(CheckTooLarge, fmt.Sprintf("user_data is %d bytes; a requested document carries at most %d "+
			"(NSM's %d less kmsproxyd's requested-attestation structure around it)", len(data), MaxRequestedDataSize, MaxUserDataSize), nil)
	}
	if data == nil {
		data = []byte{}
	}
	b, err := requestedEnc.Marshal(Requested{Purpose: RequestedPurpose, Listener: listener, Data: data})
	if err != nil {
		return nil, newError(CheckMalformed, "failed to encode the requested-attestation structure", err)
	}
	return b, nil
}

// ParseRequested reads the structure from a document's user_data. It
// returns ErrNotRequested when user_data is not the structure at all, and
// an *Error (CheckMalformed) when it claims to be (a map whose purpose
// starts "kmsproxyd/requested-attestation/") but is not exactly what
// EncodeRequested writes: another version, another key, a missing one, a
// non-canonical encoding.
func ParseRequested(userData []byte) (*Requested, error) {
	if len(userData) == 0 || len(userData) > MaxUserDataSize {
		return nil, ErrNotRequested
	}
	var m map[string]cbor.RawMessage
	if err := dec.Unmarshal(userData, &m); err != nil {
		return nil, ErrNotRequested
	}
	var purpose string
	if raw, ok := m["purpose"]; !ok || dec.Unmarshal(raw, &purpose) != nil || !strings.HasPrefix(purpose, requestedPurposePrefix) {
		return nil, ErrNotRequested
	}
	malformed := func(reason string) error {
		return newError(CheckMalformed, "user_data claims to be a kmsproxyd requested-attestation structure but "+reason, nil)
	}
	if purpose != RequestedPurpose {
		return nil, malformed(fmt.Sprintf("has purpose %q; this version reads only %q", truncateText(purpose, 64), RequestedPurpose))
	}
	if len(m) != 3 {
		return nil, malformed(fmt.Sprintf("has %d keys; it has exactly purpose, listener and data", len(m)))
	}
	var r Requested
	if err := dec.Unmarshal(userData, &r); err != nil {
		return nil, malformed("does not decode: " + err.Error())
	}
	if _, ok := m["data"]; !ok || r.Data == nil {
		return nil, malformed("has no data byte string")
	}
	if r.Listener == "" || len(r.Listener) > MaxRequestedListenerLen {
		return nil, malformed(fmt.Sprintf("has a listener name of %d bytes; want 1 to %d", len(r.Listener), MaxRequestedListenerLen))
	}
	again, err := requestedEnc.Marshal(r)
	if err != nil || !bytes.Equal(again, userData) {
		return nil, malformed("is not in its canonical encoding")
	}
	return &r, nil
}

// truncateText cuts s to at most n bytes for a message.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
