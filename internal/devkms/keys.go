package devkms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// specInfo describes what KMS allows for one key spec. The usages come from
// the CreateKey API reference (KeyUsage): "For symmetric encryption KMS keys,
// omit the parameter or specify ENCRYPT_DECRYPT. For HMAC KMS keys
// (symmetric), specify GENERATE_VERIFY_MAC. For asymmetric KMS keys with RSA
// key pairs, specify ENCRYPT_DECRYPT or SIGN_VERIFY. For asymmetric KMS keys
// with NIST-standard elliptic curve key pairs, specify SIGN_VERIFY or
// KEY_AGREEMENT. For asymmetric KMS keys with ECC_SECG_P256K1 key pairs,
// specify SIGN_VERIFY." The algorithms per spec are those of the KMS
// Developer Guide's "Key spec reference".
type specInfo struct {
	usages []types.KeyUsageType
	// symmetricBytes is the key length of symmetric specs (AES-256 for
	// SYMMETRIC_DEFAULT; HMAC keys as long as their digest, "HMAC_224 ...
	// 224 bits" etc. in the key spec reference).
	symmetricBytes int
	rsaBits        int
	curve          elliptic.Curve
	mac            types.MacAlgorithmSpec
	// ecdsaAlg is the one ECDSA signing algorithm of an ECC_NIST spec.
	ecdsaAlg types.SigningAlgorithmSpec
}

var specs = map[types.KeySpec]specInfo{
	types.KeySpecSymmetricDefault: {usages: []types.KeyUsageType{types.KeyUsageTypeEncryptDecrypt}, symmetricBytes: 32},
	types.KeySpecHmac224:          {usages: []types.KeyUsageType{types.KeyUsageTypeGenerateVerifyMac}, symmetricBytes: 28, mac: types.MacAlgorithmSpecHmacSha224},
	types.KeySpecHmac256:          {usages: []types.KeyUsageType{types.KeyUsageTypeGenerateVerifyMac}, symmetricBytes: 32, mac: types.MacAlgorithmSpecHmacSha256},
	types.KeySpecHmac384:          {usages: []types.KeyUsageType{types.KeyUsageTypeGenerateVerifyMac}, symmetricBytes: 48, mac: types.MacAlgorithmSpecHmacSha384},
	types.KeySpecHmac512:          {usages: []types.KeyUsageType{types.KeyUsageTypeGenerateVerifyMac}, symmetricBytes: 64, mac: types.MacAlgorithmSpecHmacSha512},
	types.KeySpecRsa2048:          {usages: []types.KeyUsageType{types.KeyUsageTypeEncryptDecrypt, types.KeyUsageTypeSignVerify}, rsaBits: 2048},
	types.KeySpecRsa3072:          {usages: []types.KeyUsageType{types.KeyUsageTypeEncryptDecrypt, types.KeyUsageTypeSignVerify}, rsaBits: 3072},
	types.KeySpecRsa4096:          {usages: []types.KeyUsageType{types.KeyUsageTypeEncryptDecrypt, types.KeyUsageTypeSignVerify}, rsaBits: 4096},
	types.KeySpecEccNistP256:      {usages: []types.KeyUsageType{types.KeyUsageTypeSignVerify, types.KeyUsageTypeKeyAgreement}, curve: elliptic.P256(), ecdsaAlg: types.SigningAlgorithmSpecEcdsaSha256},
	types.KeySpecEccNistP384:      {usages: []types.KeyUsageType{types.KeyUsageTypeSignVerify, types.KeyUsageTypeKeyAgreement}, curve: elliptic.P384(), ecdsaAlg: types.SigningAlgorithmSpecEcdsaSha384},
	types.KeySpecEccNistP521:      {usages: []types.KeyUsageType{types.KeyUsageTypeSignVerify, types.KeyUsageTypeKeyAgreement}, curve: elliptic.P521(), ecdsaAlg: types.SigningAlgorithmSpecEcdsaSha512},
}

