package cms

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// contentKeySize is the AES-256 key size: the content-encryption key that the
// RSA-OAEP encrypted key must decrypt to.
const contentKeySize = 32

// RecipientKeyID returns the identifier AWS KMS writes in the envelope for
// pub: SHA-256 of the DER SubjectPublicKeyInfo (32 bytes). Checked against the
// real KMS envelope kms-real/edgebit, whose subjectKeyIdentifier equals
// SHA-256 of its key's SubjectPublicKeyInfo; AWS's own
// aws-nitro-enclaves-sdk-c computes the same.
func RecipientKeyID(pub *rsa.PublicKey) ([]byte, error) {
	id, err := recipientKeyID(pub)
	if err != nil {
		return nil, err
	}
	return id[:], nil
}

// recipientKeyID hashes the SubjectPublicKeyInfo of pub, written exactly as
// x509.MarshalPKIXPublicKey writes an RSA key (RFC 5280 section 4.1 and
// RFC 8017 appendix A.1.1: rsaEncryption with NULL parameters, then the
// RSAPublicKey in a BIT STRING) but straight into one buffer, without
// encoding/asn1's reflection; a test checks that the bytes are the same.
func recipientKeyID(pub *rsa.PublicKey) ([sha256.Size]byte, error) {
	if pub == nil || pub.N == nil || pub.N.Sign() <= 0 || pub.E <= 0 {
		return [sha256.Size]byte{}, errors.New("cms: failed to compute recipient key id: no valid RSA public key")
	}
	// INTEGER contents: minimal big-endian two's complement, so a 0x00 in
	// front of a value whose top bit is set (X.690 8.3.2).
	nLen := (pub.N.BitLen() + 7) / 8
	if pub.N.BitLen()%8 == 0 {
		nLen++
	}
	var eBuf [9]byte
	eBytes := appendBase256(eBuf[:0], uint64(pub.E))
	rsaKeyLen := 1 + lengthOctets(nLen) + nLen + 1 + lengthOctets(len(eBytes)) + len(eBytes)
	bitStringLen := 1 + 1 + lengthOctets(rsaKeyLen) + rsaKeyLen
	algID := []byte{tagSequence, 13, tagOID, 9}
	spkiLen := len(algID) + len(oidRSAEncryption.der) + 2 + 1 + lengthOctets(bitStringLen) + bitStringLen

	b := make([]byte, 0, 1+lengthOctets(spkiLen)+spkiLen)
	b = appendLength(append(b, tagSequence), spkiLen)
	b = append(append(b, algID...), oidRSAEncryption.der...)
	b = append(b, tagNull, 0)
	b = appendLength(append(b, 0x03), bitStringLen) // BIT STRING
	b = append(b, 0)                                // no unused bits
	b = appendLength(append(b, tagSequence), rsaKeyLen)
	b = appendLength(append(b, tagInteger), nLen)
	start := len(b)
	b = b[:start+nLen]
	pub.N.FillBytes(b[start:]) // zero-padded on the left: the 0x00 above, if any
	b = appendLength(append(b, tagInteger), len(eBytes))
	b = append(b, eBytes...)
	return sha256.Sum256(b), nil
}

// appendBase256 appends v as the contents of a DER INTEGER: big-endian,
// minimal, with a leading 0x00 when the top bit is set.
func appendBase256(dst []byte, v uint64) []byte {
	n := 1
	for x := v >> 8; x > 0; x >>= 8 {
		n++
	}
	if v>>(8*n-1)&1 == 1 {
		dst = append(dst, 0)
	}
	for i := n - 1; i >= 0; i-- {
		dst = append(dst, byte(v>>(8*i)))
	}
	return dst
}

// Key is a recipient's RSA private key with its RecipientKeyID computed
// once and its copy in the backend that decrypts with it (DefaultBackend
// unless NewKeyWithBackend chose another). kmsproxyd makes one per
// generated key and decrypts every envelope with DecryptWithKeys, so that
// finding the key costs a comparison and no request hands the key to the
// backend again. A Key made by NewKey is safe for concurrent use; Destroy
// ends it.
type Key struct {
	private *rsa.PrivateKey
	id      [sha256.Size]byte
	hasID   bool
	backend Backend
	adHoc   bool // made by Decrypt for one call: see adHocKey

	// mu guards rsa against Destroy: decryptions hold it for reading.
	mu        sync.RWMutex
	rsa       unwrapper // the backend's copy; nil until first use in Decrypt's keys
	destroyed bool
}

