// Package attestation reads, verifies and requests AWS Nitro attestation
// documents: the COSE_Sign1 objects the Nitro Hypervisor signs to prove
// what runs. They come in two kinds (Kind): a Nitro Enclave's, from its
// Nitro Secure Module (NSM), whose `pcrs` measure the enclave image, and an
// EC2 instance's, from its NitroTPM, whose `nitrotpm_pcrs` measure the
// instance's boot. Both are signed in the same form under the same AWS
// Nitro root, and KMS accepts either as a Recipient.
//
// kmsproxyd sends its own document to KMS with every attested call, devkms
// and `kmsproxyctl attest verify` check documents the way KMS does, and
// remote verifiers fetch them from kmsproxyd. All of them need the same
// strict parser (Parse), the same verifier (Verify: ES384 signature, chain
// to the AWS Nitro Enclaves root, NSM's field rules), and one way to ask for
// a document (Attester, implemented by the NSM device here and by the
// simulator in internal/nsmsim).
//
// The format facts this package relies on come from AWS's specifications
// (https://docs.aws.amazon.com/enclaves/latest/user/verify-root.html,
// aws/aws-nitro-enclaves-nsm-api docs/attestation_process.md, and for
// NitroTPM https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/nitrotpm-attestation-document-validate.html)
// and from real documents (testdata/real, testdata/nitrotpm).
package attestation

