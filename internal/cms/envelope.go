package cms

import (
	"crypto/aes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Envelope is a parsed CiphertextForRecipient: every field of the RFC 5652
// structure that kmsproxy reads, and how it was encoded. Parse fills it only
// with values it accepts, so a parsed Envelope always describes the KMS shape.
// It marshals with encoding/json for `kmsproxyctl cms inspect --json`:
// identifiers and the IV as hex, the encrypted key and content as their size
// and SHA-256.
type Envelope struct {
	// Size is the length of the encoded envelope in bytes.
	Size int `json:"size"`
	// Encoding is the length form the writer used.
	Encoding Encoding `json:"encoding"`
	// ContentType is ContentInfo.contentType: id-envelopedData.
	ContentType string `json:"content_type"`
	// Version is EnvelopedData.version: 2 with a subjectKeyIdentifier
	// recipient, 0 with issuerAndSerialNumber (RFC 5652 section 6.1).
	Version int `json:"version"`
	// RecipientVersion is KeyTransRecipientInfo.version: 2 or 0, as Version.
	RecipientVersion int `json:"recipient_version"`
	// RecipientIDKind says which form RecipientID has.
	RecipientIDKind RecipientIDKind `json:"recipient_id_kind"`
	// RecipientID is the subjectKeyIdentifier bytes (KMS: RecipientKeyID of
	// the attested public key; OpenSSL -keyid: the 20-byte SHA-1 key id), or
	// the DER of IssuerAndSerialNumber.
	RecipientID HexBytes `json:"recipient_id"`
	// KeyEncryption is the keyEncryptionAlgorithm.
	KeyEncryption KeyEncryption `json:"key_encryption"`
	// Refusals lists, for an envelope read with Inspect, what kmsproxyd
	// would refuse in it and why (Parse and Decrypt refuse the envelope at
	// the first of them). Empty when the envelope has KMS's shape.
	Refusals []string `json:"refusals,omitempty"`
	// EncryptedKey is the RSA-OAEP encrypted content-encryption key; its size
	// is the recipient key's modulus size.
	EncryptedKey Blob `json:"encrypted_key"`
	// EncryptedContentType is EncryptedContentInfo.contentType: id-data.
	EncryptedContentType string `json:"encrypted_content_type"`
	// ContentEncryptionOID and ContentEncryption name the
	// contentEncryptionAlgorithm: 2.16.840.1.101.3.4.1.42, AES-256-CBC.
	ContentEncryptionOID string `json:"content_encryption_oid"`
	ContentEncryption    string `json:"content_encryption"`
	// IV is the AES-CBC initialisation vector (16 bytes).
	IV HexBytes `json:"iv"`
	// EncryptedContent is the ciphertext, reassembled from its chunks.
	EncryptedContent Blob `json:"encrypted_content"`
	// ContentConstructed is true when the ciphertext came as a constructed
	// [0] of OCTET STRING chunks (KMS, OpenSSL -stream), false for a
	// primitive [0].
	ContentConstructed bool `json:"content_constructed"`
	// Chunks is the number of pieces the ciphertext came in (1 when
	// primitive); ChunkSizes lists their sizes in order.
	Chunks     int   `json:"chunks"`
	ChunkSizes []int `json:"chunk_sizes"`
}

// KeyEncryption describes the key encryption algorithm: always RSAES-OAEP
// with SHA-256 and MGF1-SHA-256 once parsed.
type KeyEncryption struct {
	OID  string `json:"oid"`
	Name string `json:"name"`
	// Hash is the OAEP hash; HashNullParams records whether its
	// AlgorithmIdentifier carried NULL parameters (KMS writes them, OpenSSL
	// omits them; RFC 4055 section 2.1 allows both).
	Hash           string `json:"hash"`
	HashNullParams bool   `json:"hash_null_params"`
	// MGF is the mask generation function and MGFHash its hash, with the
	// same NULL-parameters flag.
	MGF               string `json:"mgf"`
	MGFHash           string `json:"mgf_hash"`
	MGFHashNullParams bool   `json:"mgf_hash_null_params"`
	// The OAEP label (pSourceFunc) is always empty once parsed;
	// LabelExplicit is true when the writer spelled out that default.
	LabelExplicit bool `json:"label_explicit"`
}

// RecipientIDKind is the form of the recipient identifier (RFC 5652 section
// 6.2.1, RecipientIdentifier).
type RecipientIDKind string

const (
	// SubjectKeyIdentifier is the [0] form; KMS always writes it.
	SubjectKeyIdentifier RecipientIDKind = "subjectKeyIdentifier"
	// IssuerAndSerialNumber is the certificate form OpenSSL writes without -keyid.
	IssuerAndSerialNumber RecipientIDKind = "issuerAndSerialNumber"
)

// Encoding is the length form of an envelope (ITU-T X.690).
type Encoding string

const (
	// EncodingBERIndefinite: at least one indefinite length; what KMS writes.
	EncodingBERIndefinite Encoding = "BER-indefinite"
	// EncodingBERDefinite: definite lengths, but the encrypted content is a
	// constructed (chunked) string, which DER forbids.
	EncodingBERDefinite Encoding = "BER-definite"
	// EncodingDER: definite lengths and a primitive encrypted content.
	EncodingDER Encoding = "DER"
)

// HexBytes is a byte slice that marshals to JSON as a hex string.
type HexBytes []byte

// MarshalJSON encodes b as a lower-case hex string.
func (b HexBytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(hex.EncodeToString(b))
}

// UnmarshalJSON decodes a hex string.
func (b *HexBytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("failed to decode hex: %w", err)
	}
	*b = v
	return nil
}

