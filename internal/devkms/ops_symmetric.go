package devkms

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// Messages of the decryption errors. KMS answers InvalidCiphertextException
// with no message at all ({"__type":"InvalidCiphertextException"}, as
// aws/aws-nitro-enclaves-sdk-c issue 68 and aws/aws-sdk-java issue 1323
// show), including for a wrong encryption context. A blob that names a key
// KMS cannot find is "AccessDeniedException: The ciphertext refers to a
// customer master key that does not exist, does not exist in this region, or
// you are not allowed to access." (aceew/aws-lambda-env-vars issue 7).
// IncorrectKeyException's text is the KMS API reference's description.
const (
	msgUnknownCiphertextKey = "The ciphertext refers to a customer master key that does not exist, does not exist in this region, or you are not allowed to access."
	msgIncorrectKey         = "The request was rejected because the specified KMS key cannot decrypt the data. The KeyId in a Decrypt request and the SourceKeyId in a ReEncrypt request must identify the same KMS key that was used to encrypt the ciphertext."
)

func invalidCiphertext() error { return kmsapi.Errorf(kmsapi.InvalidCiphertext, "") }

// oaepHash returns the hash of an RSAES_OAEP algorithm.
func oaepHash(alg types.EncryptionAlgorithmSpec) crypto.Hash {
	if alg == types.EncryptionAlgorithmSpecRsaesOaepSha1 {
		return crypto.SHA1
	}
	return crypto.SHA256
}

// maxRSAPlaintext is the longest plaintext RSAES-OAEP encrypts under a
// modulus of k bytes: k - 2*hLen - 2 (RFC 8017, 7.1.1). The KMS Developer
// Guide ("RSA key specs for encryption and decryption") lists the results:
// RSA_2048 214 bytes with SHA-1 and 190 with SHA-256, RSA_3072 342 and 318,
// RSA_4096 470 and 446.
func maxRSAPlaintext(pub *rsa.PublicKey, alg types.EncryptionAlgorithmSpec) int {
	return pub.Size() - 2*oaepHash(alg).Size() - 2
}

// checkAlgorithm answers InvalidKeyUsageException when alg cannot be used
// with k, e.g. "Algorithm RSAES_OAEP_SHA_256 is incompatible with key spec
// SYMMETRIC_DEFAULT." (local-kms's wording for the same check).
func checkEncryptionAlgorithm(k *key, alg types.EncryptionAlgorithmSpec) error {
	for _, a := range k.encryptionAlgorithms() {
		if a == alg {
			return nil
		}
	}
	return kmsapi.Errorf(kmsapi.InvalidKeyUsage, "Algorithm %s is incompatible with key spec %s.", alg, k.spec)
}

// checkContextAllowed refuses an encryption context on asymmetric keys: "An
// encryption context is supported only on operations with symmetric
// encryption KMS keys." (Encrypt API reference, EncryptionContext).
func checkContextAllowed(k *key, member string, ec map[string]string) error {
	if len(ec) > 0 && !k.isSymmetricEncryption() {
		return kmsapi.Errorf(kmsapi.Validation, "%s is not supported with asymmetric KMS keys: an encryption context is supported only on operations with symmetric encryption KMS keys.", member)
	}
	return nil
}

// checkEncryptionContext checks the encryption context members: "The keys
// and values ... can be any string" but not empty (KMS Developer Guide,
// "Encryption context": each key and value is a non-empty string).
func checkEncryptionContext(member string, ec map[string]string) error {
	for k, v := range ec {
		if k == "" || v == "" {
			return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value at '%s' failed to satisfy constraint: Map keys and values must have length greater than or equal to 1", member)
		}
	}
	return nil
}

