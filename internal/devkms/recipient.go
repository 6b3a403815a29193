package devkms

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// MaxAttestationClockSkew is how far in the future an attestation document's
// timestamp may be: the enclave's NSM clock and devkms's clock are separate
// clocks. devkms's own tolerance.
const MaxAttestationClockSkew = time.Minute

// maxCachedDocuments bounds the verification cache. kmsproxyd reuses one
// document per key for --attestation-ttl (5 minutes), so a handful of entries
// serves every enclave a developer runs; devkms's own limit.
const maxCachedDocuments = 1024

// Bad attestation documents are answered with ValidationException (400): AWS
// documents no exception or message for them in the KMS API reference (the
// Recipient member is validated like the other request members), so devkms
// uses the validation exception with a message that names the failed check.
const recipientMessagePrefix = "Invalid Recipient: "

// verifiedRecipient is what a verified attestation document contributes to a
// request: the public key to encrypt to, the condition keys for the key
// policy and what the request log says about the document.
type verifiedRecipient struct {
	pub       *rsa.PublicKey
	context   map[string][]string
	timestamp time.Time
	// validUntil is the earliest NotAfter of the document's certificates:
	// a cached verification stops counting then.
	validUntil time.Time
	// trail is what KMS's CloudTrail records of the document
	// (cloudTrailRecipient), for the request log.
	trail []slog.Attr
}

// recipientVerifier verifies Recipient attestation documents and caches the
// result per document (SHA-256 of its bytes). The signature and chain of a
// cached document are not checked again; its freshness is, on every use.
type recipientVerifier struct {
	roots  *x509.CertPool
	maxAge time.Duration
	now    func() time.Time

	mu    sync.Mutex
	cache map[[32]byte]*verifiedRecipient
	fifo  [][32]byte // insertion order, for eviction
}

func newRecipientVerifier(roots *x509.CertPool, maxAge time.Duration, now func() time.Time) *recipientVerifier {
	return &recipientVerifier{roots: roots, maxAge: maxAge, now: now, cache: map[[32]byte]*verifiedRecipient{}}
}

func recipientError(format string, args ...any) *kmsapi.Error {
	return kmsapi.Errorf(kmsapi.Validation, "%s%s", recipientMessagePrefix, fmt.Sprintf(format, args...))
}

// verify checks a Recipient and returns what it contributes to the request.
func (v *recipientVerifier) verify(r *types.RecipientInfo) (*verifiedRecipient, error) {
	// KeyEncryptionAlgorithm: "The only valid value is RSAES_OAEP_SHA_256"
	// (KMS API reference, RecipientInfo); the member is optional, and
	// absent means that one value.
	if r.KeyEncryptionAlgorithm != "" && r.KeyEncryptionAlgorithm != types.KeyEncryptionMechanismRsaesOaepSha256 {
		return nil, checkEnum("recipient.keyEncryptionAlgorithm", r.KeyEncryptionAlgorithm, types.KeyEncryptionMechanism("").Values())
	}
	if err := checkBlobLen("recipient.attestationDocument", r.AttestationDocument, 1, MaxAttestationDocument); err != nil {
		return nil, err
	}
	now := v.now()
	sum := sha256.Sum256(r.AttestationDocument)
	v.mu.Lock()
	vr := v.cache[sum]
	v.mu.Unlock()
	if vr == nil || !now.Before(vr.validUntil) {
		var err error
		if vr, err = v.verifyDocument(r.AttestationDocument, now); err != nil {
			return nil, err
		}
		v.remember(sum, vr)
	}
	if err := v.checkFresh(vr.timestamp, now); err != nil {
		return nil, err
	}
	return vr, nil
}

// verifyRecipient verifies a request's Recipient and keeps what KMS's
// CloudTrail would record of its document for the request log, whether
// the request is then allowed or not.
func (s *Server) verifyRecipient(c *call, r *types.RecipientInfo) (*verifiedRecipient, error) {
	vr, err := s.recipient.verify(r)
	if err != nil {
		return nil, err
	}
	c.recipient = vr.trail
	return vr, nil
}

func (v *recipientVerifier) checkFresh(ts, now time.Time) error {
	if age := now.Sub(ts); age > v.maxAge {
		return recipientError("the attestation document is too old: it was created at %s, %s ago, and devkms accepts documents up to %s old (--max-attestation-age)",
			ts.UTC().Format(time.RFC3339), age.Truncate(time.Second), v.maxAge)
	}
	if ts.Sub(now) > MaxAttestationClockSkew {
		return recipientError("the attestation document's timestamp %s is %s in the future",
			ts.UTC().Format(time.RFC3339), ts.Sub(now).Truncate(time.Second))
	}
	return nil
}

