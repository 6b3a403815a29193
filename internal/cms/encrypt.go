package cms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"io"
)

// Encrypt returns plaintext enveloped for pub byte for byte in the layout
// AWS KMS writes in CiphertextForRecipient (checked against the real envelope
// kms-real/edgebit and kms-parse-only/rustcrypto-4):
//
//   - BER: ContentInfo, its [0], EnvelopedData, EncryptedContentInfo and the
//     encrypted content [0] have indefinite lengths; RecipientInfos and the
//     algorithm identifiers are DER;
//   - EnvelopedData version 2, one KeyTransRecipientInfo version 2 whose
//     subjectKeyIdentifier is RecipientKeyID(pub);
//   - RSAES-OAEP with explicit SHA-256 and MGF1-SHA-256 parameters, each hash
//     AlgorithmIdentifier with NULL parameters, and no pSourceFunc;
//   - id-data content encrypted with AES-256-CBC under a random key and a
//     random 16-byte IV, PKCS #7 padded, as a constructed [0] of OCTET STRING
//     chunks of KMSChunkSize bytes (the last holds the rest).
//
// rand supplies the content-encryption key, the IV and the OAEP seed, in that
// order; nil means crypto/rand.Reader. pub must be RSA-2048, -3072 or -4096
// and plaintext at most MaxPlaintext bytes (ErrTooLarge otherwise).
func Encrypt(rand io.Reader, pub *rsa.PublicKey, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, newError(ErrTooLarge, fmt.Sprintf("plaintext is %d bytes, the limit is %d", len(plaintext), MaxPlaintext))
	}
	return seal(rand, pub, plaintext)
}

// seal is Encrypt without the plaintext limit, so tests can build envelopes
// just past it.
func seal(random io.Reader, pub *rsa.PublicKey, plaintext []byte) ([]byte, error) {
	if random == nil {
		random = rand.Reader
	}
	if pub == nil || pub.N == nil {
		return nil, fmt.Errorf("cms: failed to encrypt: no public key")
	}
	if !supportedKeySize(pub.Size()) {
		return nil, newError(ErrUnsupported, fmt.Sprintf("RSA key of %d bits, want 2048, 3072 or 4096", pub.N.BitLen()))
	}
	id, err := RecipientKeyID(pub)
	if err != nil {
		return nil, err
	}

	var cek [contentKeySize]byte
	defer clear(cek[:])
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(random, cek[:]); err != nil {
		return nil, fmt.Errorf("cms: failed to generate content-encryption key: %w", err)
	}
	if _, err := io.ReadFull(random, iv); err != nil {
		return nil, fmt.Errorf("cms: failed to generate IV: %w", err)
	}
	encryptedKey, err := rsa.EncryptOAEP(sha256.New(), random, pub, cek[:], nil)
	if err != nil {
		return nil, fmt.Errorf("cms: failed to encrypt content-encryption key: %w", err)
	}

	block, err := aes.NewCipher(cek[:])
	if err != nil {
		return nil, fmt.Errorf("cms: failed to create AES cipher: %w", err)
	}
	pad := aes.BlockSize - len(plaintext)%aes.BlockSize
	ciphertext := make([]byte, len(plaintext)+pad)
	copy(ciphertext, plaintext)
	for i := len(plaintext); i < len(ciphertext); i++ {
		ciphertext[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ciphertext, ciphertext)

	env := kmsEnvelope(id, encryptedKey, iv, ciphertext)
	return appendBER(make([]byte, 0, env.encodedLen()), &env), nil
}

// kmsEnvelope builds the element tree of a KMS CiphertextForRecipient
// (offsets are those of the 493-byte kms-real/edgebit envelope):
//
//	  0 30 80                 ContentInfo
//	  2   06 09 …07 03        id-envelopedData
//	 13   a0 80               [0]
//	 15     30 80             EnvelopedData
//	 17       02 01 02        version 2
//	 20       31 82 01 6b     RecipientInfos (DER)
//	 24         30 82 01 67   KeyTransRecipientInfo
//	 28           02 01 02    version 2
//	 31           80 20 …     subjectKeyIdentifier
//	 65           30 3c …     RSAES-OAEP, SHA-256 + NULL, MGF1 SHA-256 + NULL
//	127           04 82 01 00 encryptedKey
//	387       30 80           EncryptedContentInfo
//	389         06 09 …07 01  id-data
//	400         30 1d …       AES-256-CBC, 16-byte IV
//	431         a0 80         encryptedContent
//	433           04 30 …     chunk (≤ 1000 bytes each)
//	483-492   00 00 ×5        end-of-contents
func kmsEnvelope(recipientID, encryptedKey, iv, ciphertext []byte) berNode {
	hashAlg := definite(tagSequence, oidNode(oidSHA256), primitive(tagNull, nil))
	oaepParams := definite(tagSequence,
		definite(tagContext0Cons, hashAlg),
		definite(tagContext1Cons, definite(tagSequence, oidNode(oidMGF1), hashAlg)),
	)
	recipient := definite(tagSequence,
		primitive(tagInteger, []byte{2}),
		primitive(tagContext0, recipientID),
		definite(tagSequence, oidNode(oidRSAESOAEP), oaepParams),
		primitive(tagOctetString, encryptedKey),
	)

	chunks := make([]berNode, 0, (len(ciphertext)+KMSChunkSize-1)/KMSChunkSize)
	for rest := ciphertext; len(rest) > 0; {
		n := min(len(rest), KMSChunkSize)
		chunks = append(chunks, primitive(tagOctetString, rest[:n]))
		rest = rest[n:]
	}
	content := indefinite(tagSequence,
		oidNode(oidData),
		definite(tagSequence, oidNode(oidAES256CBC), primitive(tagOctetString, iv)),
		indefinite(tagContext0Cons, chunks...),
	)

	return indefinite(tagSequence,
		oidNode(oidEnvelopedData),
		indefinite(tagContext0Cons,
			indefinite(tagSequence,
				primitive(tagInteger, []byte{2}),
				definite(tagSet, recipient),
				content,
			),
		),
	)
}