// sealWith encrypts plaintext with k and alg, after the usage checks every
// encrypting operation makes.
func sealWith(k *key, alg types.EncryptionAlgorithmSpec, plaintext []byte, ec map[string]string, op, ecMember string) ([]byte, error) {
	if err := k.requireUsage(op, types.KeyUsageTypeEncryptDecrypt); err != nil {
		return nil, err
	}
	if err := checkEncryptionAlgorithm(k, alg); err != nil {
		return nil, err
	}
	if err := checkContextAllowed(k, ecMember, ec); err != nil {
		return nil, err
	}
	if k.isSymmetricEncryption() {
		return sealBlob(k, plaintext, ec)
	}
	if max := maxRSAPlaintext(&k.rsa.PublicKey, alg); len(plaintext) > max {
		return nil, kmsapi.Errorf(kmsapi.Validation, "Plaintext of %d bytes is too long for %s with %s: at most %d bytes.", len(plaintext), alg, k.spec, max)
	}
	if alg == types.EncryptionAlgorithmSpecRsaesOaepSha1 {
		return rsa.EncryptOAEP(sha1.New(), rand.Reader, &k.rsa.PublicKey, plaintext, nil)
	}
	return rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.rsa.PublicKey, plaintext, nil)
}

// openWith decrypts a ciphertext with k; every failure is
// InvalidCiphertextException without detail, as KMS answers.
func openWith(k *key, alg types.EncryptionAlgorithmSpec, blob []byte, ec map[string]string) ([]byte, error) {
	if k.isSymmetricEncryption() {
		pt, err := openBlob(k, blob, ec)
		if err != nil {
			return nil, invalidCiphertext()
		}
		return pt, nil
	}
	var pt []byte
	var err error
	if alg == types.EncryptionAlgorithmSpecRsaesOaepSha1 {
		pt, err = rsa.DecryptOAEP(sha1.New(), nil, k.rsa, blob, nil)
	} else {
		pt, err = rsa.DecryptOAEP(sha256.New(), nil, k.rsa, blob, nil)
	}
	if err != nil {
		return nil, invalidCiphertext()
	}
	return pt, nil
}

// decryptionKey finds the key that decrypts blob: the one KeyId names, which
// must be the blob's own for symmetric ciphertexts, or the one the blob
// names.
func (s *Server) decryptionKey(keyID *string, member string, blob []byte, alg types.EncryptionAlgorithmSpec) (*key, keyRef, error) {
	if alg != types.EncryptionAlgorithmSpecSymmetricDefault {
		// "KeyId ... Enforced when the ciphertext was encrypted under an
		// asymmetric KMS key" (Decrypt API reference): there is nothing in
		// a raw RSAES-OAEP ciphertext that names a key.
		if keyID == nil {
			return nil, keyRef{}, kmsapi.Errorf(kmsapi.Validation, "%s is required to decrypt with %s.", member, alg)
		}
		return s.store.resolve(keyID, resolveOptions{member: member, allowAlias: true})
	}
	var k *key
	var ref keyRef
	if keyID != nil {
		var err error
		if k, ref, err = s.store.resolve(keyID, resolveOptions{member: member, allowAlias: true}); err != nil {
			return nil, ref, err
		}
		if !k.isSymmetricEncryption() {
			return nil, ref, checkEncryptionAlgorithm(k, alg)
		}
	}
	id, err := blobKeyID(blob)
	if err != nil {
		return nil, ref, invalidCiphertext()
	}
	if k != nil {
		if k.id != id {
			return nil, ref, kmsapi.Errorf(kmsapi.IncorrectKey, msgIncorrectKey)
		}
		return k, ref, nil
	}
	k = s.store.snap().keys[id]
	if k == nil {
		return nil, ref, kmsapi.Errorf(kmsapi.AccessDenied, msgUnknownCiphertextKey)
	}
	return k, keyRef{raw: id, kind: refKeyID, id: id}, nil
}

// requestAlias returns the kms:RequestAlias condition key when the request
// named the key by an alias (KMS Developer Guide, kms:RequestAlias).
func requestAlias(ref keyRef, extra map[string][]string) map[string][]string {
	if extra == nil {
		extra = map[string][]string{}
	}
	if ref.kind == refAliasName || ref.kind == refAliasARN {
		extra["kms:RequestAlias"] = []string{ref.id} // "alias/NAME" for both forms
	}
	return extra
}

func algContext(alg types.EncryptionAlgorithmSpec, ref keyRef) map[string][]string {
	return requestAlias(ref, map[string][]string{"kms:EncryptionAlgorithm": {string(alg)}})
}

