package proxy

import (
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// acceptance remembers whether KMS refused the enclave's attestation
// documents on the last attested call: a refusal that retrying will not
// fix (a document KMS finds too old or not valid, a clock far off), which
// would fail every attested call the same way. /readyz reports it, and
// turns ready again with the next attested call KMS accepts. It is safe for
// concurrent use.
type acceptance struct {
	mu      sync.Mutex
	refused string    // KMS's reason; "" while KMS accepts the documents
	since   time.Time // when KMS first refused them
}

// acceptanceStatus is the "kms" part of /readyz.
type acceptanceStatus struct {
	// AttestationAccepted is false after KMS refused the enclave's
	// attestation document and until it accepts one again.
	AttestationAccepted bool      `json:"attestation_accepted"`
	Refused             string    `json:"refused,omitempty"`
	Since               time.Time `json:"since,omitzero"`
}

// refuse records KMS's refusal; it reports whether the state changed.
func (a *acceptance) refuse(reason string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := a.refused == ""
	if changed {
		a.since = now
	}
	a.refused = reason
	return changed
}

// accept records an attested call KMS answered; it reports whether the
// state changed.
func (a *acceptance) accept() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed := a.refused != ""
	a.refused, a.since = "", time.Time{}
	return changed
}

func (a *acceptance) status() acceptanceStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return acceptanceStatus{AttestationAccepted: a.refused == "", Refused: a.refused, Since: a.since}
}

// refusesAttestation reports whether KMS's answer to an attested call is a
// refusal of the Recipient itself rather than of this request: KMS validates
// the attestation document like any request member and answers a document
// it does not accept with ValidationException naming it (the KMS API
// reference documents no other exception for it; devkms says "Invalid
// Recipient: the attestation document ..."). A key policy's refusal is
// AccessDeniedException and concerns one key, so it does not count. Nor
// does a message that may only repeat the caller's own words: KMS's
// validation messages quote the offending value ("1 validation error
// detected: Value 'X' at 'encryptionAlgorithm' ..."), so a caller who sends
// "recipient" or "attestation" in any member could otherwise make
// kmsproxyd report that KMS refuses its documents.
func refusesAttestation(ke *kmsapi.Error, in any) bool {
	if ke == nil || ke.Type != kmsapi.Validation || !mentionsAttestation(ke.Message) {
		return false
	}
	return !callerMentionsAttestation(reflect.ValueOf(in), 0)
}

func mentionsAttestation(s string) bool {
	m := strings.ToLower(s)
	return strings.Contains(m, "attestation") || strings.Contains(m, "recipient")
}

// maxInputDepth bounds callerMentionsAttestation's walk: KMS inputs nest
// at most a few levels (a request, a map or a list, a string).
const maxInputDepth = 8

// callerMentionsAttestation reports whether any string the caller sent in
// v (members, map keys and values, list items) mentions the attestation.
// The Recipient kmsproxyd added is skipped: its bytes are the document.
func callerMentionsAttestation(v reflect.Value, depth int) bool {
	if depth > maxInputDepth {
		return true // unknown shape: do not blame the enclave
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && callerMentionsAttestation(v.Elem(), depth+1)
	case reflect.String:
		return mentionsAttestation(v.String())
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() || f.Name == "Recipient" {
				continue
			}
			if callerMentionsAttestation(v.Field(i), depth+1) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return false // blobs: KMS does not quote them
		}
		for i := range v.Len() {
			if callerMentionsAttestation(v.Index(i), depth+1) {
				return true
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if callerMentionsAttestation(it.Key(), depth+1) || callerMentionsAttestation(it.Value(), depth+1) {
				return true
			}
		}
	}
	return false
}

// noteAttested records how KMS answered an attested call that carried
// kmsproxyd's own Recipient: in is the request's input, ke KMS's error, nil
// when KMS answered.
func (s *Server) noteAttested(rq *request, in any, ke *kmsapi.Error) {
	switch {
	case ke == nil:
		if s.acceptance.accept() {
			s.log.Info("KMS accepts the enclave's attestation document again: ready", "request_id", rq.id)
		}
	case refusesAttestation(ke, in):
		if s.acceptance.refuse(ke.Message, time.Now()) {
			s.log.Error("KMS refused the enclave's attestation document: not ready until it accepts one (check the enclave's clock and --attestation-ttl)",
				"request_id", rq.id, "operation", rq.op, "reason", ke.Message)
		}
	}
}
