package devkms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// msgInvalidSignature is KMSInvalidSignatureException's description in the
// KMS API reference.
const msgInvalidSignature = "The request was rejected because the signature verification failed. Signature verification fails when it cannot confirm that signature was produced by signing the specified message with the specified KMS key and signing algorithm."

// signingHash returns the digest algorithm of a signing algorithm.
func signingHash(alg types.SigningAlgorithmSpec) crypto.Hash {
	switch alg {
	case types.SigningAlgorithmSpecRsassaPssSha384, types.SigningAlgorithmSpecRsassaPkcs1V15Sha384, types.SigningAlgorithmSpecEcdsaSha384:
		return crypto.SHA384
	case types.SigningAlgorithmSpecRsassaPssSha512, types.SigningAlgorithmSpecRsassaPkcs1V15Sha512, types.SigningAlgorithmSpecEcdsaSha512:
		return crypto.SHA512
	}
	return crypto.SHA256
}

func isPSS(alg types.SigningAlgorithmSpec) bool {
	return alg == types.SigningAlgorithmSpecRsassaPssSha256 || alg == types.SigningAlgorithmSpecRsassaPssSha384 || alg == types.SigningAlgorithmSpecRsassaPssSha512
}

// pssOptions: KMS's RSASSA_PSS algorithms use "a 256-bit salt" for SHA-256
// (and likewise a salt as long as the digest for SHA-384 and SHA-512) (KMS
// Developer Guide, "RSA key specs for signing and verification").
var pssOptions = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}

// signInput is what Sign and Verify share.
type signInput struct {
	op          string
	keyID       *string
	message     []byte
	alg         types.SigningAlgorithmSpec
	messageType types.MessageType
	grants      []string
}

// prepareSignature validates a Sign or Verify request, authorizes it and
// returns the key and the digest to sign or verify.
func (s *Server) prepareSignature(c *call, in signInput) (*key, []byte, error) {
	if err := s.checkGrantTokens(in.grants); err != nil {
		return nil, nil, err
	}
	if err := checkBlobLen("message", in.message, 1, MaxMessage); err != nil {
		return nil, nil, err
	}
	if in.alg == "" {
		return nil, nil, nullMember("signingAlgorithm")
	}
	if err := checkEnum("signingAlgorithm", in.alg, types.SigningAlgorithmSpec("").Values()); err != nil {
		return nil, nil, err
	}
	if err := checkEnum("messageType", in.messageType, types.MessageType("").Values()); err != nil {
		return nil, nil, err
	}
	mt := in.messageType
	if mt == "" {
		mt = types.MessageTypeRaw
	}
	k, ref, err := s.store.resolve(in.keyID, anyKeyID)
	if err != nil {
		return nil, nil, err
	}
	c.keyID = k.id
	extra := requestAlias(ref, map[string][]string{"kms:SigningAlgorithm": {string(in.alg)}, "kms:MessageType": {string(mt)}})
	if err := s.authorize(c, k, authzInput{action: in.op, extra: extra}); err != nil {
		return nil, nil, err
	}
	if err := k.usable(); err != nil {
		return nil, nil, err
	}
	if err := k.requireUsage(in.op, types.KeyUsageTypeSignVerify); err != nil {
		return nil, nil, err
	}
	if !slices.Contains(k.signingAlgorithms(), in.alg) {
		return nil, nil, kmsapi.Errorf(kmsapi.InvalidKeyUsage, "Algorithm %s is incompatible with key spec %s.", in.alg, k.spec)
	}
	h := signingHash(in.alg)
	switch mt {
	case types.MessageTypeRaw:
		hh := h.New()
		hh.Write(in.message)
		return k, hh.Sum(nil), nil
	case types.MessageTypeDigest:
		// "When the value of MessageType is DIGEST, the length of the
		// Message value must match the length of hashed messages for the
		// specified signing algorithm." (Sign API reference)
		if len(in.message) != h.Size() {
			return nil, nil, kmsapi.Errorf(kmsapi.Validation, "Digest is invalid length for algorithm %s.", in.alg)
		}
		return k, in.message, nil
	}
	// EXTERNAL_MU: "only for ML-DSA KMS keys" (Sign API reference).
	return nil, nil, kmsapi.Errorf(kmsapi.InvalidKeyUsage, "MessageType %s is valid only for ML-DSA keys, not %s.", mt, k.spec)
}