// NewKey returns priv with its recipient identifier, handed to
// DefaultBackend. The backend's copy is checked by decrypting one value
// encrypted to the public key, so a key the backend cannot use fails here.
// priv should be precomputed (rsa.GenerateKey and the x509 parsers do it).
// The Key keeps priv (the Go backend decrypts with it); Destroy clears it.
func NewKey(priv *rsa.PrivateKey) (*Key, error) {
	return NewKeyWithBackend(priv, DefaultBackend())
}

// NewKeyWithBackend is NewKey with a chosen backend, one of Backends(): for
// benchmarks and the tests that compare backends.
func NewKeyWithBackend(priv *rsa.PrivateKey, b Backend) (*Key, error) {
	if priv == nil {
		return nil, errors.New("cms: failed to make key: no private key")
	}
	impl, ok := lookupBackend(b)
	if !ok {
		return nil, fmt.Errorf("cms: failed to make key: backend %q is not in this binary (it has %v)", b, Backends())
	}
	id, err := recipientKeyID(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	u, err := impl.load(priv)
	if err != nil {
		return nil, err
	}
	if b != BackendGo {
		if err := pairwiseCheck(&priv.PublicKey, u); err != nil {
			u.destroy()
			return nil, err
		}
	}
	k := &Key{private: priv, id: id, hasID: true, backend: b, rsa: u}
	// A Key dropped without Destroy still frees the backend's copy.
	runtime.AddCleanup(k, func(u unwrapper) { u.destroy() }, u)
	return k, nil
}

// ID returns the key's RecipientKeyID.
func (k *Key) ID() []byte { return bytes.Clone(k.id[:]) }

// Backend is the backend that decrypts with k.
func (k *Key) Backend() Backend { return k.backend }

// DecryptOAEP is the key's bare RSA private-key operation: RSAES-OAEP with
// SHA-256, MGF1-SHA-256 and an empty label, with the key's backend. It is
// here so that benchmarks can time the backend alone; envelopes go through
// DecryptWithKeys. Every failure is the same *Error of kind ErrKeyDecrypt.
// The caller clears the result.
func (k *Key) DecryptOAEP(ciphertext []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.destroyed || k.rsa == nil {
		return nil, errDestroyed
	}
	return k.rsa.decryptOAEP(ciphertext)
}

var errDestroyed = &Error{Kind: ErrKeyDecrypt, Reason: "the key was destroyed"}

// Destroy frees the backend's copy of the key (OpenSSL clears it as it
// frees it) and clears the *rsa.PrivateKey given to NewKey with
// WipePrivateKey. It waits for decryptions in progress; later ones fail
// with ErrKeyDecrypt. Destroy is safe to call more than once.
func (k *Key) Destroy() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.destroyed {
		return
	}
	k.destroyed = true
	if k.rsa != nil {
		k.rsa.destroy()
		k.rsa = nil
	}
	WipePrivateKey(k.private)
}

// matches reports whether the key's identifier is id, computing the
// identifier of a Key made inside Decrypt on first use.
func (k *Key) matches(id []byte) bool {
	if !k.hasID {
		kid, err := recipientKeyID(&k.private.PublicKey)
		if err != nil {
			return false
		}
		k.id, k.hasID = kid, true
	}
	return bytes.Equal(k.id[:], id)
}

// adHocKey is a Key for one call of Decrypt or (*Envelope).Decrypt: the
// backend gets its copy when the key is first tried, and release frees that
// copy without touching the caller's *rsa.PrivateKey.
func adHocKey(priv *rsa.PrivateKey) *Key {
	return &Key{private: priv, backend: DefaultBackend(), adHoc: true}
}

func (k *Key) release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.rsa != nil {
		k.rsa.destroy()
		k.rsa = nil
	}
	k.destroyed = true
}

// loadAdHoc gives an ad hoc key its backend copy on first use. Only the
// goroutine that owns an ad hoc key uses it, so loading needs no lock; a
// Key from NewKey has its copy already and is left alone.
func (k *Key) loadAdHoc() error {
	if !k.adHoc || k.rsa != nil || k.destroyed {
		return nil
	}
	impl, _ := lookupBackend(k.backend)
	u, err := impl.load(k.private)
	if err != nil && k.backend != BackendGo {
		// A key the backend does not take (multi-prime, say) still opens
		// with crypto/rsa.
		k.backend = BackendGo
		u, err = goUnwrapper{k.private}, nil
	}
	k.rsa = u
	return err
}