// unsupportedSpecs are valid KMS key specs devkms cannot create, with the
// reason. ECC_SECG_P256K1 needs secp256k1, which the Go standard library does
// not implement (crypto/elliptic and crypto/ecdh offer only the NIST curves
// and X25519).
var unsupportedSpecs = map[types.KeySpec]string{
	types.KeySpecEccSecgP256k1:       "the Go standard library has no secp256k1 (ECC_SECG_P256K1) implementation",
	types.KeySpecSm2:                 "SM2 keys exist only in AWS China Regions",
	types.KeySpecMlDsa44:             "devkms does not implement ML-DSA keys",
	types.KeySpecMlDsa65:             "devkms does not implement ML-DSA keys",
	types.KeySpecMlDsa87:             "devkms does not implement ML-DSA keys",
	types.KeySpecMlKem512:            "devkms does not implement ML-KEM keys",
	types.KeySpecMlKem768:            "devkms does not implement ML-KEM keys",
	types.KeySpecMlKem1024:           "devkms does not implement ML-KEM keys",
	types.KeySpecEccNistEdwards25519: "devkms does not implement ECC_NIST_EDWARDS25519 keys",
}

// rsaSigningAlgorithms in the order DescribeKey lists them for RSA keys.
var rsaSigningAlgorithms = []types.SigningAlgorithmSpec{
	types.SigningAlgorithmSpecRsassaPkcs1V15Sha256,
	types.SigningAlgorithmSpecRsassaPkcs1V15Sha384,
	types.SigningAlgorithmSpecRsassaPkcs1V15Sha512,
	types.SigningAlgorithmSpecRsassaPssSha256,
	types.SigningAlgorithmSpecRsassaPssSha384,
	types.SigningAlgorithmSpecRsassaPssSha512,
}

// rsaEncryptionAlgorithms: "RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256" for RSA
// keys with ENCRYPT_DECRYPT (key spec reference).
var rsaEncryptionAlgorithms = []types.EncryptionAlgorithmSpec{
	types.EncryptionAlgorithmSpecRsaesOaepSha1,
	types.EncryptionAlgorithmSpecRsaesOaepSha256,
}

// key is one KMS key. A *key is never modified after it is published in the
// store: changes (policy, description, enabled) replace it with a copy, so a
// request holds a consistent snapshot without locks. The material fields
// point to immutable values shared by the copies.
type key struct {
	id          string
	arn         string
	created     time.Time
	description string
	spec        types.KeySpec
	usage       types.KeyUsageType
	enabled     bool
	policyDoc   string
	policy      *keypolicy.Policy
	materialID  string

	// Exactly one of these holds the key material.
	secret []byte            // SYMMETRIC_DEFAULT (AES-256) and HMAC keys
	rsa    *rsa.PrivateKey   // RSA_*
	ec     *ecdsa.PrivateKey // ECC_NIST_*
}

// generate creates fresh material for spec in k.
func (k *key) generate(spec types.KeySpec) error {
	info := specs[spec]
	k.materialID = randomMaterialID()
	switch {
	case info.symmetricBytes > 0:
		k.secret = make([]byte, info.symmetricBytes)
		rand.Read(k.secret)
	case info.rsaBits > 0:
		priv, err := rsa.GenerateKey(rand.Reader, info.rsaBits)
		if err != nil {
			return fmt.Errorf("failed to generate %s key: %w", spec, err)
		}
		k.rsa = priv
	case info.curve != nil:
		priv, err := ecdsa.GenerateKey(info.curve, rand.Reader)
		if err != nil {
			return fmt.Errorf("failed to generate %s key: %w", spec, err)
		}
		k.ec = priv
	default:
		return fmt.Errorf("failed to generate key: unknown key spec %s", spec)
	}
	return nil
}

// randomMaterialID returns a key material ID in the form KMS uses for
// KeyMaterialId: 64 hexadecimal digits. It is random, not derived from the
// material, so it reveals nothing about it.
func randomMaterialID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// signer returns the private key of an asymmetric key.
func (k *key) signer() crypto.Signer {
	if k.rsa != nil {
		return k.rsa
	}
	if k.ec != nil {
		return k.ec
	}
	return nil
}

// publicKeyDER returns the DER SubjectPublicKeyInfo of an asymmetric key, as
// GetPublicKey returns it.
func (k *key) publicKeyDER() ([]byte, error) {
	s := k.signer()
	if s == nil {
		return nil, fmt.Errorf("key %s has no public key", k.id)
	}
	return x509.MarshalPKIXPublicKey(s.Public())
}

func (k *key) isSymmetricEncryption() bool { return k.spec == types.KeySpecSymmetricDefault }