func (s *Server) sign(c *call) (any, error) {
	var in kms.SignInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	c.secret(in.Message)
	k, digest, err := s.prepareSignature(c, signInput{op: "Sign", keyID: in.KeyId, message: in.Message, alg: in.SigningAlgorithm, messageType: in.MessageType, grants: in.GrantTokens})
	if err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	var sig []byte
	h := signingHash(in.SigningAlgorithm)
	switch {
	case k.ec != nil:
		sig, err = ecdsa.SignASN1(rand.Reader, k.ec, digest)
	case isPSS(in.SigningAlgorithm):
		sig, err = rsa.SignPSS(rand.Reader, k.rsa, h, digest, pssOptions)
	default:
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, h, digest)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to sign: %w", err)
	}
	return &kms.SignOutput{KeyId: aws.String(k.arn), Signature: sig, SigningAlgorithm: in.SigningAlgorithm}, nil
}

func (s *Server) verify(c *call) (any, error) {
	var in kms.VerifyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := checkBlobLen("signature", in.Signature, 1, MaxSignature); err != nil {
		return nil, err
	}
	k, digest, err := s.prepareSignature(c, signInput{op: "Verify", keyID: in.KeyId, message: in.Message, alg: in.SigningAlgorithm, messageType: in.MessageType, grants: in.GrantTokens})
	if err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	h := signingHash(in.SigningAlgorithm)
	var ok bool
	switch {
	case k.ec != nil:
		ok = ecdsa.VerifyASN1(&k.ec.PublicKey, digest, in.Signature)
	case isPSS(in.SigningAlgorithm):
		ok = rsa.VerifyPSS(&k.rsa.PublicKey, h, digest, in.Signature, pssOptions) == nil
	default:
		ok = rsa.VerifyPKCS1v15(&k.rsa.PublicKey, h, digest, in.Signature) == nil
	}
	if !ok {
		return nil, kmsapi.Errorf(kmsapi.KMSInvalidSignature, msgInvalidSignature)
	}
	return &kms.VerifyOutput{KeyId: aws.String(k.arn), SignatureValid: true, SigningAlgorithm: in.SigningAlgorithm}, nil
}

func (s *Server) getPublicKey(c *call) (any, error) {
	var in kms.GetPublicKeyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	k, ref, err := s.store.resolve(in.KeyId, anyKeyID)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	if err := s.authorize(c, k, authzInput{action: "GetPublicKey", extra: requestAlias(ref, nil)}); err != nil {
		return nil, err
	}
	if err := k.usable(); err != nil {
		return nil, err
	}
	if k.signer() == nil {
		// UnsupportedOperationException: "a specified resource is not
		// valid for this operation" (GetPublicKey API reference, Errors).
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "%s is a %s key, which has no public key.", k.arn, k.spec)
	}
	der, err := k.publicKeyDER()
	if err != nil {
		return nil, err
	}
	return &kms.GetPublicKeyOutput{
		KeyId: aws.String(k.arn), PublicKey: der,
		KeySpec: k.spec, KeyUsage: k.usage,
		//lint:ignore SA1019 KMS still returns the deprecated member, equal to KeySpec.
		CustomerMasterKeySpec: types.CustomerMasterKeySpec(k.spec),
		EncryptionAlgorithms:  k.encryptionAlgorithms(), SigningAlgorithms: k.signingAlgorithms(),
		KeyAgreementAlgorithms: k.keyAgreementAlgorithms(),
	}, nil
}