// Blob is a byte slice too large to be worth printing; it marshals to JSON
// as {"size": N, "sha256": "hex"} (output only: it does not unmarshal).
type Blob []byte

// MarshalJSON encodes the size and SHA-256 of b.
func (b Blob) MarshalJSON() ([]byte, error) {
	sum := sha256.Sum256(b)
	return json.Marshal(struct {
		Size   int    `json:"size"`
		SHA256 string `json:"sha256"`
	}{len(b), hex.EncodeToString(sum[:])})
}

// Parse reads a CiphertextForRecipient without any key: the BER/DER
// structure, the versions, the recipient, the algorithms and their parameters.
// It accepts exactly the shape described in the package comment and returns
// an *Error otherwise. The Envelope's byte fields are copies: envelope may be
// reused once Parse returns.
func Parse(envelope []byte) (*Envelope, error) {
	return parse(envelope, false)
}

// Inspect reads an envelope as Parse does, for diagnosis: it accepts every
// well-formed EnvelopedData that Parse refuses only for its algorithms,
// parameters or versions (RSAES-OAEP with SHA-1 defaults, another content
// encryption, a version KMS does not write, attributes KMS never writes,
// several recipients), describes it, and lists in Envelope.Refusals what
// kmsproxyd would refuse and why. Malformed encodings and the size limits
// are errors, as for Parse.
func Inspect(envelope []byte) (*Envelope, error) {
	return parse(envelope, true)
}

func parse(envelope []byte, lenient bool) (*Envelope, error) {
	if len(envelope) > MaxEnvelopeSize {
		return nil, newError(ErrTooLarge, fmt.Sprintf("envelope is %d bytes, the limit is %d", len(envelope), MaxEnvelopeSize))
	}
	root, err := parseBER(envelope)
	if err != nil {
		return nil, err
	}
	e := &Envelope{Size: len(envelope)}
	if lenient {
		// A non-nil Refusals is what makes refuse note instead of fail.
		e.Refusals = []string{}
	}
	if err := e.readContentInfo(&root); err != nil {
		return nil, err
	}
	if len(e.Refusals) == 0 {
		e.Refusals = nil
	}
	switch {
	case root.hasIndefinite():
		e.Encoding = EncodingBERIndefinite
	case e.ContentConstructed:
		e.Encoding = EncodingBERDefinite
	default:
		e.Encoding = EncodingDER
	}
	return e, nil
}

// ReadEnvelope reads an encoded envelope from r (a file, standard input) for
// Parse or Decrypt, reading at most MaxEnvelopeSize+1 bytes: a longer input
// is ErrTooLarge without being read to its end.
func ReadEnvelope(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxEnvelopeSize+1))
	if err != nil {
		return nil, fmt.Errorf("cms: failed to read envelope: %w", err)
	}
	if len(b) > MaxEnvelopeSize {
		return nil, newError(ErrTooLarge, fmt.Sprintf("envelope is over %d bytes", MaxEnvelopeSize))
	}
	return b, nil
}

func malformed(format string, args ...any) error {
	return newError(ErrMalformed, fmt.Sprintf(format, args...))
}

func unsupported(format string, args ...any) error {
	return newError(ErrUnsupported, fmt.Sprintf(format, args...))
}

// refuse returns err (an ErrUnsupported *Error) while parsing strictly;
// for Inspect (e.Refusals not nil while it reads) it notes the reason in
// Refusals and returns nil, so that the reader goes on with what the
// envelope says instead.
func (e *Envelope) refuse(err error) error {
	var ce *Error
	if e.Refusals == nil || !errors.As(err, &ce) || !errors.Is(err, ErrUnsupported) {
		return err
	}
	e.Refusals = append(e.Refusals, ce.Reason)
	return nil
}

// expectTag checks that el has the identifier octet want.
func expectTag(el *berElement, want byte, what string) error {
	if el.tag != want {
		return malformed("%s has tag 0x%02x, want 0x%02x", what, el.tag, want)
	}
	return nil
}

