package devkms

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
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
// request: the public key to encrypt to and the condition keys for the key
// policy.
type verifiedRecipient struct {
	pub       *rsa.PublicKey
	context   map[string][]string
	timestamp time.Time
	// validUntil is the earliest NotAfter of the document's certificates:
	// a cached verification stops counting then.
	validUntil time.Time
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

// verifyDocument parses and verifies a document and extracts its RSA key.
func (v *recipientVerifier) verifyDocument(b []byte, now time.Time) (*verifiedRecipient, error) {
	doc, err := attestation.Parse(b)
	if err != nil {
		return nil, recipientError("the attestation document is malformed: %s", attestationReason(err))
	}
	if err := attestation.Verify(doc, v.roots, now); err != nil {
		return nil, recipientError("the attestation document does not verify: %s", attestationReason(err))
	}
	if doc.PublicKey == nil {
		return nil, recipientError("the attestation document has no public_key; KMS needs the enclave's RSA public key to encrypt the response")
	}
	pk, err := x509.ParsePKIXPublicKey(doc.PublicKey)
	if err != nil {
		return nil, recipientError("the attestation document's public_key is not a DER SubjectPublicKeyInfo: %v", err)
	}
	pub, ok := pk.(*rsa.PublicKey)
	if !ok {
		return nil, recipientError("the attestation document's public_key is not an RSA key (it is %s); KMS encrypts with RSAES_OAEP_SHA_256 and needs an RSA key", keyTypeName(pk))
	}
	switch bits := pub.N.BitLen(); bits {
	case 2048, 3072, 4096:
	default:
		return nil, recipientError("the attestation document's public_key is an RSA-%d key; devkms accepts RSA keys of 2048, 3072 or 4096 bits", bits)
	}
	validUntil := now.Add(24 * time.Hour)
	if leaf := doc.LeafCertificate(); leaf != nil && leaf.NotAfter.Before(validUntil) {
		validUntil = leaf.NotAfter
	}
	return &verifiedRecipient{
		pub:        pub,
		context:    keypolicy.AttestationContext(doc.PCRs),
		timestamp:  doc.Timestamp,
		validUntil: validUntil,
	}, nil
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

func keyTypeName(pk any) string {
	switch pk.(type) {
	case *ecdsa.PublicKey:
		return "an ECDSA key"
	case ed25519.PublicKey:
		return "an Ed25519 key"
	case *ecdh.PublicKey:
		return "an X25519 key"
	}
	return fmt.Sprintf("a %T", pk)
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