// MatchesKey reports whether the envelope names pub as its recipient by KMS's
// identifier (a subjectKeyIdentifier equal to RecipientKeyID(pub)). It is
// false for envelopes that identify their recipient another way.
func (e *Envelope) MatchesKey(pub *rsa.PublicKey) bool {
	if !e.hasKMSRecipientID() {
		return false
	}
	id, err := recipientKeyID(pub)
	return err == nil && bytes.Equal(id[:], e.RecipientID)
}

// hasKMSRecipientID reports whether the recipient is named the way KMS names
// it: a 32-byte subjectKeyIdentifier, compared with RecipientKeyID.
func (e *Envelope) hasKMSRecipientID() bool {
	return e.RecipientIDKind == SubjectKeyIdentifier && len(e.RecipientID) == sha256.Size
}

// Decrypt parses envelope and decrypts it with the key whose RecipientKeyID
// equals the envelope's 32-byte subjectKeyIdentifier, as in every envelope
// KMS writes. When the identifier has another form (OpenSSL's 20-byte SHA-1
// key id, issuerAndSerialNumber) each key is tried in turn. If no key
// matches, or none of them decrypts the content-encryption key, the error is
// ErrNoMatchingKey; nil keys are skipped. Errors are *Error.
//
// The plaintext is at most MaxPlaintext bytes; the caller owns it and should
// clear it when done. Decrypt computes each key's identifier per call and
// hands the key it tries to DefaultBackend for this call alone (the caller's
// keys are not changed); DecryptWithKeys avoids both.
func Decrypt(envelope []byte, keys ...*rsa.PrivateKey) ([]byte, error) {
	e, err := Parse(envelope)
	if err != nil {
		return nil, err
	}
	candidates := make([]*Key, 0, len(keys))
	for _, k := range keys {
		if k != nil {
			candidates = append(candidates, adHocKey(k))
		}
	}
	defer func() {
		for _, k := range candidates {
			k.release()
		}
	}()
	return e.decryptAmong(len(candidates), func(i int) *Key { return candidates[i] })
}

// DecryptWithKeys is Decrypt with keys made by NewKey.
func DecryptWithKeys(envelope []byte, keys ...*Key) ([]byte, error) {
	e, err := Parse(envelope)
	if err != nil {
		return nil, err
	}
	return e.decryptAmong(len(keys), func(i int) *Key { return keys[i] })
}

// decryptAmong decrypts with the first of n keys that is the recipient.
func (e *Envelope) decryptAmong(n int, key func(int) *Key) ([]byte, error) {
	tried := 0
	for i := range n {
		k := key(i)
		if k == nil || k.private == nil {
			continue
		}
		tried++
		if e.hasKMSRecipientID() {
			if k.matches(e.RecipientID) {
				return e.decryptWith(k, true)
			}
			continue
		}
		plaintext, err := e.decryptWith(k, true)
		if errors.Is(err, ErrKeyDecrypt) {
			continue
		}
		return plaintext, err
	}
	if e.hasKMSRecipientID() {
		return nil, newError(ErrNoMatchingKey, fmt.Sprintf("none of the %d keys has the recipient key id %x", tried, []byte(e.RecipientID)))
	}
	return nil, newError(ErrNoMatchingKey, fmt.Sprintf("none of the %d keys decrypts the content-encryption key (recipient identified by a %d-byte %s)",
		tried, len(e.RecipientID), e.RecipientIDKind))
}

// Decrypt decrypts the envelope with key. If the envelope carries KMS's
// 32-byte identifier and it is not key's RecipientKeyID, the error is
// ErrNoMatchingKey without trying the key; otherwise a key that cannot
// decrypt the content-encryption key gives ErrKeyDecrypt, and damaged
// content ErrBadPadding. Errors are *Error.
func (e *Envelope) Decrypt(key *rsa.PrivateKey) ([]byte, error) {
	if key == nil {
		return nil, newError(ErrNoMatchingKey, "no key given")
	}
	if e.hasKMSRecipientID() && !e.MatchesKey(&key.PublicKey) {
		return nil, newError(ErrNoMatchingKey, fmt.Sprintf("the key is not the recipient %x", []byte(e.RecipientID)))
	}
	k := adHocKey(key)
	defer k.release()
	return e.decryptWith(k, false) // the caller keeps e
}

// decryptWith unwraps the content-encryption key with key and decrypts the
// content. inPlace says that the Envelope is private to the call (Decrypt and
// DecryptWithKeys parse their own), so the plaintext may overwrite
// EncryptedContent instead of needing a buffer of its own.
func (e *Envelope) decryptWith(key *Key, inPlace bool) ([]byte, error) {
	if err := e.checkDecryptable(); err != nil {
		return nil, err
	}
	cek, err := e.unwrapKey(key)
	if err != nil {
		return nil, err
	}
	defer clear(cek)
	return e.decryptContent(cek, inPlace)
}