func (s *Server) encrypt(c *call) (any, error) {
	var in kms.EncryptInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	if err := checkBlobLen("plaintext", in.Plaintext, 1, MaxPlaintext); err != nil {
		return nil, err
	}
	if err := checkEnum("encryptionAlgorithm", in.EncryptionAlgorithm, types.EncryptionAlgorithmSpec("").Values()); err != nil {
		return nil, err
	}
	if err := checkEncryptionContext("encryptionContext", in.EncryptionContext); err != nil {
		return nil, err
	}
	c.secret(in.Plaintext)
	k, ref, err := s.store.resolve(in.KeyId, anyKeyID)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	alg := in.EncryptionAlgorithm
	if alg == "" {
		alg = types.EncryptionAlgorithmSpecSymmetricDefault
	}
	if err := s.authorize(c, k, authzInput{action: "Encrypt", ec: in.EncryptionContext, extra: algContext(alg, ref)}); err != nil {
		return nil, err
	}
	if err := k.usable(); err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		if err := k.requireUsage("Encrypt", types.KeyUsageTypeEncryptDecrypt); err != nil {
			return nil, err
		}
		return nil, dryRunError()
	}
	blob, err := sealWith(k, alg, in.Plaintext, in.EncryptionContext, "Encrypt", "encryptionContext")
	if err != nil {
		return nil, err
	}
	return &kms.EncryptOutput{CiphertextBlob: blob, KeyId: aws.String(k.arn), EncryptionAlgorithm: alg}, nil
}

func (s *Server) decrypt(c *call) (any, error) {
	var in kms.DecryptInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	if err := checkBlobLen("ciphertextBlob", in.CiphertextBlob, 1, MaxCiphertextBlob); err != nil {
		return nil, err
	}
	if err := checkEnum("encryptionAlgorithm", in.EncryptionAlgorithm, types.EncryptionAlgorithmSpec("").Values()); err != nil {
		return nil, err
	}
	if err := checkEncryptionContext("encryptionContext", in.EncryptionContext); err != nil {
		return nil, err
	}
	for _, m := range in.DryRunModifiers {
		if err := checkEnum("dryRunModifiers", m, types.DryRunModifierType("").Values()); err != nil {
			return nil, err
		}
	}
	alg := in.EncryptionAlgorithm
	if alg == "" {
		alg = types.EncryptionAlgorithmSpecSymmetricDefault
	}
	k, ref, err := s.decryptionKey(in.KeyId, "keyId", in.CiphertextBlob, alg)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	var rcpt *verifiedRecipient
	if in.Recipient != nil {
		if rcpt, err = s.verifyRecipient(c, in.Recipient); err != nil {
			return nil, err
		}
	}
	if err := s.authorize(c, k, authzInput{action: "Decrypt", ec: in.EncryptionContext, recipient: rcpt, extra: algContext(alg, ref)}); err != nil {
		return nil, err
	}
	if err := k.usable(); err != nil {
		return nil, err
	}
	if err := k.requireUsage("Decrypt", types.KeyUsageTypeEncryptDecrypt); err != nil {
		return nil, err
	}
	if err := checkEncryptionAlgorithm(k, alg); err != nil {
		return nil, err
	}
	if err := checkContextAllowed(k, "encryptionContext", in.EncryptionContext); err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	pt, err := openWith(k, alg, in.CiphertextBlob, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	c.secret(pt)
	out := &kms.DecryptOutput{KeyId: aws.String(k.arn), EncryptionAlgorithm: alg}
	if k.isSymmetricEncryption() {
		out.KeyMaterialId = aws.String(k.materialID)
	}
	if rcpt != nil {
		if out.CiphertextForRecipient, err = rcpt.envelope(pt); err != nil {
			return nil, err
		}
		return out, nil
	}
	out.Plaintext = pt
	return out, nil
}

func (s *Server) reEncrypt(c *call) (any, error) {
	var in kms.ReEncryptInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	if err := checkBlobLen("ciphertextBlob", in.CiphertextBlob, 1, MaxCiphertextBlob); err != nil {
		return nil, err
	}
	for member, alg := range map[string]types.EncryptionAlgorithmSpec{
		"sourceEncryptionAlgorithm":      in.SourceEncryptionAlgorithm,
		"destinationEncryptionAlgorithm": in.DestinationEncryptionAlgorithm,
	} {
		if err := checkEnum(member, alg, types.EncryptionAlgorithmSpec("").Values()); err != nil {
			return nil, err
		}
	}
	if err := checkEncryptionContext("sourceEncryptionContext", in.SourceEncryptionContext); err != nil {
		return nil, err
	}
	if err := checkEncryptionContext("destinationEncryptionContext", in.DestinationEncryptionContext); err != nil {
		return nil, err
	}
	srcAlg, dstAlg := in.SourceEncryptionAlgorithm, in.DestinationEncryptionAlgorithm
	if srcAlg == "" {
		srcAlg = types.EncryptionAlgorithmSpecSymmetricDefault
	}
	if dstAlg == "" {
		dstAlg = types.EncryptionAlgorithmSpecSymmetricDefault
	}
	src, srcRef, err := s.decryptionKey(in.SourceKeyId, "sourceKeyId", in.CiphertextBlob, srcAlg)
	if err != nil {
		return nil, err
	}
	dst, dstRef, err := s.store.resolve(in.DestinationKeyId, resolveOptions{member: "destinationKeyId", allowAlias: true})
	if err != nil {
		return nil, err
	}
	c.keyID = dst.id
	// ReEncrypt needs kms:ReEncryptFrom on the source key and
	// kms:ReEncryptTo on the destination key (ReEncrypt API reference,
	// "Required permissions").
	if err := s.authorize(c, src, authzInput{action: "ReEncryptFrom", ec: in.SourceEncryptionContext, extra: algContext(srcAlg, srcRef)}); err != nil {
		return nil, err
	}
	if err := s.authorize(c, dst, authzInput{action: "ReEncryptTo", ec: in.DestinationEncryptionContext, extra: algContext(dstAlg, dstRef)}); err != nil {
		return nil, err
	}
	for _, k := range []*key{src, dst} {
		if err := k.usable(); err != nil {
			return nil, err
		}
	}
	if err := src.requireUsage("ReEncrypt", types.KeyUsageTypeEncryptDecrypt); err != nil {
		return nil, err
	}
	if err := checkEncryptionAlgorithm(src, srcAlg); err != nil {
		return nil, err
	}
	if err := checkContextAllowed(src, "sourceEncryptionContext", in.SourceEncryptionContext); err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		if err := dst.requireUsage("ReEncrypt", types.KeyUsageTypeEncryptDecrypt); err != nil {
			return nil, err
		}
		return nil, dryRunError()
	}
	pt, err := openWith(src, srcAlg, in.CiphertextBlob, in.SourceEncryptionContext)
	if err != nil {
		return nil, err
	}
	c.secret(pt)
	blob, err := sealWith(dst, dstAlg, pt, in.DestinationEncryptionContext, "ReEncrypt", "destinationEncryptionContext")
	if err != nil {
		return nil, err
	}
	out := &kms.ReEncryptOutput{
		CiphertextBlob: blob, KeyId: aws.String(dst.arn), SourceKeyId: aws.String(src.arn),
		SourceEncryptionAlgorithm: srcAlg, DestinationEncryptionAlgorithm: dstAlg,
	}
	if src.isSymmetricEncryption() {
		out.SourceKeyMaterialId = aws.String(src.materialID)
	}
	if dst.isSymmetricEncryption() {
		out.DestinationKeyMaterialId = aws.String(dst.materialID)
	}
	return out, nil
}