// fields returns the elements inside el, which KMS's layout keeps to a few:
// buf holds them without allocating.
func fields(el *berElement, buf *[6]berElement) ([]berElement, error) {
	return el.elements(buf[:0])
}

// readContentInfo reads ContentInfo (RFC 5652 section 3):
//
//	ContentInfo ::= SEQUENCE {
//	  contentType ContentType,
//	  content [0] EXPLICIT ANY DEFINED BY contentType }
func (e *Envelope) readContentInfo(n *berElement) error {
	if err := expectTag(n, tagSequence, "ContentInfo"); err != nil {
		return err
	}
	var buf [6]berElement
	f, err := fields(n, &buf)
	if err != nil {
		return err
	}
	if len(f) != 2 {
		return malformed("ContentInfo has %d elements, want 2", len(f))
	}
	ct, err := readOID(&f[0], "ContentInfo content type")
	if err != nil {
		return err
	}
	if !oidEnvelopedData.is(ct) {
		return unsupported("content type %s, want %s", describeOID(ct), oidEnvelopedData)
	}
	e.ContentType = oidEnvelopedData.dotted
	wrapper := &f[1]
	if err := expectTag(wrapper, tagContext0Cons, "ContentInfo content"); err != nil {
		return err
	}
	var inner [6]berElement
	w, err := fields(wrapper, &inner)
	if err != nil {
		return err
	}
	if len(w) != 1 {
		return malformed("ContentInfo [0] holds %d elements, want 1", len(w))
	}
	return e.readEnvelopedData(&w[0])
}

// readEnvelopedData reads EnvelopedData (RFC 5652 section 6.1):
//
//	EnvelopedData ::= SEQUENCE {
//	  version CMSVersion,
//	  originatorInfo [0] IMPLICIT OriginatorInfo OPTIONAL,
//	  recipientInfos RecipientInfos,
//	  encryptedContentInfo EncryptedContentInfo,
//	  unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }
func (e *Envelope) readEnvelopedData(n *berElement) error {
	if err := expectTag(n, tagSequence, "EnvelopedData"); err != nil {
		return err
	}
	var buf [6]berElement
	all, err := fields(n, &buf)
	if err != nil {
		return err
	}
	if len(all) == 0 {
		return malformed("EnvelopedData is empty")
	}
	version, err := readSmallInt(&all[0], "EnvelopedData version")
	if err != nil {
		return err
	}
	f := all[1:]
	if len(f) > 0 && f[0].tag == tagContext0Cons {
		if err := e.refuse(unsupported("EnvelopedData has originatorInfo, which KMS never writes")); err != nil {
			return err
		}
		f = f[1:]
	}
	if len(f) < 2 {
		return malformed("EnvelopedData has %d elements, want recipientInfos and encryptedContentInfo", len(all))
	}
	if err := expectTag(&f[0], tagSet, "RecipientInfos"); err != nil {
		return err
	}
	if err := e.readRecipientInfos(&f[0]); err != nil {
		return err
	}
	if err := e.readEncryptedContentInfo(&f[1]); err != nil {
		return err
	}
	switch extra := f[2:]; {
	case len(extra) == 1 && extra[0].tag == tagContext1Cons:
		if err := e.refuse(unsupported("EnvelopedData has unprotectedAttrs, which KMS never writes")); err != nil {
			return err
		}
	case len(extra) > 0:
		return malformed("EnvelopedData has %d unexpected trailing elements", len(extra))
	}

	// RFC 5652 section 6.1: version is 0 when there is no originatorInfo, no
	// unprotectedAttrs and every RecipientInfo is version 0; otherwise 2 for a
	// key transport recipient.
	want := 2
	if e.RecipientVersion == 0 {
		want = 0
	}
	e.Version = version
	if version != want {
		return e.refuse(unsupported("EnvelopedData version %d, want %d for a version %d recipient (RFC 5652 section 6.1)", version, want, e.RecipientVersion))
	}
	return nil
}

