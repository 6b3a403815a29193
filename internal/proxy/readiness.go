package proxy

import (
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
// AccessDeniedException and concerns one key, so it does not count.
func refusesAttestation(ke *kmsapi.Error) bool {
	if ke == nil || ke.Type != kmsapi.Validation {
		return false
	}
	m := strings.ToLower(ke.Message)
	return strings.Contains(m, "attestation") || strings.Contains(m, "recipient")
}

// noteAttested records how KMS answered an attested call that carried
// kmsproxyd's own Recipient: ke is its error, nil when KMS answered.
func (s *Server) noteAttested(rq *request, ke *kmsapi.Error) {
	switch {
	case ke == nil:
		if s.acceptance.accept() {
			s.log.Info("KMS accepts the enclave's attestation document again: ready", "request_id", rq.id)
		}
	case refusesAttestation(ke):
		if s.acceptance.refuse(ke.Message, time.Now()) {
			s.log.Error("KMS refused the enclave's attestation document: not ready until it accepts one (check the enclave's clock and --attestation-ttl)",
				"request_id", rq.id, "operation", rq.op, "reason", ke.Message)
		}
	}
}