// dataKeyLength validates KeySpec and NumberOfBytes: "To specify the length
// of the data key, use either KeySpec or NumberOfBytes (but not both)"
// (GenerateDataKey API reference). The message for a request with neither
// or both is moto's, which was checked against AWS.
func dataKeyLength(spec types.DataKeySpec, n *int32) (int, error) {
	if err := checkEnum("keySpec", spec, types.DataKeySpec("").Values()); err != nil {
		return 0, err
	}
	if err := checkIntRange("numberOfBytes", n, 1, MaxNumberOfBytes); err != nil {
		return 0, err
	}
	if (spec == "") == (n == nil) {
		return 0, validationError("Please specify either number of bytes or key spec.")
	}
	switch spec {
	case types.DataKeySpecAes128:
		return 16, nil
	case types.DataKeySpecAes256:
		return 32, nil
	}
	return int(*n), nil
}

// generateDataKeyCommon is GenerateDataKey and its WithoutPlaintext variant.
func (s *Server) generateDataKeyCommon(c *call, op string, keyID *string, spec types.DataKeySpec, n *int32,
	ec map[string]string, grants []string, dryRun *bool, recipient *types.RecipientInfo) (*key, []byte, []byte, *verifiedRecipient, error) {
	if err := s.checkGrantTokens(grants); err != nil {
		return nil, nil, nil, nil, err
	}
	size, err := dataKeyLength(spec, n)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if err := checkEncryptionContext("encryptionContext", ec); err != nil {
		return nil, nil, nil, nil, err
	}
	k, ref, err := s.store.resolve(keyID, anyKeyID)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	c.keyID = k.id
	var rcpt *verifiedRecipient
	if recipient != nil {
		if rcpt, err = s.verifyRecipient(c, recipient); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	if err := s.authorize(c, k, authzInput{action: op, ec: ec, recipient: rcpt, extra: requestAlias(ref, nil)}); err != nil {
		return nil, nil, nil, nil, err
	}
	if err := k.usable(); err != nil {
		return nil, nil, nil, nil, err
	}
	if err := k.requireSymmetric(op); err != nil {
		return nil, nil, nil, nil, err
	}
	if aws.ToBool(dryRun) {
		return nil, nil, nil, nil, dryRunError()
	}
	pt := c.secret(make([]byte, size))
	rand.Read(pt)
	blob, err := sealBlob(k, pt, ec)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("failed to seal data key: %w", err)
	}
	return k, pt, blob, rcpt, nil
}