import (
	"crypto/x509"
	"fmt"
	"math"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Field limits. NSM's specification (attestation_process.md §2.2, the CDDL
// also published at docs.aws.amazon.com/enclaves/latest/user/verify-root.html)
// declares `user_data = bytes .size (0..1024)` for public_key, user_data and
// nonce alike. The same document's §3.2.2.2 says 512 for user_data and nonce;
// aws/aws-nitro-enclaves-nsm-api issue #52 reports that inconsistency and that
// the hypervisor enforces no per-field limit, only the NSM driver's 4 KiB
// request buffer (hf/nsm maxRequestSize = 0x1000). We follow the CDDL, which
// AWS's user guide repeats, and refuse anything larger, both in documents and
// in requests.
const (
	// MaxPublicKeySize is the largest public_key NSM documents: 1024 bytes.
	MaxPublicKeySize = 1024
	// MaxUserDataSize is the largest user_data NSM documents: 1024 bytes.
	MaxUserDataSize = 1024
	// MaxNonceSize is the largest nonce NSM documents: 1024 bytes.
	MaxNonceSize = 1024
	// MaxCertificateSize is the largest certificate or cabundle entry:
	// `cert = bytes .size (1..1024)` in the specification.
	MaxCertificateSize = 1024
	// MaxPayloadSize is the largest COSE payload: `bstr .size (1..16384)`
	// for the attestation document in attestation_process.md §3.1.
	MaxPayloadSize = 16384
	// MaxDocumentSize is the largest COSE_Sign1 Parse reads: the payload
	// limit plus NSM's framing: tag 18 (1 byte, tolerated), array head (1),
	// protected header bstr {1: -35} (5), empty unprotected map (1), payload
	// bstr head (3 for up to 65535 bytes) and the 96-byte signature bstr (2+96).
	MaxDocumentSize = 1 + 1 + 5 + 1 + 3 + MaxPayloadSize + 2 + es384SignatureSize
	// MaxCABundleLen is the most cabundle entries Parse accepts. Real
	// documents carry 4 (AWS root, regional, zonal and instance CAs); the
	// specification sets no count, but MaxPayloadSize over
	// MaxCertificateSize bounds a valid bundle at 16.
	MaxCABundleLen = MaxPayloadSize / MaxCertificateSize
	// MaxModuleIDLen bounds module_id while decoding. The specification only
	// requires it to be non-empty; real IDs are 39 bytes (see
	// ValidateModuleID), so 256 leaves ample room.
	MaxModuleIDLen = 256
	// MaxPCRs is the most PCRs a document may list: `index = 0..31`.
	MaxPCRs = 32
	// PCRCount is how many PCRs every Nitro Enclave document carries (0-15;
	// all real documents in testdata/real have exactly 16). Verify
	// requires exactly these.
	PCRCount = 16
	// NitroTPMPCRCount is how many PCRs every NitroTPM document carries:
	// PCR0-23, the TPM's whole SHA-384 bank (a TPM 2.0 PC Client platform
	// has 24 PCRs; all real documents in testdata/nitrotpm have exactly
	// 24). Verify requires exactly these.
	NitroTPMPCRCount = 24
	// PCRSize is the size of a SHA-384 PCR, the only bank either kind of
	// document reports.
	PCRSize = 48
)

// Kind says which part of the Nitro system produced a document.
type Kind int

const (
	// KindEnclave is a Nitro Enclave's document, from its NSM: `pcrs`
	// (PCR0-15) measure the enclave image, module_id is
	// "i-<instance>-enc<enclave>".
	KindEnclave Kind = iota + 1
	// KindNitroTPM is an EC2 instance's document, from its NitroTPM:
	// `nitrotpm_pcrs` (PCR0-23) measure the instance's boot, module_id is
	// "i-<instance>-tpm<16 hex digits>". KMS evaluates its PCRs under
	// kms:RecipientAttestation:NitroTPMPCR<n>.
	KindNitroTPM
)

// String names the kind for people: "Nitro Enclave" or "NitroTPM".
func (k Kind) String() string {
	switch k {
	case KindEnclave:
		return "Nitro Enclave"
	case KindNitroTPM:
		return "NitroTPM"
	}
	return "unknown kind"
}

// Field is the payload field that holds the kind's PCRs: "pcrs" or
// "nitrotpm_pcrs".
func (k Kind) Field() string {
	if k == KindNitroTPM {
		return "nitrotpm_pcrs"
	}
	return "pcrs"
}

// PCRCount is how many PCRs a document of this kind carries.
func (k Kind) PCRCount() int {
	if k == KindNitroTPM {
		return NitroTPMPCRCount
	}
	return PCRCount
}

// maxNesting bounds CBOR nesting. The deepest NSM structure is the payload
// map holding the pcrs map (2 levels inside a payload bstr, which is decoded
// separately from the 1-level COSE array); 8 leaves slack and stops
// malicious nesting long before it costs anything.
const maxNesting = 8

// coseAlgES384 is the COSE algorithm identifier of ECDSA P-384 with SHA-384
// (RFC 9053 §2.1); NSM's protected header is always {1: -35}.
const coseAlgES384 = -35

// es384SignatureSize: ES384 signatures are r || s, 48 bytes each
// (RFC 9053 §2.1); every real document's is 96 bytes.
const es384SignatureSize = 96

// dec is the one CBOR decoder the package uses for untrusted input: it
// accepts definite and indefinite lengths (documents since 2025 encode the
// payload map with indefinite length), rejects duplicate map keys, tags
// (tag 18 around the whole document is stripped before decoding), invalid
// UTF-8 and unknown struct fields, and bounds nesting and container sizes.
var dec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   maxNesting,
		MaxArrayElements:  MaxCABundleLen + 16, // the cabundle count is checked with a clearer error below
		MaxMapPairs:       MaxPCRs,
		IndefLength:       cbor.IndefLengthAllowed,
		TagsMd:            cbor.TagsForbidden,
		IntDec:            cbor.IntDecConvertNone,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err) // the options above are constants
	}
	return dm
}()

