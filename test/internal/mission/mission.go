// Package mission is the work an application does through kmsproxyd in the
// end-to-end tests, written once so that the parent app (in the test
// process) and the in-enclave app (a separate process inside the enclave's
// network namespace) do exactly the same: every attested operation
// kmsproxyd serves — Decrypt, GenerateDataKey, GenerateDataKeyPair,
// GenerateRandom and DeriveSharedSecret — with an unmodified aws-sdk-go-v2
// KMS client, and a check that each answer is right.
package mission

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// Input is what the mission needs from the test. JSON-encoded, it is what
// the in-enclave app reads.
type Input struct {
	// KeyID is a symmetric key (ID, ARN or alias) for GenerateDataKey and
	// GenerateDataKeyPair.
	KeyID string `json:"key_id"`
	// Ciphertext was encrypted under KeyID with EncryptionContext.
	Ciphertext        []byte            `json:"ciphertext"`
	EncryptionContext map[string]string `json:"encryption_context,omitempty"`
	// AgreementKeyID is an ECC_NIST_P256 KEY_AGREEMENT key and PeerPublicKey
	// the other party's P-256 public key (DER SubjectPublicKeyInfo), for
	// DeriveSharedSecret.
	AgreementKeyID string `json:"agreement_key_id"`
	PeerPublicKey  []byte `json:"peer_public_key"`
	// RandomBytes is GenerateRandom's NumberOfBytes.
	RandomBytes int32 `json:"random_bytes"`
}

// Result holds every secret the mission obtained. JSON-encoded, it is what
// the in-enclave app writes to stdout.
type Result struct {
	// Plaintext is Decrypt's answer for Input.Ciphertext.
	Plaintext []byte `json:"plaintext"`
	// DataKey and DataKeyCiphertext are GenerateDataKey's answer;
	// DataKeyDecrypted is DataKeyCiphertext decrypted again.
	DataKey           []byte `json:"data_key"`
	DataKeyCiphertext []byte `json:"data_key_ciphertext"`
	DataKeyDecrypted  []byte `json:"data_key_decrypted"`
	// PairPrivateKey (PKCS #8) and PairPublicKey (SubjectPublicKeyInfo) are
	// GenerateDataKeyPair's answer for an ECC_NIST_P256 pair.
	PairPrivateKey []byte `json:"pair_private_key"`
	PairPublicKey  []byte `json:"pair_public_key"`
	// Random is GenerateRandom's answer.
	Random []byte `json:"random"`
	// SharedSecret is DeriveSharedSecret's answer.
	SharedSecret []byte `json:"shared_secret"`
}

// Run does the mission with c, which talks to kmsproxyd. An error names the
// operation that failed and wraps the SDK's error (a smithy.APIError for an
// answer in KMS's error shape).
func Run(ctx context.Context, c *kms.Client, in Input) (*Result, error) {
	var r Result
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: in.Ciphertext, EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, fmt.Errorf("failed to call Decrypt: %w", err)
	}
	r.Plaintext = dec.Plaintext

	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(in.KeyID), KeySpec: types.DataKeySpecAes256, EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, fmt.Errorf("failed to call GenerateDataKey: %w", err)
	}
	r.DataKey, r.DataKeyCiphertext = dk.Plaintext, dk.CiphertextBlob
	back, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, fmt.Errorf("failed to call Decrypt on the data key: %w", err)
	}
	r.DataKeyDecrypted = back.Plaintext

	pair, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: aws.String(in.KeyID), KeyPairSpec: types.DataKeyPairSpecEccNistP256, EncryptionContext: in.EncryptionContext})
	if err != nil {
		return nil, fmt.Errorf("failed to call GenerateDataKeyPair: %w", err)
	}
	r.PairPrivateKey, r.PairPublicKey = pair.PrivateKeyPlaintext, pair.PublicKey

	rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(in.RandomBytes)})
	if err != nil {
		return nil, fmt.Errorf("failed to call GenerateRandom: %w", err)
	}
	r.Random = rnd.Plaintext

	ss, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{
		KeyId:                 aws.String(in.AgreementKeyID),
		KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh,
		PublicKey:             in.PeerPublicKey,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to call DeriveSharedSecret: %w", err)
	}
	r.SharedSecret = ss.SharedSecret
	return &r, nil
}

// Want is what a correct Result must hold that the test knows in advance.
type Want struct {
	// Plaintext is what Input.Ciphertext decrypts to.
	Plaintext []byte
	// SharedSecret is the ECDH secret of the peer's private key and the
	// agreement key's public key, computed by the test.
	SharedSecret []byte
	RandomBytes  int
}

// Check returns an error for every part of r that is wrong.
func (r *Result) Check(w Want) error {
	var errs []error
	if !bytes.Equal(r.Plaintext, w.Plaintext) {
		errs = append(errs, fmt.Errorf("wrong Decrypt answer: %d bytes that are not the plaintext (%d bytes)", len(r.Plaintext), len(w.Plaintext)))
	}
	if len(r.DataKey) != 32 || !bytes.Equal(r.DataKey, r.DataKeyDecrypted) {
		errs = append(errs, fmt.Errorf("wrong GenerateDataKey answer: a %d-byte data key that its CiphertextBlob does not decrypt to", len(r.DataKey)))
	}
	if err := checkPair(r.PairPrivateKey, r.PairPublicKey); err != nil {
		errs = append(errs, fmt.Errorf("wrong GenerateDataKeyPair answer: %w", err))
	}
	if len(r.Random) != w.RandomBytes || bytes.Count(r.Random, []byte{0}) == len(r.Random) {
		errs = append(errs, fmt.Errorf("wrong GenerateRandom answer: %d bytes, want %d not all zero", len(r.Random), w.RandomBytes))
	}
	if len(w.SharedSecret) == 0 || !bytes.Equal(r.SharedSecret, w.SharedSecret) {
		errs = append(errs, fmt.Errorf("wrong DeriveSharedSecret answer: a %d-byte secret that is not the ECDH secret", len(r.SharedSecret)))
	}
	return errors.Join(errs...)
}

// checkPair checks that priv (PKCS #8) is the private half of pub
// (SubjectPublicKeyInfo).
func checkPair(priv, pub []byte) error {
	k, err := x509.ParsePKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("the private key does not parse: %w", err)
	}
	p, err := x509.ParsePKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("the public key does not parse: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return fmt.Errorf("the private key is a %T", k)
	}
	if eq, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(p) {
		return errors.New("the private key does not match the public key")
	}
	return nil
}

// Secrets names every secret in r, for secretscan.
func (r *Result) Secrets() map[string][]byte {
	return map[string][]byte{
		"Decrypt plaintext":                r.Plaintext,
		"data key":                         r.DataKey,
		"data key pair private key":        r.PairPrivateKey,
		"GenerateRandom bytes":             r.Random,
		"DeriveSharedSecret shared secret": r.SharedSecret,
	}
}

// SharedSecret computes the ECDH secret of a P-256 private key and a peer's
// public key (DER SubjectPublicKeyInfo, as GetPublicKey returns it): what
// DeriveSharedSecret must answer.
func SharedSecret(priv *ecdh.PrivateKey, peerSPKI []byte) ([]byte, error) {
	p, err := x509.ParsePKIXPublicKey(peerSPKI)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the public key: %w", err)
	}
	ep, ok := p.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the public key is a %T, want ECDSA P-256", p)
	}
	pub, err := ep.ECDH()
	if err != nil {
		return nil, err
	}
	return priv.ECDH(pub)
}