// readRecipientInfos reads the RecipientInfos SET, which must hold exactly one
// KeyTransRecipientInfo (RFC 5652 section 6.2.1):
//
//	KeyTransRecipientInfo ::= SEQUENCE {
//	  version CMSVersion,  -- always set to 0 or 2
//	  rid RecipientIdentifier,
//	  keyEncryptionAlgorithm KeyEncryptionAlgorithmIdentifier,
//	  encryptedKey EncryptedKey }
//	RecipientIdentifier ::= CHOICE {
//	  issuerAndSerialNumber IssuerAndSerialNumber,
//	  subjectKeyIdentifier [0] SubjectKeyIdentifier }
//
// KMS and OpenSSL both write this SET with definite lengths, so it is read as
// DER with cryptobyte.
func (e *Envelope) readRecipientInfos(n *berElement) error {
	var buf [6]berElement
	ris, err := fields(n, &buf)
	if err != nil {
		return err
	}
	if len(ris) != 1 {
		if err := e.refuse(unsupported("%d recipient infos, want exactly 1", len(ris))); err != nil {
			return err
		}
		if len(ris) == 0 {
			return nil
		}
		ris = ris[:1] // Inspect describes the first
	}
	if n.indefinite {
		return unsupported("recipient infos use indefinite lengths; KMS writes them in DER")
	}
	if err := e.readKeyTransRecipientInfo(&ris[0]); err != nil {
		// cryptobyte reads DER only: an indefinite length inside is refused
		// as such rather than as malformed.
		if errors.Is(err, ErrMalformed) && n.hasIndefinite() {
			return unsupported("recipient infos use indefinite lengths; KMS writes them in DER")
		}
		return err
	}
	return nil
}

// readKeyTransRecipientInfo reads the one RecipientInfo as DER.
func (e *Envelope) readKeyTransRecipientInfo(ri *berElement) error {
	switch ri.tag {
	case tagSequence: // KeyTransRecipientInfo
	case 0xa1:
		return unsupported("recipient info is a KeyAgreeRecipientInfo, want KeyTransRecipientInfo")
	case 0xa2:
		return unsupported("recipient info is a KEKRecipientInfo, want KeyTransRecipientInfo")
	case 0xa3:
		return unsupported("recipient info is a PasswordRecipientInfo, want KeyTransRecipientInfo")
	case 0xa4:
		return unsupported("recipient info is an OtherRecipientInfo, want KeyTransRecipientInfo")
	default:
		return malformed("recipient info has tag 0x%02x", ri.tag)
	}

	s := cryptobyte.String(ri.raw)
	var ktri cryptobyte.String
	var version int64
	if !s.ReadASN1(&ktri, cbasn1.SEQUENCE) || !ktri.ReadASN1Int64WithTag(&version, cbasn1.INTEGER) {
		return malformed("recipient info version is not a DER INTEGER")
	}

	var rid cryptobyte.String
	switch {
	case ktri.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific()):
		if !ktri.ReadASN1(&rid, cbasn1.Tag(0).ContextSpecific()) {
			return malformed("subjectKeyIdentifier is not DER")
		}
		if len(rid) == 0 || len(rid) > maxRecipientIDSize {
			return unsupported("subjectKeyIdentifier is %d bytes, want 1 to %d (KMS writes 32)", len(rid), maxRecipientIDSize)
		}
		e.RecipientIDKind = SubjectKeyIdentifier
		if version != 2 {
			if err := e.refuse(unsupported("recipient info version %d, want 2 with a subjectKeyIdentifier (RFC 5652 section 6.2.1)", version)); err != nil {
				return err
			}
		}
	case ktri.PeekASN1Tag(cbasn1.SEQUENCE):
		if !ktri.ReadASN1Element(&rid, cbasn1.SEQUENCE) || !checkIssuerAndSerial(rid) {
			return malformed("issuerAndSerialNumber is not a DER SEQUENCE of a Name and an INTEGER")
		}
		e.RecipientIDKind = IssuerAndSerialNumber
		if version != 0 {
			if err := e.refuse(unsupported("recipient info version %d, want 0 with an issuerAndSerialNumber (RFC 5652 section 6.2.1)", version)); err != nil {
				return err
			}
		}
	default:
		return malformed("recipient identifier is neither subjectKeyIdentifier nor issuerAndSerialNumber")
	}
	e.RecipientVersion = int(version)
	e.RecipientID = HexBytes(append([]byte(nil), rid...))

	var alg cryptobyte.String
	if !ktri.ReadASN1(&alg, cbasn1.SEQUENCE) {
		return malformed("keyEncryptionAlgorithm is not a DER SEQUENCE")
	}
	if err := e.KeyEncryption.read(alg, e.refuse); err != nil {
		return err
	}
	var ek []byte
	if !ktri.ReadASN1Bytes(&ek, cbasn1.OCTET_STRING) {
		return malformed("encryptedKey is not a DER OCTET STRING")
	}
	if !ktri.Empty() {
		return malformed("recipient info has trailing elements")
	}
	e.EncryptedKey = Blob(append([]byte(nil), ek...))
	if !supportedKeySize(len(ek)) {
		return e.refuse(unsupported("encrypted key is %d bytes, want the modulus size of an RSA-2048, RSA-3072 or RSA-4096 key (256, 384 or 512)", len(ek)))
	}
	return nil
}

