package attestation

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
)

// RecipientKey returns the RSA public key in doc's public_key, the key KMS
// encrypts CiphertextForRecipient to when doc is a Recipient's attestation
// document. The public_key of a document in general need not be a key at
// all (Verify does not look at it: real NitroTPM documents made for other
// uses carry a 65-byte EC point), but KMS encrypts with
// RSAES_OAEP_SHA_256 only ("Only RSA keys are supported", EC2 User Guide,
// nitro-tpm-attest), so a Recipient's must be a DER SubjectPublicKeyInfo of
// an RSA key of 2048, 3072 or 4096 bits (the sizes kmsproxyd generates;
// KMS documents 2048). Any other public_key is an *Error with
// CheckPublicKey. It applies to both kinds of document alike.
func RecipientKey(doc *Document) (*rsa.PublicKey, error) {
	if doc == nil || doc.PublicKey == nil {
		return nil, newError(CheckPublicKey, "the document has no public_key; a KMS Recipient needs the RSA public key to encrypt to", nil)
	}
	pk, err := x509.ParsePKIXPublicKey(doc.PublicKey)
	if err != nil {
		return nil, newError(CheckPublicKey, fmt.Sprintf("public_key (%d bytes) is not a DER SubjectPublicKeyInfo", len(doc.PublicKey)), nil)
	}
	pub, ok := pk.(*rsa.PublicKey)
	if !ok {
		return nil, newError(CheckPublicKey, fmt.Sprintf("public_key is a %s key; KMS encrypts to RSA keys only (RSAES_OAEP_SHA_256)", keyAlgorithm(pk)), nil)
	}
	switch bits := pub.N.BitLen(); bits {
	case 2048, 3072, 4096:
	default:
		return nil, newError(CheckPublicKey, fmt.Sprintf("public_key is an RSA-%d key; want 2048, 3072 or 4096 bits", bits), nil)
	}
	return pub, nil
}

func keyAlgorithm(pk any) string {
	switch pk.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA"
	case ed25519.PublicKey:
		return "Ed25519"
	case *ecdh.PublicKey:
		return "X25519"
	}
	return fmt.Sprintf("%T", pk)
}