// Document is a parsed attestation document. Parse fills every field from
// the signed payload; nothing in it is trustworthy until Verify succeeds.
//
// Exactly one of PCRs and NitroTPMPCRs is set, as Kind says: code that
// reads PCRs sees none in an instance's document, so an enclave's
// measurements can never be taken from a NitroTPM document by mistake.
type Document struct {
	Kind         Kind
	ModuleID     string
	Digest       string
	Timestamp    time.Time      // from the ms field, UTC
	PCRs         map[int][]byte // an enclave's pcrs: index -> value (48 bytes in real documents)
	NitroTPMPCRs map[int][]byte // an instance's nitrotpm_pcrs: index -> value
	Certificate  []byte         // DER leaf that signed the document
	CABundle     [][]byte       // DER, root first, as NSM orders them
	PublicKey    []byte         // nil when null or empty; not necessarily a DER key
	UserData     []byte         // nil when null or empty
	Nonce        []byte         // nil when null or empty

	// The COSE_Sign1 pieces Verify needs.
	protected []byte // content of the protected header bstr
	payload   []byte // the signed payload, exactly as received
	signature []byte // r || s

	leaf   *x509.Certificate
	bundle []*x509.Certificate // parallel to CABundle
}

// coseSign1 is the untagged COSE_Sign1 array (RFC 9052 §4.2).
type coseSign1 struct {
	_           struct{} `cbor:",toarray"`
	Protected   cbor.RawMessage
	Unprotected cbor.RawMessage
	Payload     cbor.RawMessage
	Signature   cbor.RawMessage
}

// CBOR major types, from the first byte of an item (RFC 8949 §3.1).
const (
	majorUint  = 0
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
)

const cborNull = 0xf6

// Parse decodes an attestation document of either kind: an untagged
// COSE_Sign1 (tag 18 is tolerated) whose payload is the attestation map
// with `pcrs` (an enclave's) or `nitrotpm_pcrs` (an instance's). It checks
// the structure and every field against NSM's limits, that the document is
// of exactly one kind and that its module_id has that kind's form, and
// parses the certificates, but it verifies nothing; call Verify before
// trusting any field. Errors are *Error values (CheckMalformed,
// CheckTooLarge, CheckAlgorithm, CheckDigest, CheckPCRs, CheckKind,
// CheckModuleID).
func Parse(b []byte) (*Document, error) {
	if len(b) > MaxDocumentSize {
		return nil, newError(CheckTooLarge, fmt.Sprintf("document is %d bytes; the limit is %d", len(b), MaxDocumentSize), nil)
	}
	if len(b) == 0 {
		return nil, newError(CheckMalformed, "document is empty", nil)
	}
	// Tag 18 (COSE_Sign1, RFC 9052 §2) in its one-byte form 0xd2. NSM sends
	// the untagged form, but the specification shows the tagged one.
	if b[0] == 0xd2 {
		b = b[1:]
	}
	var msg coseSign1
	if err := dec.Unmarshal(b, &msg); err != nil {
		return nil, cborError("failed to decode COSE_Sign1", err)
	}

	protected, err := bstr(msg.Protected, "protected header")
	if err != nil {
		return nil, err
	}
	if err := checkProtected(protected); err != nil {
		return nil, err
	}
	if err := checkUnprotected(msg.Unprotected); err != nil {
		return nil, err
	}
	payload, err := bstr(msg.Payload, "payload")
	if err != nil {
		return nil, err
	}
	if len(payload) > MaxPayloadSize {
		return nil, newError(CheckTooLarge, fmt.Sprintf("payload is %d bytes; the limit is %d", len(payload), MaxPayloadSize), nil)
	}
	signature, err := bstr(msg.Signature, "signature")
	if err != nil {
		return nil, err
	}
	if len(signature) != es384SignatureSize {
		return nil, newError(CheckMalformed, fmt.Sprintf("signature is %d bytes; ES384 signatures are %d", len(signature), es384SignatureSize), nil)
	}

	doc, err := decodePayload(payload)
	if err != nil {
		return nil, err
	}
	doc.protected = protected
	doc.payload = payload
	doc.signature = signature

	doc.leaf, err = x509.ParseCertificate(doc.Certificate)
	if err != nil {
		return nil, newError(CheckMalformed, "certificate is not an X.509 certificate", err)
	}
	doc.bundle = make([]*x509.Certificate, len(doc.CABundle))
	for i, der := range doc.CABundle {
		doc.bundle[i], err = x509.ParseCertificate(der)
		if err != nil {
			return nil, newError(CheckMalformed, fmt.Sprintf("cabundle[%d] is not an X.509 certificate", i), err)
		}
	}
	return doc, nil
}