// checkDecryptable checks what would make the cipher calls panic or mean
// something else: an Envelope can be built by hand.
func (e *Envelope) checkDecryptable() error {
	if len(e.Refusals) > 0 {
		return unsupported("%s", e.Refusals[0]) // read by Inspect, which lets these through
	}
	if len(e.IV) != aes.BlockSize {
		return unsupported("AES-256-CBC IV is %d bytes, want %d", len(e.IV), aes.BlockSize)
	}
	if n := len(e.EncryptedContent); n == 0 || n%aes.BlockSize != 0 || n > MaxEncryptedContent {
		return malformed("encrypted content is %d bytes, want a positive multiple of %d up to %d", n, aes.BlockSize, MaxEncryptedContent)
	}
	if e.KeyEncryption.Hash != nameSHA256 || e.KeyEncryption.MGFHash != nameSHA256 || e.ContentEncryption != nameAES256CBC {
		return unsupported("algorithms %s/%s/%s, want RSAES-OAEP SHA-256/MGF1-SHA-256 and AES-256-CBC",
			e.KeyEncryption.Hash, e.KeyEncryption.MGFHash, e.ContentEncryption)
	}
	return nil
}

// unwrapKey decrypts the content-encryption key with the key's backend:
// RSAES-OAEP with SHA-256, MGF1-SHA-256 and an empty label. Every backend
// reports every OAEP failure with the same error, on purpose (RFC 8017
// section 7.1.2, note). The caller clears the result.
func (e *Envelope) unwrapKey(key *Key) ([]byte, error) {
	if size := key.private.Size(); len(e.EncryptedKey) != size {
		return nil, newError(ErrKeyDecrypt, fmt.Sprintf("encrypted key is %d bytes, the key's modulus is %d", len(e.EncryptedKey), size))
	}
	if err := key.loadAdHoc(); err != nil {
		return nil, newError(ErrKeyDecrypt, "the key could not be used: "+err.Error())
	}
	cek, err := key.DecryptOAEP(e.EncryptedKey)
	if err != nil {
		return nil, err
	}
	if len(cek) != contentKeySize {
		clear(cek)
		return nil, newError(ErrKeyDecrypt, fmt.Sprintf("content-encryption key is %d bytes, want %d for AES-256", len(cek), contentKeySize))
	}
	return cek, nil
}

// decryptContent decrypts the content with AES-256-CBC and removes the
// PKCS #7 padding, into a new buffer or, inPlace, over EncryptedContent
// (which Parse always owns: it never aliases the caller's input).
func (e *Envelope) decryptContent(cek []byte, inPlace bool) ([]byte, error) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, newError(ErrKeyDecrypt, "content-encryption key rejected by AES")
	}
	out := []byte(e.EncryptedContent)
	if !inPlace {
		out = make([]byte, len(e.EncryptedContent))
	}
	cipher.NewCBCDecrypter(block, e.IV).CryptBlocks(out, e.EncryptedContent)
	if inPlace {
		e.EncryptedContent = nil
	}
	n, good := unpad(out)
	if good != 1 {
		clear(out)
		return nil, newError(ErrBadPadding, "decrypted content does not end in PKCS #7 padding: damaged ciphertext, IV or key")
	}
	if n > MaxPlaintext {
		clear(out)
		return nil, newError(ErrTooLarge, fmt.Sprintf("plaintext is %d bytes, the limit is %d", n, MaxPlaintext))
	}
	clear(out[n:])
	return out[:n:n], nil
}

// unpad checks the PKCS #7 padding (RFC 5652 section 6.3) at the end of b, a
// non-empty whole number of AES blocks, and returns the plaintext length and
// good == 1 when the padding is well formed (good == 0 and n == len(b)
// otherwise). It looks at the whole last block with the same instructions
// whatever it holds: no branch or index depends on the padding bytes.
func unpad(b []byte) (n, good int) {
	last := b[len(b)-aes.BlockSize:]
	pad := int(last[aes.BlockSize-1])
	good = subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		// last[len-i] is padding when i <= pad, and must then equal pad.
		inPad := subtle.ConstantTimeLessOrEq(i, pad)
		match := subtle.ConstantTimeByteEq(last[aes.BlockSize-i], byte(pad))
		good &= subtle.ConstantTimeSelect(inPad, match, 1)
	}
	return len(b) - subtle.ConstantTimeSelect(good, pad, 0), good
}