func (s *Server) deriveSharedSecret(c *call) (any, error) {
	var in kms.DeriveSharedSecretInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	if in.KeyAgreementAlgorithm == "" {
		return nil, nullMember("keyAgreementAlgorithm")
	}
	if err := checkEnum("keyAgreementAlgorithm", in.KeyAgreementAlgorithm, types.KeyAgreementAlgorithmSpec("").Values()); err != nil {
		return nil, err
	}
	if err := checkBlobLen("publicKey", in.PublicKey, 1, MaxPeerPublicKey); err != nil {
		return nil, err
	}
	k, ref, err := s.store.resolve(in.KeyId, anyKeyID)
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
	extra := requestAlias(ref, map[string][]string{"kms:KeyAgreementAlgorithm": {string(in.KeyAgreementAlgorithm)}})
	if err := s.authorize(c, k, authzInput{action: "DeriveSharedSecret", recipient: rcpt, extra: extra}); err != nil {
		return nil, err
	}
	if err := k.usable(); err != nil {
		return nil, err
	}
	if err := k.requireUsage("DeriveSharedSecret", types.KeyUsageTypeKeyAgreement); err != nil {
		return nil, err
	}
	// "PublicKey: Specify the public key in your peer's NIST-recommended
	// elliptic curve (ECC) ... The public key must be a DER-encoded X.509
	// public key, also known as SubjectPublicKeyInfo (SPKI)" on the same
	// curve as the KMS key (DeriveSharedSecret API reference).
	pk, err := x509.ParsePKIXPublicKey(in.PublicKey)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.Validation, "PublicKey is not a DER-encoded X.509 SubjectPublicKeyInfo.")
	}
	peer, ok := pk.(*ecdsa.PublicKey)
	if !ok || peer.Curve != k.ec.Curve {
		return nil, kmsapi.Errorf(kmsapi.Validation, "PublicKey must be an elliptic curve key on the curve of %s (%s).", k.arn, k.spec)
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	priv, err := k.ec.ECDH()
	if err != nil {
		return nil, fmt.Errorf("failed to convert key for ECDH: %w", err)
	}
	peerECDH, err := peer.ECDH()
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.Validation, "PublicKey is not a valid point on %s.", k.spec)
	}
	secret, err := priv.ECDH(peerECDH)
	if err != nil {
		return nil, kmsapi.Errorf(kmsapi.Validation, "PublicKey cannot be used for key agreement: %v", err)
	}
	c.secret(secret)
	out := &kms.DeriveSharedSecretOutput{KeyId: aws.String(k.arn), KeyAgreementAlgorithm: in.KeyAgreementAlgorithm, KeyOrigin: types.OriginTypeAwsKms}
	if rcpt != nil {
		if out.CiphertextForRecipient, err = rcpt.envelope(secret); err != nil {
			return nil, err
		}
		return out, nil
	}
	out.SharedSecret = secret
	return out, nil
}

// dataKeyPairSpecs are the KeyPairSpec values devkms can generate; the others
// in the SDK's enum are answered with UnsupportedOperationException
// (secp256k1 is missing from the Go standard library; SM2, Ed25519 and
// ML-KEM pairs are not implemented).
var dataKeyPairSpecs = map[types.DataKeyPairSpec]any{
	types.DataKeyPairSpecRsa2048:     2048,
	types.DataKeyPairSpecRsa3072:     3072,
	types.DataKeyPairSpecRsa4096:     4096,
	types.DataKeyPairSpecEccNistP256: elliptic.P256(),
	types.DataKeyPairSpecEccNistP384: elliptic.P384(),
	types.DataKeyPairSpecEccNistP521: elliptic.P521(),
}

// newDataKeyPair returns a PKCS#8 private key and its SubjectPublicKeyInfo,
// the forms GenerateDataKeyPair returns ("PrivateKeyPlaintext ... PKCS #8
// PrivateKeyInfo", "PublicKey ... X.509 SubjectPublicKeyInfo").
func newDataKeyPair(spec types.DataKeyPairSpec) (priv, pub []byte, err error) {
	var key crypto.Signer
	switch p := dataKeyPairSpecs[spec].(type) {
	case int:
		key, err = rsa.GenerateKey(rand.Reader, p)
	case elliptic.Curve:
		key, err = ecdsa.GenerateKey(p, rand.Reader)
	default:
		return nil, nil, fmt.Errorf("unsupported key pair spec %s", spec)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate %s key pair: %w", spec, err)
	}
	if priv, err = x509.MarshalPKCS8PrivateKey(key); err != nil {
		return nil, nil, fmt.Errorf("failed to encode private key: %w", err)
	}
	if pub, err = x509.MarshalPKIXPublicKey(key.Public()); err != nil {
		return nil, nil, fmt.Errorf("failed to encode public key: %w", err)
	}
	return priv, pub, nil
}