// cborError turns a CBOR decoding error into a typed error, naming size
// limits as such.
func cborError(what string, err error) *Error {
	switch err.(type) {
	case *cbor.MaxArrayElementsError, *cbor.MaxMapPairsError:
		return newError(CheckTooLarge, what, err)
	}
	return newError(CheckMalformed, what, err)
}

// major returns the CBOR major type of the encoded item raw (non-empty).
func major(raw []byte) byte { return raw[0] >> 5 }

func isNull(raw []byte) bool { return len(raw) == 1 && raw[0] == cborNull }

// bstr decodes a byte string item, refusing any other type.
func bstr(raw cbor.RawMessage, field string) ([]byte, error) {
	if len(raw) == 0 || major(raw) != majorBytes {
		return nil, newError(CheckMalformed, field+" is not a byte string", nil)
	}
	var b []byte
	if err := dec.Unmarshal(raw, &b); err != nil {
		return nil, cborError("failed to decode "+field, err)
	}
	if b == nil {
		b = []byte{}
	}
	return b, nil
}

// text decodes a text string item, refusing any other type.
func text(raw cbor.RawMessage, field string) (string, error) {
	if len(raw) == 0 || major(raw) != majorText {
		return "", newError(CheckMalformed, field+" is not a text string", nil)
	}
	var s string
	if err := dec.Unmarshal(raw, &s); err != nil {
		return "", cborError("failed to decode "+field, err)
	}
	return s, nil
}

// checkProtected requires NSM's protected header, exactly {1: -35}.
func checkProtected(protected []byte) error {
	if len(protected) == 0 {
		return newError(CheckAlgorithm, "protected header is empty; NSM signs with ES384 (-35)", nil)
	}
	var hdr map[int64]cbor.RawMessage
	if err := dec.Unmarshal(protected, &hdr); err != nil {
		return cborError("failed to decode the protected header", err)
	}
	raw, ok := hdr[1]
	if !ok {
		return newError(CheckAlgorithm, "protected header has no alg (label 1)", nil)
	}
	var alg int64
	if err := dec.Unmarshal(raw, &alg); err != nil {
		return newError(CheckAlgorithm, "alg in the protected header is not an integer", nil)
	}
	if alg != coseAlgES384 {
		return newError(CheckAlgorithm, fmt.Sprintf("alg is %d; NSM signs with ES384 (-35)", alg), nil)
	}
	if len(hdr) != 1 {
		return newError(CheckMalformed, fmt.Sprintf("protected header has %d parameters; NSM sends alg alone", len(hdr)), nil)
	}
	return nil
}

// checkUnprotected requires the empty map NSM sends. The unprotected header
// is not signed, so anything in it would be unauthenticated anyway.
func checkUnprotected(raw cbor.RawMessage) error {
	if len(raw) == 0 || major(raw) != majorMap {
		return newError(CheckMalformed, "unprotected header is not a map", nil)
	}
	var hdr map[int64]cbor.RawMessage
	if err := dec.Unmarshal(raw, &hdr); err != nil {
		return cborError("failed to decode the unprotected header", err)
	}
	if len(hdr) != 0 {
		return newError(CheckMalformed, fmt.Sprintf("unprotected header has %d parameter(s); NSM sends none", len(hdr)), nil)
	}
	return nil
}

// payloadFields lists the attestation map's keys in the order NSM writes
// them, with the NitroTPM's nitrotpm_pcrs in the place of pcrs (as in the
// real documents of testdata/nitrotpm). Parse accepts them in any order;
// any other key is refused.
var payloadFields = []string{
	"module_id", "digest", "timestamp", "pcrs", "nitrotpm_pcrs", "certificate",
	"cabundle", "public_key", "user_data", "nonce",
}