func (s *Server) generateDataKey(c *call) (any, error) {
	var in kms.GenerateDataKeyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	k, pt, blob, rcpt, err := s.generateDataKeyCommon(c, "GenerateDataKey", in.KeyId, in.KeySpec, in.NumberOfBytes,
		in.EncryptionContext, in.GrantTokens, in.DryRun, in.Recipient)
	if err != nil {
		return nil, err
	}
	out := &kms.GenerateDataKeyOutput{KeyId: aws.String(k.arn), CiphertextBlob: blob, KeyMaterialId: aws.String(k.materialID)}
	if rcpt != nil {
		if out.CiphertextForRecipient, err = rcpt.envelope(pt); err != nil {
			return nil, err
		}
		return out, nil
	}
	out.Plaintext = pt
	return out, nil
}

func (s *Server) generateDataKeyWithoutPlaintext(c *call) (any, error) {
	var in kms.GenerateDataKeyWithoutPlaintextInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	k, _, blob, _, err := s.generateDataKeyCommon(c, "GenerateDataKeyWithoutPlaintext", in.KeyId, in.KeySpec, in.NumberOfBytes,
		in.EncryptionContext, in.GrantTokens, in.DryRun, nil)
	if err != nil {
		return nil, err
	}
	return &kms.GenerateDataKeyWithoutPlaintextOutput{KeyId: aws.String(k.arn), CiphertextBlob: blob, KeyMaterialId: aws.String(k.materialID)}, nil
}

// generateRandom answers GenerateRandom. It involves no key, so no key
// policy applies: KMS authorizes it with IAM policies only, which may test
// the Recipient's kms:RecipientAttestation:* keys.
func (s *Server) generateRandom(c *call) (any, error) {
	var in kms.GenerateRandomInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if in.NumberOfBytes == nil {
		// "NumberOfBytes: The length of the random byte string. This
		// parameter is required." (GenerateRandom API reference)
		return nil, nullMember("numberOfBytes")
	}
	if err := checkIntRange("numberOfBytes", in.NumberOfBytes, 1, MaxNumberOfBytes); err != nil {
		return nil, err
	}
	if in.CustomKeyStoreId != nil {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms has no custom key stores.")
	}
	var rcpt *verifiedRecipient
	if in.Recipient != nil {
		var err error
		if rcpt, err = s.verifyRecipient(c, in.Recipient); err != nil {
			return nil, err
		}
	}
	var attested map[string][]string
	if rcpt != nil {
		attested = rcpt.context
	}
	if err := s.authorizeIAM(c, "GenerateRandom", "*", attested); err != nil {
		return nil, err
	}
	pt := c.secret(make([]byte, *in.NumberOfBytes))
	rand.Read(pt)
	if rcpt != nil {
		env, err := rcpt.envelope(pt)
		if err != nil {
			return nil, err
		}
		return &kms.GenerateRandomOutput{CiphertextForRecipient: env}, nil
	}
	return &kms.GenerateRandomOutput{Plaintext: pt}, nil
}