// checkIssuerAndSerial checks the shape of IssuerAndSerialNumber (RFC 5652
// section 10.2.4): SEQUENCE { issuer Name, serialNumber INTEGER }.
func checkIssuerAndSerial(der cryptobyte.String) bool {
	var isn, name, serial cryptobyte.String
	return der.ReadASN1(&isn, cbasn1.SEQUENCE) && der.Empty() &&
		isn.ReadASN1(&name, cbasn1.SEQUENCE) &&
		isn.ReadASN1(&serial, cbasn1.INTEGER) && len(serial) > 0 && isn.Empty()
}

// read reads the keyEncryptionAlgorithm AlgorithmIdentifier contents (the
// algorithm OID and its parameters). RFC 4055 section 4.1:
//
//	RSAES-OAEP-params ::= SEQUENCE {
//	  hashFunc    [0] AlgorithmIdentifier DEFAULT sha1Identifier,
//	  maskGenFunc [1] AlgorithmIdentifier DEFAULT mgf1SHA1Identifier,
//	  pSourceFunc [2] AlgorithmIdentifier DEFAULT pSpecifiedEmptyIdentifier }
//
// Only SHA-256 for both hashes and an empty label are accepted: that is what
// KMS writes (and its only RecipientInfo.KeyEncryptionAlgorithm value is
// RSAES_OAEP_SHA_256, KMS API Reference, RecipientInfo). The defaults mean
// SHA-1, so absent or empty parameters are refused.
func (k *KeyEncryption) read(alg cryptobyte.String, refuse func(error) error) error {
	var oid []byte
	if !readOIDContent(&alg, &oid) {
		return malformed("keyEncryptionAlgorithm has no DER OBJECT IDENTIFIER")
	}
	if !oidRSAESOAEP.is(oid) {
		k.OID, k.Name = describeOID(oid), describeOID(oid)
		return refuse(unsupported("key encryption algorithm %s, want %s", describeOID(oid), oidRSAESOAEP))
	}
	k.OID, k.Name = oidRSAESOAEP.dotted, nameRSAESOAEP
	// What RFC 4055 section 4.1's defaults mean, for Inspect to show.
	const sha1Default, mgf1Default = "SHA-1 (default)", "MGF1 (default)"
	if alg.Empty() {
		k.Hash, k.MGF, k.MGFHash = sha1Default, mgf1Default, sha1Default
		return refuse(unsupported("RSAES-OAEP parameters absent, which means SHA-1 and MGF1-SHA-1 (RFC 4055 section 4.1); want SHA-256"))
	}
	var params cryptobyte.String
	if !alg.ReadASN1(&params, cbasn1.SEQUENCE) || !alg.Empty() {
		return malformed("RSAES-OAEP parameters are not a DER SEQUENCE")
	}
	if params.Empty() {
		k.Hash, k.MGF, k.MGFHash = sha1Default, mgf1Default, sha1Default
		return refuse(unsupported("RSAES-OAEP parameters empty, which means SHA-1 and MGF1-SHA-1 (RFC 4055 section 4.1); want SHA-256"))
	}

	var hashFunc cryptobyte.String
	var present bool
	if !params.ReadOptionalASN1(&hashFunc, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return malformed("RSAES-OAEP hashFunc is not DER")
	}
	if !present {
		k.Hash = sha1Default
		if err := refuse(unsupported("RSAES-OAEP hashFunc absent, which means SHA-1 (RFC 4055 section 4.1); want SHA-256")); err != nil {
			return err
		}
	} else {
		hash, null, err := readHashAlgorithm(hashFunc, "RSAES-OAEP hashFunc")
		if err != nil {
			return err
		}
		k.Hash, k.HashNullParams = nameSHA256, null
		if !oidSHA256.is(hash) {
			k.Hash = describeOID(hash)
			if err := refuse(unsupported("RSAES-OAEP hash %s, want SHA-256", describeOID(hash))); err != nil {
				return err
			}
		}
	}

	var maskGen cryptobyte.String
	if !params.ReadOptionalASN1(&maskGen, &present, cbasn1.Tag(1).Constructed().ContextSpecific()) {
		return malformed("RSAES-OAEP maskGenFunc is not DER")
	}
	if !present {
		k.MGF, k.MGFHash = mgf1Default, sha1Default
		if err := refuse(unsupported("RSAES-OAEP maskGenFunc absent, which means MGF1 with SHA-1 (RFC 4055 section 4.1); want MGF1 with SHA-256")); err != nil {
			return err
		}
	} else if err := k.readMGF(maskGen, refuse); err != nil {
		return err
	}

	var pSource cryptobyte.String
	if !params.ReadOptionalASN1(&pSource, &present, cbasn1.Tag(2).Constructed().ContextSpecific()) {
		return malformed("RSAES-OAEP pSourceFunc is not DER")
	}
	if present {
		var src cryptobyte.String
		var srcOID []byte
		var label []byte
		if !pSource.ReadASN1(&src, cbasn1.SEQUENCE) || !pSource.Empty() ||
			!readOIDContent(&src, &srcOID) || !src.ReadASN1Bytes(&label, cbasn1.OCTET_STRING) || !src.Empty() {
			return malformed("RSAES-OAEP pSourceFunc is not a DER AlgorithmIdentifier with an OCTET STRING")
		}
		k.LabelExplicit = true
		if !oidPSpecified.is(srcOID) {
			if err := refuse(unsupported("RSAES-OAEP pSourceFunc %s, want %s", describeOID(srcOID), oidPSpecified)); err != nil {
				return err
			}
		}
		if len(label) != 0 {
			if err := refuse(unsupported("RSAES-OAEP label of %d bytes; KMS uses an empty label", len(label))); err != nil {
				return err
			}
		}
	}
	if !params.Empty() {
		return malformed("RSAES-OAEP parameters have trailing elements")
	}
	return nil
}

