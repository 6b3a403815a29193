package cms

import "crypto/aes"

// Limits on untrusted input. Parse checks MaxEnvelopeSize before reading a
// byte, the BER reader enforces MaxDepth and MaxChunks while it reads, and the
// envelope parser and Decrypt enforce MaxPlaintext.
const (
	// MaxPlaintext is the largest plaintext an envelope may carry: 4096 bytes,
	// the most AWS KMS puts in one response ("Encrypts plaintext of up to 4,096
	// bytes", KMS API Reference, Encrypt; DeriveSharedSecret's secrets and
	// GenerateDataKeyPair's private keys are smaller). The real KMS envelope
	// testdata/real/rustcrypto/rustcrypto-4.ber (RustCrypto/formats issue #779) carries
	// exactly 4096+16 bytes of ciphertext.
	MaxPlaintext = 4096

	// MaxEncryptedContent is the largest encrypted content that can hold
	// MaxPlaintext bytes: PKCS #7 padding (RFC 5652 section 6.3) adds 1 to 16
	// bytes, and a plaintext that fills whole blocks gets a full 16-byte block.
	MaxEncryptedContent = MaxPlaintext + aes.BlockSize

	// MaxChunks caps the OCTET STRING chunks of the encrypted content, and (in
	// the BER reader) the elements inside any one constructed element. KMS
	// writes 1000-byte chunks (KMSChunkSize), so its largest ciphertext takes 5;
	// a streaming writer that emitted every AES block as its own chunk would
	// need 257 for MaxEncryptedContent. 512 leaves twice that.
	MaxChunks = 512

	// MaxDepth is the deepest nesting level the BER reader accepts, counting
	// the outermost element as level 0 as `openssl asn1parse` does. A KMS
	// envelope reaches level 10 (the MGF1 hash algorithm OID); an
	// issuerAndSerialNumber recipient identifier reaches level 9 (the
	// attribute values of the issuer name). 16 bounds the reader's recursion
	// with room to spare.
	MaxDepth = 16

	// MaxEnvelopeSize caps the encoded envelope. The largest envelope a
	// conforming writer produces for MaxPlaintext is about 5.5 KB: RSA-4096
	// (a 512-byte encrypted key) plus 4112 bytes of ciphertext split into 257
	// one-block chunks (2 header bytes each) plus about 300 bytes of structure;
	// KMS's own 4 KiB envelope with RSA-2048 is 4573 bytes
	// (testdata/real/rustcrypto/rustcrypto-4.ber). 16 KiB is about three times the
	// largest and still small enough to parse without thought.
	MaxEnvelopeSize = 16 << 10

	// KMSChunkSize is the size of the OCTET STRING chunks KMS splits the
	// encrypted content into (the last chunk holds the rest). Observed in the
	// real KMS envelope testdata/real/rustcrypto/rustcrypto-4.ber, whose 4112-byte
	// ciphertext comes as 1000+1000+1000+1000+112; shorter ciphertexts come as
	// a single chunk (kms-real/edgebit: one 48-byte chunk). Encrypt uses it.
	KMSChunkSize = 1000

	// maxRecipientIDSize caps a subjectKeyIdentifier: KMS writes 32 bytes
	// (SHA-256), OpenSSL 20 (SHA-1, RFC 5280 section 4.2.1.2).
	maxRecipientIDSize = 64
)

// supportedKeySizes are the RSA modulus sizes in bytes that Encrypt writes
// for and Parse accepts as the encrypted key size: RSA-2048, -3072 and -4096,
// the sizes kmsproxyd's --key-bits allows. KMS documents 2048.
var supportedKeySizes = [...]int{2048 / 8, 3072 / 8, 4096 / 8}

func supportedKeySize(n int) bool {
	for _, s := range supportedKeySizes {
		if n == s {
			return true
		}
	}
	return false
}