// verifyDocument parses and verifies a document of either kind, a Nitro
// Enclave's or an EC2 instance's NitroTPM's (KMS takes both in Recipient:
// "AWS KMS verifies that the attestation document came from a valid source
// (either a Nitro enclave or NitroTPM)", KMS Developer Guide,
// "Cryptographic attestation support in AWS KMS"), and extracts its RSA key
// and the condition keys of its kind.
func (v *recipientVerifier) verifyDocument(b []byte, now time.Time) (*verifiedRecipient, error) {
	// Parse also checks that module_id has the form of the document's
	// kind, and that the document is of exactly one kind.
	doc, err := attestation.Parse(b)
	if err != nil {
		return nil, recipientError("the attestation document is malformed: %s", attestationReason(err))
	}
	if err := attestation.Verify(doc, v.roots, now); err != nil {
		return nil, recipientError("the %s attestation document does not verify: %s", doc.Kind, attestationReason(err))
	}
	pub, err := attestation.RecipientKey(doc)
	if err != nil {
		return nil, recipientError("the %s attestation document's public_key cannot receive KMS's answer: %s", doc.Kind, attestationReason(err))
	}
	validUntil := now.Add(24 * time.Hour)
	if leaf := doc.LeafCertificate(); leaf != nil && leaf.NotAfter.Before(validUntil) {
		validUntil = leaf.NotAfter
	}
	return &verifiedRecipient{
		pub:        pub,
		context:    keypolicy.DocumentContext(doc),
		timestamp:  doc.Timestamp,
		validUntil: validUntil,
		trail:      cloudTrailRecipient(doc),
	}, nil
}

// nitroTPMTrailPCRs are the NitroTPM PCRs devkms records: those of the
// example entry in the KMS Developer Guide ("Monitoring requests for
// NitroTPM": PCR4, 7, 8, 9, 16 and 23) and PCR12, which the EC2 User Guide
// names with PCR4 for an Attestable AMI's standard boot.
var nitroTPMTrailPCRs = []int{4, 7, 8, 9, 12, 16, 23}

// enclaveTrailPCRs are the PCRs besides PCR0 (the image digest) that KMS's
// CloudTrail records for an enclave's document: PCR1, PCR2, PCR3, PCR4 and
// PCR8, in every example AWS documents (KMS Developer Guide, "Monitoring
// requests for Nitro enclaves") and in real entries that people have
// published (a real Decrypt's recipient holds ImageDigest and PCR1, 2, 3, 4
// and 8, PCR8 all zero for an unsigned image).
var enclaveTrailPCRs = []int{1, 2, 3, 4, 8}

// cloudTrailRecipient returns what KMS's CloudTrail records of a Recipient
// document in additionalEventData.recipient, under the same field names,
// so that a devkms log line can be read (and searched) like the CloudTrail
// entry of the same request:
//
//   - an enclave's: attestationDocumentModuleId,
//     attestationDocumentEnclaveImageDigest (PCR0) and
//     attestationDocumentEnclavePCR<n> (KMS Developer Guide, "Monitoring
//     requests for Nitro enclaves");
//   - a NitroTPM's: attestationDocumentModuleId and
//     attestationDocumentNitroTPMPCR<n> (KMS Developer Guide, "Monitoring
//     requests for NitroTPM"), for the PCRs AWS's example entry shows (4,
//     7, 8, 9, 16 and 23; AWS does not say whether KMS records others)
//     and PCR12, which an Attestable AMI's key policy names with PCR4
//     (nitroTPMTrailPCRs), whatever their values.
//
// CloudTrail writes PCR values in base64 (published real entries hold 64
// characters, such as "O0p+...l00D", for a 48-byte PCR, where AWS's
// examples only show placeholders); devkms does the same. Nothing
// here is secret: module IDs and measurements.
func cloudTrailRecipient(doc *attestation.Document) []slog.Attr {
	attrs := []slog.Attr{slog.String("attestationDocumentModuleId", doc.ModuleID)}
	b64 := base64.StdEncoding.EncodeToString
	switch doc.Kind {
	case attestation.KindEnclave:
		attrs = append(attrs, slog.String("attestationDocumentEnclaveImageDigest", b64(doc.PCRs[0])))
		for _, i := range enclaveTrailPCRs {
			if v, ok := doc.PCRs[i]; ok {
				attrs = append(attrs, slog.String("attestationDocumentEnclavePCR"+strconv.Itoa(i), b64(v)))
			}
		}
	case attestation.KindNitroTPM:
		for _, i := range nitroTPMTrailPCRs {
			if v, ok := doc.NitroTPMPCRs[i]; ok {
				attrs = append(attrs, slog.String("attestationDocumentNitroTPMPCR"+strconv.Itoa(i), b64(v)))
			}
		}
	}
	return attrs
}

func (v *recipientVerifier) remember(sum [32]byte, vr *verifiedRecipient) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.cache[sum]; !ok {
		if len(v.fifo) >= maxCachedDocuments {
			delete(v.cache, v.fifo[0])
			v.fifo = v.fifo[1:]
		}
		v.fifo = append(v.fifo, sum)
	}
	v.cache[sum] = vr
}

// attestationReason is the text of an attestation error. attestation.Error
// messages carry only check names, sizes, field names and certificate
// subjects, never document bytes.
func attestationReason(err error) string {
	var ae *attestation.Error
	if errors.As(err, &ae) {
		return ae.Error()
	}
	return "unreadable document"
}

// envelope encrypts secret for the verified recipient in the CMS layout KMS
// uses for CiphertextForRecipient.
func (vr *verifiedRecipient) envelope(secret []byte) ([]byte, error) {
	out, err := cms.Encrypt(rand.Reader, vr.pub, secret)
	if err != nil {
		return nil, fmt.Errorf("failed to build CiphertextForRecipient: %w", err)
	}
	return out, nil
}