// readMGF reads RSAES-OAEP's maskGenFunc: MGF1 with SHA-256 is what KMS
// writes.
func (k *KeyEncryption) readMGF(maskGen cryptobyte.String, refuse func(error) error) error {
	var mgf cryptobyte.String
	var mgfOID []byte
	if !maskGen.ReadASN1(&mgf, cbasn1.SEQUENCE) || !maskGen.Empty() || !readOIDContent(&mgf, &mgfOID) {
		return malformed("RSAES-OAEP maskGenFunc is not a DER AlgorithmIdentifier")
	}
	if !oidMGF1.is(mgfOID) {
		k.MGF = describeOID(mgfOID)
		return refuse(unsupported("RSAES-OAEP mask generation function %s, want %s", describeOID(mgfOID), oidMGF1))
	}
	mgfHash, mgfNull, err := readHashAlgorithm(mgf, "MGF1 hash")
	if err != nil {
		return err
	}
	k.MGF, k.MGFHash, k.MGFHashNullParams = nameMGF1, nameSHA256, mgfNull
	if !oidSHA256.is(mgfHash) {
		k.MGFHash = describeOID(mgfHash)
		return refuse(unsupported("MGF1 hash %s, want SHA-256", describeOID(mgfHash)))
	}
	return nil
}

// readHashAlgorithm reads a DER AlgorithmIdentifier for a hash function and
// reports whether it carried NULL parameters (RFC 4055 section 2.1: absent
// and NULL are both allowed).
func readHashAlgorithm(in cryptobyte.String, what string) ([]byte, bool, error) {
	var alg cryptobyte.String
	var oid []byte
	if !in.ReadASN1(&alg, cbasn1.SEQUENCE) || !in.Empty() || !readOIDContent(&alg, &oid) {
		return nil, false, malformed("%s is not a DER AlgorithmIdentifier", what)
	}
	if alg.Empty() {
		return oid, false, nil
	}
	var null cryptobyte.String
	if !alg.ReadASN1(&null, cbasn1.NULL) || len(null) != 0 || !alg.Empty() {
		return nil, false, unsupported("%s has parameters other than NULL", what)
	}
	return oid, true, nil
}

// readEncryptedContentInfo reads EncryptedContentInfo (RFC 5652 section 6.1):
//
//	EncryptedContentInfo ::= SEQUENCE {
//	  contentType ContentType,
//	  contentEncryptionAlgorithm ContentEncryptionAlgorithmIdentifier,
//	  encryptedContent [0] IMPLICIT EncryptedContent OPTIONAL }
//
// KMS writes the SEQUENCE and the [0] with indefinite lengths and the
// ciphertext as chunks; OpenSSL without -stream writes DER.
func (e *Envelope) readEncryptedContentInfo(n *berElement) error {
	if err := expectTag(n, tagSequence, "EncryptedContentInfo"); err != nil {
		return err
	}
	var buf [6]berElement
	f, err := fields(n, &buf)
	if err != nil {
		return err
	}
	if len(f) < 2 || len(f) > 3 {
		return malformed("EncryptedContentInfo has %d elements, want 2 or 3", len(f))
	}
	ct, err := readOID(&f[0], "EncryptedContentInfo content type")
	if err != nil {
		return err
	}
	e.EncryptedContentType = oidData.dotted
	if !oidData.is(ct) {
		e.EncryptedContentType = describeOID(ct)
		if err := e.refuse(unsupported("encrypted content type %s, want %s", describeOID(ct), oidData)); err != nil {
			return err
		}
	}

	if err := expectTag(&f[1], tagSequence, "contentEncryptionAlgorithm"); err != nil {
		return err
	}
	if err := e.readContentEncryption(f[1].raw); err != nil {
		if errors.Is(err, ErrMalformed) && f[1].hasIndefinite() {
			return unsupported("contentEncryptionAlgorithm uses indefinite lengths; KMS writes it in DER")
		}
		return err
	}

	if len(f) < 3 {
		return e.refuse(unsupported("encrypted content absent (detached content is not supported)"))
	}
	return e.readEncryptedContent(&f[2])
}

