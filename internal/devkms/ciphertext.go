package devkms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"slices"
)

// devkms's ciphertext blob for symmetric encryption keys. AWS KMS's own blob
// format is undocumented; devkms only needs what it provides: the blob names
// its key (so Decrypt works without KeyId) and authenticates the encryption
// context (so Decrypt with another context fails).
//
//	magic "dkms" | version 0x01 | key ID (36 ASCII bytes) | nonce (12) | AES-256-GCM ciphertext | tag (16)
//
// The AES-256-GCM additional data is the header (magic, version, key ID)
// followed by the canonical encryption context: the pairs sorted by key,
// each as uint32 length + key + uint32 length + value (big-endian).
const (
	blobMagic      = "dkms"
	blobVersion    = 1
	blobKeyIDLen   = 36
	blobHeaderLen  = len(blobMagic) + 1 + blobKeyIDLen
	blobNonceLen   = 12
	blobTagLen     = 16
	blobOverhead   = blobHeaderLen + blobNonceLen + blobTagLen
	maxBlobContent = MaxCiphertextBlob - blobOverhead
)

// errBadBlob means the bytes are not a devkms ciphertext blob.
var errBadBlob = errors.New("not a devkms ciphertext blob")

// sealBlob encrypts plaintext under a symmetric encryption key.
func sealBlob(k *key, plaintext []byte, ec map[string]string) ([]byte, error) {
	if len(k.id) != blobKeyIDLen {
		return nil, errors.New("key ID is not a UUID")
	}
	if len(plaintext) > maxBlobContent {
		return nil, errors.New("plaintext too long for a ciphertext blob")
	}
	aead, err := newGCM(k.secret)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, blobOverhead+len(plaintext))
	out = append(out, blobMagic...)
	out = append(out, blobVersion)
	out = append(out, k.id...)
	header := out[:blobHeaderLen:blobHeaderLen]
	nonce := make([]byte, blobNonceLen)
	rand.Read(nonce)
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, blobAAD(header, ec)), nil
}

// blobKeyID returns the key ID a blob names, or errBadBlob.
func blobKeyID(blob []byte) (string, error) {
	if len(blob) < blobOverhead || string(blob[:len(blobMagic)]) != blobMagic || blob[len(blobMagic)] != blobVersion {
		return "", errBadBlob
	}
	id := string(blob[len(blobMagic)+1 : blobHeaderLen])
	if !keyIDPattern.MatchString(id) {
		return "", errBadBlob
	}
	return id, nil
}

// openBlob decrypts a blob made by sealBlob with k and ec.
func openBlob(k *key, blob []byte, ec map[string]string) ([]byte, error) {
	id, err := blobKeyID(blob)
	if err != nil {
		return nil, err
	}
	if id != k.id {
		return nil, errBadBlob
	}
	aead, err := newGCM(k.secret)
	if err != nil {
		return nil, err
	}
	header := blob[:blobHeaderLen]
	nonce := blob[blobHeaderLen : blobHeaderLen+blobNonceLen]
	return aead.Open(nil, nonce, blob[blobHeaderLen+blobNonceLen:], blobAAD(header, ec))
}

func newGCM(secret []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// blobAAD is the header followed by the canonical encryption context.
func blobAAD(header []byte, ec map[string]string) []byte {
	keys := make([]string, 0, len(ec))
	n := len(header)
	for k, v := range ec {
		keys = append(keys, k)
		n += 8 + len(k) + len(v)
	}
	slices.Sort(keys)
	aad := make([]byte, 0, n)
	aad = append(aad, header...)
	for _, k := range keys {
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(k)))
		aad = append(aad, k...)
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(ec[k])))
		aad = append(aad, ec[k]...)
	}
	return aad
}