func (k *key) encryptionAlgorithms() []types.EncryptionAlgorithmSpec {
	switch {
	case k.isSymmetricEncryption():
		return []types.EncryptionAlgorithmSpec{types.EncryptionAlgorithmSpecSymmetricDefault}
	case k.rsa != nil && k.usage == types.KeyUsageTypeEncryptDecrypt:
		return slices.Clone(rsaEncryptionAlgorithms)
	}
	return nil
}

func (k *key) signingAlgorithms() []types.SigningAlgorithmSpec {
	if k.usage != types.KeyUsageTypeSignVerify {
		return nil
	}
	if k.rsa != nil {
		return slices.Clone(rsaSigningAlgorithms)
	}
	return []types.SigningAlgorithmSpec{specs[k.spec].ecdsaAlg}
}

func (k *key) keyAgreementAlgorithms() []types.KeyAgreementAlgorithmSpec {
	if k.usage != types.KeyUsageTypeKeyAgreement {
		return nil
	}
	return []types.KeyAgreementAlgorithmSpec{types.KeyAgreementAlgorithmSpecEcdh}
}

func (k *key) macAlgorithms() []types.MacAlgorithmSpec {
	if m := specs[k.spec].mac; m != "" {
		return []types.MacAlgorithmSpec{m}
	}
	return nil
}

// state returns the KeyState KMS reports.
func (k *key) state() types.KeyState {
	if k.enabled {
		return types.KeyStateEnabled
	}
	return types.KeyStateDisabled
}

// metadata returns the key's KeyMetadata as DescribeKey and CreateKey answer
// it (KMS API reference, KeyMetadata).
func (k *key) metadata(account string) *types.KeyMetadata {
	created := k.created
	md := &types.KeyMetadata{
		KeyId:        aws.String(k.id),
		Arn:          aws.String(k.arn),
		AWSAccountId: aws.String(account),
		CreationDate: &created,
		//lint:ignore SA1019 KMS still returns the deprecated member, equal to KeySpec.
		CustomerMasterKeySpec:  types.CustomerMasterKeySpec(k.spec),
		KeySpec:                k.spec,
		Description:            aws.String(k.description),
		Enabled:                k.enabled,
		KeyState:               k.state(),
		KeyUsage:               k.usage,
		KeyManager:             types.KeyManagerTypeCustomer,
		Origin:                 types.OriginTypeAwsKms,
		MultiRegion:            aws.Bool(false),
		EncryptionAlgorithms:   k.encryptionAlgorithms(),
		SigningAlgorithms:      k.signingAlgorithms(),
		KeyAgreementAlgorithms: k.keyAgreementAlgorithms(),
		MacAlgorithms:          k.macAlgorithms(),
	}
	if k.isSymmetricEncryption() {
		// KeyMetadata.CurrentKeyMaterialId "is present for symmetric
		// encryption keys with AWS_KMS origin" (KMS API reference).
		md.CurrentKeyMaterialId = aws.String(k.materialID)
	}
	return md
}

// usable checks the key can be used for a cryptographic operation: KMS
// answers DisabledException for a disabled key ("The request was rejected
// because the specified KMS key is not enabled.", KMS API reference).
func (k *key) usable() error {
	if !k.enabled {
		return kmsapi.Errorf(kmsapi.Disabled, "%s is disabled.", k.arn)
	}
	return nil
}

// requireUsage answers InvalidKeyUsageException when the key's KeyUsage does
// not permit op, in the words real KMS uses, e.g. "arn:aws:kms:...:key/...
// key usage is SIGN_VERIFY which is not valid for Encrypt." (reported in
// jonathankeebler/jwt-kms issue #4).
func (k *key) requireUsage(op string, usage types.KeyUsageType) error {
	if k.usage != usage {
		return kmsapi.Errorf(kmsapi.InvalidKeyUsage, "%s key usage is %s which is not valid for %s.", k.arn, k.usage, op)
	}
	return nil
}

// requireSymmetric answers InvalidKeyUsageException for operations that need
// a symmetric encryption key (GenerateDataKey*, GenerateDataKeyPair*).
func (k *key) requireSymmetric(op string) error {
	if !k.isSymmetricEncryption() {
		return kmsapi.Errorf(kmsapi.InvalidKeyUsage, "%s key KeySpec is %s which is not valid for %s.", k.arn, k.spec, op)
	}
	return nil
}

// copyKey returns a shallow copy for copy-on-write updates.
func (k *key) copyKey() *key {
	c := *k
	return &c
}