// readContentEncryption reads the contentEncryptionAlgorithm as DER.
func (e *Envelope) readContentEncryption(der []byte) error {
	s := cryptobyte.String(der)
	var alg cryptobyte.String
	var oid []byte
	if !s.ReadASN1(&alg, cbasn1.SEQUENCE) || !readOIDContent(&alg, &oid) {
		return malformed("contentEncryptionAlgorithm is not a DER AlgorithmIdentifier")
	}
	if !oidAES256CBC.is(oid) {
		e.ContentEncryptionOID, e.ContentEncryption = describeOID(oid), describeOID(oid)
		// Inspect shows an IV-like parameter (AES-CBC's) when there is one.
		var iv []byte
		if alg.ReadASN1Bytes(&iv, cbasn1.OCTET_STRING) && alg.Empty() {
			e.IV = HexBytes(append([]byte(nil), iv...))
		}
		return e.refuse(unsupported("content encryption algorithm %s, want %s", describeOID(oid), oidAES256CBC))
	}
	e.ContentEncryptionOID, e.ContentEncryption = oidAES256CBC.dotted, nameAES256CBC
	// RFC 3565 section 4.1: the parameters are the IV, an OCTET STRING.
	var iv []byte
	if !alg.ReadASN1Bytes(&iv, cbasn1.OCTET_STRING) || !alg.Empty() {
		return malformed("AES-256-CBC parameters are not a DER OCTET STRING")
	}
	e.IV = HexBytes(append([]byte(nil), iv...))
	if len(iv) != aes.BlockSize {
		return e.refuse(unsupported("AES-256-CBC IV is %d bytes, want %d", len(iv), aes.BlockSize))
	}
	return nil
}

// readEncryptedContent reassembles encryptedContent [0] IMPLICIT OCTET STRING:
// primitive, or constructed from primitive OCTET STRING chunks (X.690 8.7.3.2).
func (e *Envelope) readEncryptedContent(n *berElement) error {
	switch n.tag {
	case tagContext0:
		e.Chunks = 1
		e.ChunkSizes = []int{len(n.contents)}
		e.EncryptedContent = Blob(append([]byte(nil), n.contents...))
	case tagContext0Cons:
		// KMS writes at most 5 chunks; more than 8 cost one allocation.
		var buf [8]berElement
		chunks, err := n.elements(buf[:0])
		if err != nil {
			return err
		}
		if len(chunks) > MaxChunks {
			return newError(ErrTooManyChunks, fmt.Sprintf("encrypted content in %d chunks, the limit is %d", len(chunks), MaxChunks))
		}
		total := 0
		for i := range chunks {
			c := &chunks[i]
			if c.tag == tagOctetStringCon {
				return unsupported("encrypted content chunk %d is itself constructed; KMS writes primitive chunks", i)
			}
			if c.tag != tagOctetString {
				return malformed("encrypted content chunk %d has tag 0x%02x, want OCTET STRING (0x04)", i, c.tag)
			}
			total += len(c.contents)
		}
		if total > MaxEncryptedContent {
			return newError(ErrTooLarge, fmt.Sprintf("encrypted content is %d bytes, the limit is %d (a %d-byte plaintext)", total, MaxEncryptedContent, MaxPlaintext))
		}
		content := make([]byte, 0, total)
		e.ChunkSizes = make([]int, len(chunks))
		for i := range chunks {
			content = append(content, chunks[i].contents...)
			e.ChunkSizes[i] = len(chunks[i].contents)
		}
		e.ContentConstructed = true
		e.Chunks = len(chunks)
		e.EncryptedContent = Blob(content)
	default:
		return malformed("encryptedContent has tag 0x%02x, want [0] (0x80 or 0xa0)", n.tag)
	}
	size := len(e.EncryptedContent)
	if size > MaxEncryptedContent {
		return newError(ErrTooLarge, fmt.Sprintf("encrypted content is %d bytes, the limit is %d (a %d-byte plaintext)", size, MaxEncryptedContent, MaxPlaintext))
	}
	if size == 0 || size%aes.BlockSize != 0 {
		return malformed("encrypted content is %d bytes, not a positive multiple of the AES block size", size)
	}
	return nil
}

// readOID returns the contents of a primitive OBJECT IDENTIFIER node.
// Compared byte for byte with a known identifier's DER, it needs no decoding:
// an unknown or invalid one only appears in an error.
func readOID(n *berElement, what string) ([]byte, error) {
	if n.tag != tagOID || len(n.contents) == 0 {
		return nil, malformed("%s is not an OBJECT IDENTIFIER", what)
	}
	return n.contents, nil
}