// requiredFields must be present and not null in every document; one of
// pcrs and nitrotpm_pcrs is required too (see documentKind).
var requiredFields = []string{"module_id", "digest", "timestamp", "certificate", "cabundle"}

// decodePayload decodes and checks the attestation map (attestation_process.md
// §3.2.2): required fields present and not null, types, and NSM's limits.
func decodePayload(payload []byte) (*Document, error) {
	if len(payload) == 0 || major(payload) != majorMap {
		return nil, newError(CheckMalformed, "payload is not a CBOR map", nil)
	}
	var m map[string]cbor.RawMessage
	if err := dec.Unmarshal(payload, &m); err != nil {
		return nil, cborError("failed to decode the payload map", err)
	}
	known := 0
	for _, k := range payloadFields {
		if _, ok := m[k]; ok {
			known++
		}
	}
	if known != len(m) {
		for k := range m {
			if !isPayloadField(k) {
				return nil, newError(CheckMalformed, fmt.Sprintf("payload has unknown field %.40q", k), nil)
			}
		}
	}
	for _, k := range requiredFields {
		raw, ok := m[k]
		if !ok {
			return nil, newError(CheckMalformed, "payload has no "+k, nil)
		}
		if isNull(raw) {
			return nil, newError(CheckMalformed, k+" is null", nil)
		}
	}
	kind, err := documentKind(m)
	if err != nil {
		return nil, err
	}

	doc := &Document{Kind: kind}
	if doc.ModuleID, err = text(m["module_id"], "module_id"); err != nil {
		return nil, err
	}
	if doc.ModuleID == "" {
		return nil, newError(CheckMalformed, "module_id is empty", nil)
	}
	if len(doc.ModuleID) > MaxModuleIDLen {
		return nil, newError(CheckTooLarge, fmt.Sprintf("module_id is %d bytes; the limit is %d", len(doc.ModuleID), MaxModuleIDLen), nil)
	}
	if err := ValidateModuleID(kind, doc.ModuleID); err != nil {
		return nil, err
	}

	if doc.Digest, err = text(m["digest"], "digest"); err != nil {
		return nil, err
	}
	// The digests NSM defines (nsm-api src/api/mod.rs, enum Digest); real
	// enclaves use SHA384, which Verify requires.
	switch doc.Digest {
	case "SHA256", "SHA384", "SHA512":
	default:
		return nil, newError(CheckDigest, fmt.Sprintf("digest %.16q is not one NSM uses", doc.Digest), nil)
	}

	ts := m["timestamp"]
	if major(ts) != majorUint {
		return nil, newError(CheckMalformed, "timestamp is not an unsigned integer", nil)
	}
	var ms uint64
	if err := dec.Unmarshal(ts, &ms); err != nil {
		return nil, cborError("failed to decode timestamp", err)
	}
	if ms == 0 || ms > math.MaxInt64 {
		return nil, newError(CheckMalformed, fmt.Sprintf("timestamp %d is out of range", ms), nil)
	}
	doc.Timestamp = time.UnixMilli(int64(ms)).UTC()

	pcrs, err := decodePCRs(m[kind.Field()], kind.Field())
	if err != nil {
		return nil, err
	}
	if kind == KindNitroTPM {
		doc.NitroTPMPCRs = pcrs
	} else {
		doc.PCRs = pcrs
	}

	if doc.Certificate, err = bstr(m["certificate"], "certificate"); err != nil {
		return nil, err
	}
	if err := checkCertSize(doc.Certificate, "certificate"); err != nil {
		return nil, err
	}

	if doc.CABundle, err = decodeCABundle(m["cabundle"]); err != nil {
		return nil, err
	}

	if doc.PublicKey, err = optional(m, "public_key", MaxPublicKeySize); err != nil {
		return nil, err
	}
	if doc.UserData, err = optional(m, "user_data", MaxUserDataSize); err != nil {
		return nil, err
	}
	if doc.Nonce, err = optional(m, "nonce", MaxNonceSize); err != nil {
		return nil, err
	}
	return doc, nil
}