// generateDataKeyPairCommon is GenerateDataKeyPair and its WithoutPlaintext
// variant.
func (s *Server) generateDataKeyPairCommon(c *call, op string, keyID *string, spec types.DataKeyPairSpec,
	ec map[string]string, grants []string, dryRun *bool, recipient *types.RecipientInfo) (*key, []byte, []byte, []byte, *verifiedRecipient, error) {
	fail := func(err error) (*key, []byte, []byte, []byte, *verifiedRecipient, error) {
		return nil, nil, nil, nil, nil, err
	}
	if err := s.checkGrantTokens(grants); err != nil {
		return fail(err)
	}
	if spec == "" {
		return fail(nullMember("keyPairSpec"))
	}
	if err := checkEnum("keyPairSpec", spec, types.DataKeyPairSpec("").Values()); err != nil {
		return fail(err)
	}
	if _, ok := dataKeyPairSpecs[spec]; !ok {
		return fail(kmsapi.Errorf(kmsapi.UnsupportedOperation, "KeyPairSpec %s is not supported by devkms.", spec))
	}
	if err := checkEncryptionContext("encryptionContext", ec); err != nil {
		return fail(err)
	}
	k, ref, err := s.store.resolve(keyID, anyKeyID)
	if err != nil {
		return fail(err)
	}
	c.keyID = k.id
	var rcpt *verifiedRecipient
	if recipient != nil {
		if rcpt, err = s.verifyRecipient(c, recipient); err != nil {
			return fail(err)
		}
	}
	extra := requestAlias(ref, map[string][]string{"kms:DataKeyPairSpec": {string(spec)}})
	if err := s.authorize(c, k, authzInput{action: op, ec: ec, recipient: rcpt, extra: extra}); err != nil {
		return fail(err)
	}
	if err := k.usable(); err != nil {
		return fail(err)
	}
	if err := k.requireSymmetric(op); err != nil {
		return fail(err)
	}
	if aws.ToBool(dryRun) {
		return fail(dryRunError())
	}
	priv, pub, err := newDataKeyPair(spec)
	if err != nil {
		return fail(err)
	}
	c.secret(priv)
	blob, err := sealBlob(k, priv, ec)
	if err != nil {
		return fail(fmt.Errorf("failed to seal private key: %w", err))
	}
	return k, priv, pub, blob, rcpt, nil
}

func (s *Server) generateDataKeyPair(c *call) (any, error) {
	var in kms.GenerateDataKeyPairInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	k, priv, pub, blob, rcpt, err := s.generateDataKeyPairCommon(c, "GenerateDataKeyPair", in.KeyId, in.KeyPairSpec,
		in.EncryptionContext, in.GrantTokens, in.DryRun, in.Recipient)
	if err != nil {
		return nil, err
	}
	out := &kms.GenerateDataKeyPairOutput{KeyId: aws.String(k.arn), KeyPairSpec: in.KeyPairSpec, PublicKey: pub,
		PrivateKeyCiphertextBlob: blob, KeyMaterialId: aws.String(k.materialID)}
	if rcpt != nil {
		if out.CiphertextForRecipient, err = rcpt.envelope(priv); err != nil {
			return nil, err
		}
		return out, nil
	}
	out.PrivateKeyPlaintext = priv
	return out, nil
}

func (s *Server) generateDataKeyPairWithoutPlaintext(c *call) (any, error) {
	var in kms.GenerateDataKeyPairWithoutPlaintextInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	k, _, pub, blob, _, err := s.generateDataKeyPairCommon(c, "GenerateDataKeyPairWithoutPlaintext", in.KeyId, in.KeyPairSpec,
		in.EncryptionContext, in.GrantTokens, in.DryRun, nil)
	if err != nil {
		return nil, err
	}
	return &kms.GenerateDataKeyPairWithoutPlaintextOutput{KeyId: aws.String(k.arn), KeyPairSpec: in.KeyPairSpec, PublicKey: pub,
		PrivateKeyCiphertextBlob: blob, KeyMaterialId: aws.String(k.materialID)}, nil
}