// readOIDContent reads a DER OBJECT IDENTIFIER from s and returns its
// contents in out.
func readOIDContent(s *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadASN1(&v, cbasn1.OBJECT_IDENTIFIER) || len(v) == 0 {
		return false
	}
	*out = v
	return true
}

// readSmallInt reads a primitive INTEGER node holding a CMSVersion.
func readSmallInt(n *berElement, what string) (int, error) {
	s := cryptobyte.String(n.raw)
	var v int64
	if n.tag != tagInteger || !s.ReadASN1Int64WithTag(&v, cbasn1.INTEGER) || !s.Empty() {
		return 0, malformed("%s is not a DER INTEGER", what)
	}
	if v < 0 || v > 127 {
		return 0, unsupported("%s %d is out of range", what, v)
	}
	return int(v), nil
}

// PlaintextSize returns the range of plaintext sizes the ciphertext can hold:
// PKCS #7 padding removes 1 to 16 bytes.
func (e *Envelope) PlaintextSize() (lo, hi int) {
	n := len(e.EncryptedContent)
	if n < aes.BlockSize {
		return 0, 0
	}
	return n - aes.BlockSize, n - 1
}

// Summary returns a multi-line, human-readable description of the envelope
// for `kmsproxyctl cms inspect`. It contains no secret: identifiers, the IV
// and sizes only.
func (e *Envelope) Summary() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("CMS EnvelopedData, %d bytes, %s", e.Size, e.Encoding)
	p("  content type:      %s (%s)", dottedName(e.ContentType), e.ContentType)
	p("  version:           %d", e.Version)
	p("  recipient:         KeyTransRecipientInfo version %d", e.RecipientVersion)
	switch e.RecipientIDKind {
	case SubjectKeyIdentifier:
		form := "not KMS's SHA-256 of the SubjectPublicKeyInfo"
		switch len(e.RecipientID) {
		case sha256.Size:
			form = "SHA-256 of the SubjectPublicKeyInfo, as KMS writes it"
		case 20:
			form = "20 bytes, e.g. OpenSSL's SHA-1 key id"
		}
		p("    identifier:      subjectKeyIdentifier %x (%s)", []byte(e.RecipientID), form)
	default:
		p("    identifier:      %s, %d bytes of DER", e.RecipientIDKind, len(e.RecipientID))
	}
	k := e.KeyEncryption
	p("    key encryption:  %s (%s), hash %s, mask %s with %s, %s, %s", k.Name, k.OID, k.Hash, k.MGF, k.MGFHash,
		nullParams(k.HashNullParams, k.MGFHashNullParams), labelForm(k.LabelExplicit))
	p("    encrypted key:   %d bytes (RSA-%d)", len(e.EncryptedKey), len(e.EncryptedKey)*8)
	p("  encrypted content: %s (%s)", dottedName(e.EncryptedContentType), e.EncryptedContentType)
	p("    algorithm:       %s (%s)", e.ContentEncryption, e.ContentEncryptionOID)
	p("    iv:              %x", []byte(e.IV))
	form := "primitive [0]"
	if e.ContentConstructed {
		form = "constructed [0]"
	}
	p("    ciphertext:      %d bytes in %d chunk(s), %s, chunk sizes %s", len(e.EncryptedContent), e.Chunks, form, chunkList(e.ChunkSizes))
	lo, hi := e.PlaintextSize()
	p("    plaintext:       %d to %d bytes", lo, hi)
	if len(e.Refusals) > 0 {
		p("kmsproxyd would refuse this envelope (KMS never writes it so):")
		for _, r := range e.Refusals {
			p("  - %s", r)
		}
	}
	return b.String()
}

func nullParams(hash, mgf bool) string {
	switch {
	case hash && mgf:
		return "NULL hash parameters"
	case !hash && !mgf:
		return "absent hash parameters"
	default:
		return fmt.Sprintf("hash parameters NULL=%t, MGF1 hash parameters NULL=%t", hash, mgf)
	}
}

func labelForm(explicit bool) string {
	if explicit {
		return "explicit empty label"
	}
	return "default empty label"
}

// chunkList prints sizes compactly: "4 of 1000, 112".
func chunkList(sizes []int) string {
	var parts []string
	for i := 0; i < len(sizes); {
		j := i
		for j < len(sizes) && sizes[j] == sizes[i] {
			j++
		}
		if j-i > 1 {
			parts = append(parts, fmt.Sprintf("%d of %d", j-i, sizes[i]))
		} else {
			parts = append(parts, fmt.Sprint(sizes[i]))
		}
		i = j
	}
	return strings.Join(parts, ", ")
}