// documentKind tells the kind from which PCR map the payload holds: pcrs
// (an enclave's NSM) or nitrotpm_pcrs (an instance's NitroTPM), never both
// and never neither. KMS evaluates the two under different condition keys
// (kms:RecipientAttestation:PCR<n> and :NitroTPMPCR<n>), so a document that
// could be read as either is refused rather than guessed at.
func documentKind(m map[string]cbor.RawMessage) (Kind, error) {
	enclave, hasEnclave := m["pcrs"]
	tpm, hasTPM := m["nitrotpm_pcrs"]
	switch {
	case hasEnclave && hasTPM:
		return 0, newError(CheckKind, "payload has both pcrs (a Nitro Enclave's) and nitrotpm_pcrs (a NitroTPM's)", nil)
	case hasEnclave:
		if isNull(enclave) {
			return 0, newError(CheckMalformed, "pcrs is null", nil)
		}
		return KindEnclave, nil
	case hasTPM:
		if isNull(tpm) {
			return 0, newError(CheckMalformed, "nitrotpm_pcrs is null", nil)
		}
		return KindNitroTPM, nil
	}
	return 0, newError(CheckKind, "payload has neither pcrs (a Nitro Enclave's) nor nitrotpm_pcrs (a NitroTPM's)", nil)
}

// Module IDs of real documents: "i-" and the 17 hex digits of the EC2
// instance ID, then "-enc" and 16 hex digits for an enclave (e.g.
// i-0df237f0418feb41e-enc018d1c7ef94eb110 in testdata/real) or "-tpm" and 16
// hex digits for the instance's NitroTPM (i-030a1f233f8348690-tpm0000000000000000
// in testdata/nitrotpm). 39 bytes either way.
const (
	instanceIDDigits = 17
	moduleSuffixLen  = 16
	moduleIDLen      = len("i-") + instanceIDDigits + len("-enc") + moduleSuffixLen
)

// ValidateModuleID reports, as an *Error with CheckModuleID, whether id does
// not have the form of kind's module IDs: i-<17 hex digits>-enc<16 hex
// digits> for an enclave, i-<17 hex digits>-tpm<16 hex digits> for a
// NitroTPM (lowercase hex, as AWS writes instance IDs). Simulators use it
// to refuse a module ID Parse would refuse.
func ValidateModuleID(kind Kind, id string) error {
	infix := "-enc"
	if kind == KindNitroTPM {
		infix = "-tpm"
	}
	ok := len(id) == moduleIDLen && id[:2] == "i-" &&
		isLowerHex(id[2:2+instanceIDDigits]) &&
		id[2+instanceIDDigits:2+instanceIDDigits+4] == infix &&
		isLowerHex(id[2+instanceIDDigits+4:])
	if !ok {
		return newError(CheckModuleID, fmt.Sprintf("module_id %.64q is not a %s module ID (i-<17 hex digits>%s<16 hex digits>)", id, kind, infix), nil)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isPayloadField(k string) bool {
	for _, f := range payloadFields {
		if f == k {
			return true
		}
	}
	return false
}

func checkCertSize(der []byte, field string) error {
	if len(der) == 0 {
		return newError(CheckMalformed, field+" is empty", nil)
	}
	if len(der) > MaxCertificateSize {
		return newError(CheckTooLarge, fmt.Sprintf("%s is %d bytes; the limit is %d", field, len(der), MaxCertificateSize), nil)
	}
	return nil
}

// decodePCRs checks a pcrs or nitrotpm_pcrs map (field) against the
// specification: 1 to 32 entries, unsigned keys 0-31, values of 32, 48 or
// 64 bytes.
func decodePCRs(raw cbor.RawMessage, field string) (map[int][]byte, error) {
	if major(raw) != majorMap {
		return nil, newError(CheckPCRs, field+" is not a map", nil)
	}
	var m map[uint64]cbor.RawMessage
	if err := dec.Unmarshal(raw, &m); err != nil {
		if _, ok := err.(*cbor.MaxMapPairsError); ok {
			return nil, newError(CheckPCRs, fmt.Sprintf("%s has more than %d entries", field, MaxPCRs), err)
		}
		return nil, newError(CheckPCRs, field+" is not a map of unsigned indexes to byte strings", err)
	}
	if len(m) == 0 {
		return nil, newError(CheckPCRs, field+" is empty", nil)
	}
	pcrs := make(map[int][]byte, len(m))
	for idx, v := range m {
		if idx >= MaxPCRs {
			return nil, newError(CheckPCRs, fmt.Sprintf("PCR index %d is out of range 0-%d", idx, MaxPCRs-1), nil)
		}
		if len(v) == 0 || major(v) != majorBytes {
			return nil, newError(CheckPCRs, fmt.Sprintf("PCR%d is not a byte string", idx), nil)
		}
		var b []byte
		if err := dec.Unmarshal(v, &b); err != nil {
			return nil, newError(CheckPCRs, fmt.Sprintf("failed to decode PCR%d", idx), err)
		}
		switch len(b) {
		case 32, 48, 64:
		default:
			return nil, newError(CheckPCRs, fmt.Sprintf("PCR%d is %d bytes; PCRs are 32, 48 or 64", idx, len(b)), nil)
		}
		pcrs[int(idx)] = b
	}
	return pcrs, nil
}

func decodeCABundle(raw cbor.RawMessage) ([][]byte, error) {
	if major(raw) != majorArray {
		return nil, newError(CheckMalformed, "cabundle is not an array", nil)
	}
	var items []cbor.RawMessage
	if err := dec.Unmarshal(raw, &items); err != nil {
		return nil, cborError("failed to decode cabundle", err)
	}
	if len(items) == 0 {
		return nil, newError(CheckMalformed, "cabundle is empty", nil)
	}
	if len(items) > MaxCABundleLen {
		return nil, newError(CheckTooLarge, fmt.Sprintf("cabundle has %d certificates; the limit is %d", len(items), MaxCABundleLen), nil)
	}
	bundle := make([][]byte, len(items))
	for i, item := range items {
		field := fmt.Sprintf("cabundle[%d]", i)
		der, err := bstr(item, field)
		if err != nil {
			return nil, err
		}
		if err := checkCertSize(der, field); err != nil {
			return nil, err
		}
		bundle[i] = der
	}
	return bundle, nil
}

// optional decodes public_key, user_data or nonce: absent, null or empty
// all give nil.
func optional(m map[string]cbor.RawMessage, field string, limit int) ([]byte, error) {
	raw, ok := m[field]
	if !ok || isNull(raw) {
		return nil, nil
	}
	b, err := bstr(raw, field)
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, newError(CheckTooLarge, fmt.Sprintf("%s is %d bytes; NSM allows at most %d", field, len(b), limit), nil)
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

// ChainSubjects returns the subjects of the document's certificates from
// the leaf up to the root: certificate, cabundle[n-1], ..., cabundle[0].
func (d *Document) ChainSubjects() []string {
	if d.leaf == nil {
		return nil
	}
	out := make([]string, 0, 1+len(d.bundle))
	out = append(out, d.leaf.Subject.String())
	for i := len(d.bundle) - 1; i >= 0; i-- {
		out = append(out, d.bundle[i].Subject.String())
	}
	return out
}

// LeafCertificate returns the parsed certificate that signed the document,
// or nil when d did not come from Parse.
func (d *Document) LeafCertificate() *x509.Certificate { return d.leaf }

// Measurements returns the PCRs of the document's kind: PCRs for an
// enclave, NitroTPMPCRs for an instance.
func (d *Document) Measurements() map[int][]byte {
	if d.Kind == KindNitroTPM {
		return d.NitroTPMPCRs
	}
	return d.PCRs
}
