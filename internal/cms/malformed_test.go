package cms

import (
	"bytes"
	"crypto/rsa"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	oidCommonName  = newOID("commonName", 2, 5, 4, 3) // id-at-commonName, RFC 5280 appendix A
	oidUnknownMGF  = newOID("test", 1, 3, 6, 1, 4, 1, 99999, 1)
	asn1UTF8String = byte(0x0c)
	sha1AlgID      = func() berNode { return definite(tagSequence, oidNode(oidSHA1)) }
)

// readVector returns a committed vector's envelope and plaintext.
func readVector(tb testing.TB, name string) (env, plaintext []byte) {
	tb.Helper()
	env, err := os.ReadFile(filepath.Join("testdata", "vectors", name+".ber"))
	if err != nil {
		tb.Fatalf("failed to read vector: %v", err)
	}
	plaintext, err = os.ReadFile(filepath.Join("testdata", "vectors", name+".bin"))
	if err != nil {
		tb.Fatalf("failed to read vector: %v", err)
	}
	return env, plaintext
}

// withIssuerAndSerial replaces env's subjectKeyIdentifier with an
// issuerAndSerialNumber whose issuer is CN=<cnLen bytes> and whose serial
// number has serialLen bytes, and sets both versions to 0 (RFC 5652 section
// 6.1), the shape OpenSSL writes without -keyid.
func withIssuerAndSerial(tb testing.TB, env []byte, cnLen, serialLen int) []byte {
	tb.Helper()
	return mutate(tb, env, func(root *berNode) {
		name := definite(tagSequence, definite(tagSet, definite(tagSequence,
			oidNode(oidCommonName), primitive(asn1UTF8String, bytes.Repeat([]byte("k"), cnLen)))))
		serial := append([]byte{0x01}, bytes.Repeat([]byte{0x23}, serialLen-1)...)
		*at(tb, root, pathRecipientID) = definite(tagSequence, name, primitive(tagInteger, serial))
		at(tb, root, pathRecipientVersion).value = []byte{0}
		at(tb, root, pathEnvelopedVersion).value = []byte{0}
	})
}

// envelopeOfSize builds a valid issuerAndSerialNumber envelope of exactly
// size bytes around plaintext.
func envelopeOfSize(tb testing.TB, key *rsa.PrivateKey, plaintext []byte, size int) []byte {
	tb.Helper()
	env := mustEncrypt(tb, &key.PublicKey, plaintext)
	base := len(withIssuerAndSerial(tb, env, 0, 1))
	// Length fields grow with the name, so converge instead of solving; a
	// longer serial number gets past a size the length forms skip over.
	for serialLen := 1; serialLen <= 4; serialLen++ {
		cn := size - base
		for range 8 {
			out := withIssuerAndSerial(tb, env, max(cn, 0), serialLen)
			if len(out) == size {
				return out
			}
			cn += size - len(out)
		}
	}
	tb.Fatalf("cannot build an envelope of exactly %d bytes", size)
	return nil
}

// rechunk splits the envelope's ciphertext into n chunks.
func rechunk(tb testing.TB, env []byte, n int) []byte {
	tb.Helper()
	return mutate(tb, env, func(root *berNode) {
		content := at(tb, root, pathContent)
		var ct []byte
		for _, c := range content.children {
			ct = append(ct, c.value...)
		}
		content.children = nil
		for i := range n {
			lo, hi := i*len(ct)/n, (i+1)*len(ct)/n
			content.children = append(content.children, primitive(tagOctetString, ct[lo:hi]))
		}
	})
}

// TestMalformed feeds tampered and malformed envelopes, derived from a
// committed vector with exactly the real KMS layout (TestEncryptMatchesKMSLayout),
// to Decrypt and Parse: each must give its sentinel, never a panic; the rows
// with a nil wantKind are variations that must still decrypt.
func TestMalformed(t *testing.T) {
	key := testKey(t, 2048)
	base, plaintext := readVector(t, "rsa2048-32")
	oneBlock, _ := readVector(t, "rsa2048-0")
	other := mustOtherKey(t)
	m := func(f func(root *berNode)) func(testing.TB) []byte {
		return func(tb testing.TB) []byte { return mutate(tb, base, f) }
	}
	raw := func(b []byte) func(testing.TB) []byte { return func(testing.TB) []byte { return b } }
	flip := func(env []byte, off int) func(testing.TB) []byte {
		return func(testing.TB) []byte {
			b := bytes.Clone(env)
			b[off] ^= 0x01
			return b
		}
	}
	setInt := func(path []int, v byte) func(testing.TB) []byte {
		return m(func(r *berNode) { at(t, r, path).value = []byte{v} })
	}
	lastChunk := func(r *berNode) *berNode {
		c := at(t, r, pathContent)
		return &c.children[len(c.children)-1]
	}
	kmsEnd := len(base) - 10 // the ciphertext ends before five end-of-contents

	tests := []struct {
		name     string
		input    func(testing.TB) []byte
		keys     []*rsa.PrivateKey // default: the recipient key
		wantKind error             // nil: must decrypt to the vector's plaintext
		reason   string            // substring of the error message
		atParse  bool              // Parse alone must already refuse it
	}{
		// Framing.
		{name: "empty input", input: raw(nil), wantKind: ErrTruncated, atParse: true},
		{name: "trailing byte", input: raw(append(bytes.Clone(base), 0x00)), wantKind: ErrTrailingData, reason: "1 bytes", atParse: true},
		{name: "trailing end-of-contents", input: raw(append(bytes.Clone(base), 0x00, 0x00)), wantKind: ErrTrailingData, atParse: true},
		{name: "two envelopes", input: raw(append(bytes.Clone(base), base...)), wantKind: ErrTrailingData, atParse: true},
		{name: "not a SEQUENCE", input: m(func(r *berNode) { r.tag = tagSet }), wantKind: ErrMalformed, reason: "ContentInfo", atParse: true},
		{name: "ContentInfo with a third element", input: m(func(r *berNode) { r.children = append(r.children, primitive(tagNull, nil)) }), wantKind: ErrMalformed, atParse: true},
		{name: "base64 text instead of DER", input: raw([]byte(base64.StdEncoding.EncodeToString(base))), wantKind: ErrTrailingData, atParse: true},

		// Keys.
		{name: "wrong key", input: raw(base), keys: []*rsa.PrivateKey{other}, wantKind: ErrNoMatchingKey, reason: "recipient key id"},
		{name: "no keys", input: raw(base), keys: []*rsa.PrivateKey{}, wantKind: ErrNoMatchingKey},
		{name: "nil key", input: raw(base), keys: []*rsa.PrivateKey{nil}, wantKind: ErrNoMatchingKey},
		{name: "right key after a wrong and a nil one", input: raw(base), keys: []*rsa.PrivateKey{other, nil, key}},
		{name: "flipped encrypted key byte", input: m(func(r *berNode) { at(t, r, pathEncryptedKey).value[100] ^= 1 }), wantKind: ErrKeyDecrypt},
		{name: "encrypted key of an RSA-3072 modulus", input: m(func(r *berNode) { at(t, r, pathEncryptedKey).value = make([]byte, 384) }), wantKind: ErrKeyDecrypt, reason: "384 bytes"},
		{name: "encrypted key of 255 bytes", input: m(func(r *berNode) { at(t, r, pathEncryptedKey).value = make([]byte, 255) }), wantKind: ErrUnsupported, reason: "255 bytes", atParse: true},

		// Ciphertext damage. CBC has no integrity check (KMS relies on TLS to
		// bring the envelope intact), so only damage that reaches the padding is
		// detected: see TestCBCDamageOutsidePadding.
		{name: "flipped last ciphertext byte", input: flip(base, kmsEnd-1), wantKind: ErrBadPadding},
		{name: "flipped byte before the last block", input: flip(base, kmsEnd-17), wantKind: ErrBadPadding},
		{name: "flipped IV of a one-block envelope", input: func(tb testing.TB) []byte {
			return mutate(tb, oneBlock, func(r *berNode) { at(tb, r, pathIV).value[15] ^= 1 })
		}, wantKind: ErrBadPadding},
		{name: "ciphertext of 47 bytes", input: m(func(r *berNode) { c := lastChunk(r); c.value = c.value[:47] }), wantKind: ErrMalformed, reason: "47 bytes", atParse: true},
		{name: "ciphertext empty", input: m(func(r *berNode) { lastChunk(r).value = nil }), wantKind: ErrMalformed, reason: "0 bytes", atParse: true},

		// Recipients and versions.
		{name: "second recipient", input: m(func(r *berNode) {
			ris := at(t, r, pathRecipientInfos)
			ris.children = append(ris.children, ris.children[0])
		}), wantKind: ErrUnsupported, reason: "2 recipient infos", atParse: true},
		{name: "no recipient", input: m(func(r *berNode) { at(t, r, pathRecipientInfos).children = nil }), wantKind: ErrUnsupported, reason: "0 recipient infos", atParse: true},
		{name: "KeyAgreeRecipientInfo", input: m(func(r *berNode) { at(t, r, pathRecipientInfo).tag = 0xa1 }), wantKind: ErrUnsupported, reason: "KeyAgreeRecipientInfo", atParse: true},
		{name: "PasswordRecipientInfo", input: m(func(r *berNode) { at(t, r, pathRecipientInfo).tag = 0xa3 }), wantKind: ErrUnsupported, reason: "PasswordRecipientInfo", atParse: true},
		{name: "EnvelopedData version 0", input: setInt(pathEnvelopedVersion, 0), wantKind: ErrUnsupported, reason: "EnvelopedData version 0, want 2", atParse: true},
		{name: "EnvelopedData version 3", input: setInt(pathEnvelopedVersion, 3), wantKind: ErrUnsupported, reason: "EnvelopedData version 3", atParse: true},
		{name: "EnvelopedData version negative", input: setInt(pathEnvelopedVersion, 0xff), wantKind: ErrUnsupported, reason: "out of range", atParse: true},
		{name: "recipient version 0 with a subjectKeyIdentifier", input: setInt(pathRecipientVersion, 0), wantKind: ErrUnsupported, reason: "recipient info version 0, want 2", atParse: true},
		{name: "recipient version 3", input: setInt(pathRecipientVersion, 3), wantKind: ErrUnsupported, reason: "recipient info version 3", atParse: true},
		{name: "issuerAndSerialNumber with version 2", input: func(tb testing.TB) []byte {
			return mutate(tb, withIssuerAndSerial(tb, base, 8, 1), func(r *berNode) { at(tb, r, pathRecipientVersion).value = []byte{2} })
		}, wantKind: ErrUnsupported, reason: "want 0 with an issuerAndSerialNumber", atParse: true},
		{name: "issuerAndSerialNumber: each key tried", input: func(tb testing.TB) []byte { return withIssuerAndSerial(tb, base, 8, 1) }, keys: []*rsa.PrivateKey{other, key}},
		{name: "issuerAndSerialNumber without serial", input: m(func(r *berNode) {
			*at(t, r, pathRecipientID) = definite(tagSequence, definite(tagSequence))
			at(t, r, pathRecipientVersion).value = []byte{0}
		}), wantKind: ErrMalformed, reason: "issuerAndSerialNumber", atParse: true},
		{name: "subjectKeyIdentifier empty", input: m(func(r *berNode) { at(t, r, pathRecipientID).value = nil }), wantKind: ErrUnsupported, reason: "0 bytes", atParse: true},
		{name: "subjectKeyIdentifier of 65 bytes", input: m(func(r *berNode) { at(t, r, pathRecipientID).value = make([]byte, 65) }), wantKind: ErrUnsupported, reason: "65 bytes", atParse: true},
		{name: "31-byte subjectKeyIdentifier: each key tried", input: m(func(r *berNode) { n := at(t, r, pathRecipientID); n.value = n.value[:31] }), keys: []*rsa.PrivateKey{other, key}},
		{name: "originatorInfo", input: m(func(r *berNode) {
			ed := at(t, r, pathEnvelopedData)
			ed.children = append(ed.children[:1], append([]berNode{definite(tagContext0Cons)}, ed.children[1:]...)...)
		}), wantKind: ErrUnsupported, reason: "originatorInfo", atParse: true},
		{name: "unprotectedAttrs", input: m(func(r *berNode) {
			ed := at(t, r, pathEnvelopedData)
			ed.children = append(ed.children, definite(tagContext1Cons))
		}), wantKind: ErrUnsupported, reason: "unprotectedAttrs", atParse: true},
		{name: "recipient info with indefinite lengths", input: m(func(r *berNode) { at(t, r, pathRecipientInfo).indefinite = true }), wantKind: ErrUnsupported, reason: "indefinite", atParse: true},
		{name: "OAEP parameters with indefinite lengths", input: m(func(r *berNode) { at(t, r, pathOAEPParams).indefinite = true }), wantKind: ErrUnsupported, reason: "indefinite", atParse: true},
		{name: "recipient infos SET with an indefinite length", input: m(func(r *berNode) { at(t, r, pathRecipientInfos).indefinite = true }), wantKind: ErrUnsupported, reason: "indefinite", atParse: true},

		// Content types.
		{name: "content type signedData", input: m(func(r *berNode) { r.children[0] = oidNode(oidSignedData) }), wantKind: ErrUnsupported, reason: "1.2.840.113549.1.7.2", atParse: true},
		{name: "encrypted content type envelopedData", input: m(func(r *berNode) { *at(t, r, pathContentType) = oidNode(oidEnvelopedData) }), wantKind: ErrUnsupported, reason: "encrypted content type envelopedData", atParse: true},

		// Key encryption algorithm.
		{name: "RSAES-PKCS1-v1_5", input: m(func(r *berNode) {
			*at(t, r, pathKeyAlgorithm) = definite(tagSequence, oidNode(oidRSAEncryption), primitive(tagNull, nil))
		}), wantKind: ErrUnsupported, reason: "rsaEncryption", atParse: true},
		{name: "OAEP parameters absent (SHA-1 defaults)", input: m(func(r *berNode) {
			alg := at(t, r, pathKeyAlgorithm)
			alg.children = alg.children[:1]
		}), wantKind: ErrUnsupported, reason: "parameters absent", atParse: true},
		{name: "OAEP parameters empty (SHA-1 defaults)", input: m(func(r *berNode) { *at(t, r, pathOAEPParams) = definite(tagSequence) }),
			wantKind: ErrUnsupported, reason: "parameters empty, which means SHA-1", atParse: true},
		{name: "OAEP hash SHA-1", input: m(func(r *berNode) { *at(t, r, pathOAEPHash) = sha1AlgID() }), wantKind: ErrUnsupported, reason: "RSAES-OAEP hash SHA-1", atParse: true},
		{name: "OAEP hash SHA-384", input: m(func(r *berNode) { at(t, r, pathOAEPHash).children[0] = oidNode(oidSHA384) }), wantKind: ErrUnsupported, reason: "hash SHA-384", atParse: true},
		{name: "OAEP hashFunc absent, MGF1-SHA-256", input: m(func(r *berNode) {
			p := at(t, r, pathOAEPParams)
			p.children = p.children[1:]
		}), wantKind: ErrUnsupported, reason: "hashFunc absent", atParse: true},
		{name: "MGF1 with SHA-1", input: m(func(r *berNode) { *at(t, r, pathMGFHash) = sha1AlgID() }), wantKind: ErrUnsupported, reason: "MGF1 hash SHA-1", atParse: true},
		{name: "maskGenFunc absent (MGF1-SHA-1 default)", input: m(func(r *berNode) {
			p := at(t, r, pathOAEPParams)
			p.children = p.children[:1]
		}), wantKind: ErrUnsupported, reason: "maskGenFunc absent", atParse: true},
		{name: "unknown mask generation function", input: m(func(r *berNode) {
			at(t, r, []int{1, 0, 1, 0, 2, 1, 1, 0}).children[0] = oidNode(oidUnknownMGF)
		}), wantKind: ErrUnsupported, reason: "1.3.6.1.4.1.99999.1", atParse: true},
		{name: "hash parameters that are not NULL", input: m(func(r *berNode) { at(t, r, pathOAEPHash).children[1] = primitive(tagOctetString, []byte{1}) }),
			wantKind: ErrUnsupported, reason: "parameters other than NULL", atParse: true},
		{name: "OAEP label", input: m(func(r *berNode) {
			p := at(t, r, pathOAEPParams)
			p.children = append(p.children, definite(0xa2, definite(tagSequence, oidNode(oidPSpecified), primitive(tagOctetString, []byte("label")))))
		}), wantKind: ErrUnsupported, reason: "label of 5 bytes", atParse: true},
		{name: "explicit empty OAEP label", input: m(func(r *berNode) {
			p := at(t, r, pathOAEPParams)
			p.children = append(p.children, definite(0xa2, definite(tagSequence, oidNode(oidPSpecified), primitive(tagOctetString, nil))))
		})},
		{name: "hash parameters absent (OpenSSL's form)", input: m(func(r *berNode) {
			h, g := at(t, r, pathOAEPHash), at(t, r, pathMGFHash)
			h.children, g.children = h.children[:1], g.children[:1]
		})},
		{name: "OAEP parameters trailing element", input: m(func(r *berNode) {
			p := at(t, r, pathOAEPParams)
			p.children = append(p.children, primitive(tagNull, nil))
		}), wantKind: ErrMalformed, atParse: true},

		// Content encryption algorithm.
		{name: "AES-128-CBC", input: m(func(r *berNode) { at(t, r, pathContentAlgorithm).children[0] = oidNode(oidAES128CBC) }), wantKind: ErrUnsupported, reason: "AES-128-CBC", atParse: true},
		{name: "AES-256-GCM", input: m(func(r *berNode) { at(t, r, pathContentAlgorithm).children[0] = oidNode(oidAES256GCM) }), wantKind: ErrUnsupported, reason: "AES-256-GCM", atParse: true},
		{name: "IV of 15 bytes", input: m(func(r *berNode) { n := at(t, r, pathIV); n.value = n.value[:15] }), wantKind: ErrUnsupported, reason: "IV is 15 bytes", atParse: true},
		{name: "IV of 17 bytes", input: m(func(r *berNode) { n := at(t, r, pathIV); n.value = append(n.value, 0) }), wantKind: ErrUnsupported, reason: "IV is 17 bytes", atParse: true},
		{name: "IV absent", input: m(func(r *berNode) { a := at(t, r, pathContentAlgorithm); a.children = a.children[:1] }), wantKind: ErrMalformed, reason: "parameters", atParse: true},
		{name: "content algorithm with indefinite length", input: m(func(r *berNode) { at(t, r, pathContentAlgorithm).indefinite = true }), wantKind: ErrUnsupported, reason: "indefinite", atParse: true},

		// Encrypted content forms.
		{name: "encrypted content absent", input: m(func(r *berNode) { eci := at(t, r, pathEncryptedInfo); eci.children = eci.children[:2] }),
			wantKind: ErrUnsupported, reason: "absent", atParse: true},
		{name: "primitive [0] content (csdk-2's form)", input: m(func(r *berNode) {
			c := at(t, r, pathContent)
			*c = primitive(tagContext0, c.children[0].value)
		})},
		{name: "definite lengths throughout", input: m(func(r *berNode) { setDefinite(r) })},
		{name: "nested constructed chunk", input: m(func(r *berNode) {
			c := at(t, r, pathContent)
			c.children = []berNode{indefinite(tagOctetStringCon, c.children...)}
		}), wantKind: ErrUnsupported, reason: "itself constructed", atParse: true},
		{name: "chunk that is not an OCTET STRING", input: m(func(r *berNode) { lastChunk(r).tag = asn1UTF8String }), wantKind: ErrMalformed, reason: "tag 0x0c", atParse: true},
		{name: "encrypted content with a context tag [1]", input: m(func(r *berNode) { at(t, r, pathContent).tag = tagContext1Cons }), wantKind: ErrMalformed, atParse: true},

		// Limits.
		{name: "depth bomb, indefinite", input: raw(bytes.Repeat([]byte{0x30, 0x80}, 5000)), wantKind: ErrTooDeep, atParse: true},
		{name: "depth bomb, definite", input: raw(nestedDefinite(MaxDepth + 1)), wantKind: ErrTooDeep, atParse: true},
		{name: "chunk-count bomb", input: func(tb testing.TB) []byte {
			return mutate(tb, base, func(r *berNode) {
				c := at(tb, r, pathContent)
				c.children = make([]berNode, 7000)
				for i := range c.children {
					c.children[i] = primitive(tagOctetString, nil)
				}
			})
		}, wantKind: ErrTooManyChunks, atParse: true},
		{name: "length field of 5 octets", input: raw([]byte{0x30, 0x85, 0, 0, 0, 0, 1, 0}), wantKind: ErrTooLarge, atParse: true},
		{name: "length of 2 GiB", input: raw([]byte{0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0}), wantKind: ErrTruncated, atParse: true},
		{name: "over MaxEnvelopeSize", input: raw(make([]byte, MaxEnvelopeSize+1)), wantKind: ErrTooLarge, reason: "16385 bytes", atParse: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.input(t)
			keys := tt.keys
			if keys == nil {
				keys = []*rsa.PrivateKey{key}
			}
			got, err := Decrypt(env, keys...)
			checkTyped(t, err)
			if tt.wantKind == nil {
				if err != nil {
					t.Fatalf("Decrypt: %v", err)
				}
				if !bytes.Equal(got, plaintext) {
					t.Fatalf("Decrypt = %x, want %x", got, plaintext)
				}
				return
			}
			if !isKind(err, tt.wantKind) {
				t.Fatalf("Decrypt error = %v, want kind %q", err, tt.wantKind)
			}
			if got != nil {
				t.Error("Decrypt returned a plaintext with its error")
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not mention %q", err, tt.reason)
			}
			if strings.Contains(err.Error(), hexOf(plaintext)) {
				t.Errorf("error %q contains the plaintext", err)
			}
			_, perr := Parse(env)
			checkTyped(t, perr)
			if tt.atParse && !isKind(perr, tt.wantKind) {
				t.Errorf("Parse error = %v, want kind %q", perr, tt.wantKind)
			}
			if !tt.atParse && perr != nil {
				t.Errorf("Parse error = %v, want success (the problem is past the structure)", perr)
			}
			checkInspect(t, tt.name, env, key, perr, tt.reason)
		})
	}
}

// inspectable are the cases of TestMalformed that Parse refuses for their
// algorithms, parameters or versions only: well-formed EnvelopedData that
// Inspect describes, listing the refusal. The other refusals are about the
// encoding, which Inspect refuses too.
var inspectable = map[string]bool{
	"second recipient": true, "no recipient": true,
	"EnvelopedData version 0": true, "EnvelopedData version 3": true,
	"recipient version 0 with a subjectKeyIdentifier": true, "recipient version 3": true,
	"issuerAndSerialNumber with version 2": true,
	"originatorInfo":                       true, "unprotectedAttrs": true,
	"encrypted content type envelopedData":    true,
	"RSAES-PKCS1-v1_5":                        true,
	"OAEP parameters absent (SHA-1 defaults)": true, "OAEP parameters empty (SHA-1 defaults)": true,
	"OAEP hash SHA-1": true, "OAEP hash SHA-384": true, "OAEP hashFunc absent, MGF1-SHA-256": true,
	"MGF1 with SHA-1": true, "maskGenFunc absent (MGF1-SHA-1 default)": true, "unknown mask generation function": true,
	"OAEP label":  true,
	"AES-128-CBC": true, "AES-256-GCM": true, "IV of 15 bytes": true, "IV of 17 bytes": true,
	"encrypted content absent": true, "encrypted key of 255 bytes": true,
}

// checkInspect checks Inspect on one case of TestMalformed: it accepts what
// Parse accepts and the inspectable refusals (naming them in Refusals,
// while Decrypt of the result still refuses), and refuses the rest as Parse
// does.
func checkInspect(t *testing.T, name string, env []byte, key *rsa.PrivateKey, perr error, reason string) {
	t.Helper()
	e, err := Inspect(env)
	checkTyped(t, err)
	switch {
	case perr == nil:
		if err != nil || len(e.Refusals) != 0 {
			t.Errorf("Inspect = %v, refusals %q; want what Parse accepts, with no refusal", err, e.Refusals)
		}
	case inspectable[name]:
		if err != nil {
			t.Fatalf("Inspect error = %v, want a description listing the refusal", err)
		}
		if len(e.Refusals) == 0 || !strings.Contains(strings.Join(e.Refusals, "\n"), reason) {
			t.Errorf("Inspect refusals %q do not mention %q", e.Refusals, reason)
		}
		if !strings.Contains(e.Summary(), "kmsproxyd would refuse") {
			t.Errorf("Summary does not mark the refusal:\n%s", e.Summary())
		}
		if _, err := e.Decrypt(key); !isKind(err, ErrUnsupported) {
			t.Errorf("Decrypt of an inspected envelope = %v, want ErrUnsupported", err)
		}
	default:
		if err == nil {
			t.Errorf("Inspect accepted an envelope Parse refuses for its encoding (%v)", perr)
		}
	}
}

// setDefinite switches every element to the definite length form.
func setDefinite(n *berNode) {
	n.indefinite = false
	for i := range n.children {
		setDefinite(&n.children[i])
	}
}

// nestedDefinite returns depth+1 SEQUENCEs nested with definite lengths
// around a NULL, whose innermost SEQUENCE sits at level depth.
func nestedDefinite(depth int) []byte {
	n := primitive(tagNull, nil)
	for range depth + 1 {
		n = definite(tagSequence, n)
	}
	return appendBER(nil, &n)
}

// TestTruncation cuts real and committed envelopes at every byte offset:
// each prefix is ErrTruncated, for Parse and for Decrypt.
func TestTruncation(t *testing.T) {
	key := testKey(t, 2048)
	inputs := map[string][]byte{}
	for _, v := range []string{"rsa2048-0", "rsa2048-32", "rsa2048-4096"} {
		inputs["vector "+v], _ = readVector(t, v)
	}
	t.Run("committed vectors", func(t *testing.T) { checkTruncations(t, inputs, key) })
	t.Run("real envelopes", func(t *testing.T) {
		checkTruncations(t, map[string][]byte{
			"kms-real/edgebit":  realFile(t, edgebitEnvelope),
			"rustcrypto-4":      realFile(t, rustcrypto4),
			"csdk-2":            realFile(t, "aws-nitro-enclaves-sdk-c/csdk-2.ber"),
			"openssl/env_der":   realFile(t, opensslDER),
			"openssl/env_indef": realFile(t, opensslIndef),
		}, key)
	})
}

func checkTruncations(t *testing.T, inputs map[string][]byte, key *rsa.PrivateKey) {
	t.Helper()
	for name, env := range inputs {
		for n := range len(env) {
			_, err := Parse(env[:n])
			if !isKind(err, ErrTruncated) {
				t.Fatalf("%s cut to %d of %d bytes: Parse error = %v, want ErrTruncated", name, n, len(env), err)
			}
			if _, err := Decrypt(env[:n], key); !isKind(err, ErrTruncated) {
				t.Fatalf("%s cut to %d of %d bytes: Decrypt error = %v, want ErrTruncated", name, n, len(env), err)
			}
		}
	}
}

// TestCBCDamageOutsidePadding documents a property of the format, not of
// this package: AES-CBC without a MAC cannot detect damage to the IV or to
// blocks before the last two, so such an envelope decrypts to a different
// plaintext. KMS's envelope has no integrity check of its own; kmsproxyd
// relies on TLS from KMS into the enclave to deliver it intact.
func TestCBCDamageOutsidePadding(t *testing.T) {
	key := testKey(t, 2048)
	base, plaintext := readVector(t, "rsa2048-32")
	env := mutate(t, base, func(r *berNode) { at(t, r, pathIV).value[0] ^= 0x80 })
	got, err := Decrypt(env, key)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	want := bytes.Clone(plaintext)
	want[0] ^= 0x80
	if !bytes.Equal(got, want) {
		t.Errorf("Decrypt = %x, want the plaintext with its first bit flipped %x", got, want)
	}
}

// TestEnvelopeSizeLimit: a valid envelope of exactly MaxEnvelopeSize bytes
// (padded with a long issuer name) decrypts; one byte more is ErrTooLarge
// before any parsing.
func TestEnvelopeSizeLimit(t *testing.T) {
	key := testKey(t, 2048)
	plaintext := []byte("at the limit")
	atLimit := envelopeOfSize(t, key, plaintext, MaxEnvelopeSize)
	got, err := Decrypt(atLimit, key)
	if err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("%d-byte envelope: Decrypt = %q, %v", len(atLimit), got, err)
	}
	e, err := Parse(atLimit)
	if err != nil || e.Size != MaxEnvelopeSize || e.RecipientIDKind != IssuerAndSerialNumber {
		t.Fatalf("Parse: %v", err)
	}

	past := envelopeOfSize(t, key, plaintext, MaxEnvelopeSize+1)
	if _, err := Decrypt(past, key); !isKind(err, ErrTooLarge) {
		t.Errorf("%d-byte envelope: Decrypt error = %v, want ErrTooLarge", len(past), err)
	}
}

// TestChunkLimit: MaxChunks chunks decrypt, one more is ErrTooManyChunks.
func TestChunkLimit(t *testing.T) {
	key := testKey(t, 2048)
	base, plaintext := readVector(t, "rsa2048-4096")
	atLimit := rechunk(t, base, MaxChunks)
	e, err := Parse(atLimit)
	if err != nil || e.Chunks != MaxChunks {
		t.Fatalf("Parse(%d chunks): %v", MaxChunks, err)
	}
	if got, err := Decrypt(atLimit, key); err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("Decrypt(%d chunks): %v", MaxChunks, err)
	}
	past := rechunk(t, base, MaxChunks+1)
	if _, err := Decrypt(past, key); !isKind(err, ErrTooManyChunks) {
		t.Errorf("Decrypt(%d chunks) error = %v, want ErrTooManyChunks", MaxChunks+1, err)
	}
}

// TestHandBuiltEnvelope: (*Envelope).Decrypt refuses an Envelope whose
// exported fields were set to values Parse never produces, instead of
// panicking in the cipher.
func TestHandBuiltEnvelope(t *testing.T) {
	key := testKey(t, 2048)
	base, _ := readVector(t, "rsa2048-32")
	tests := []struct {
		name     string
		change   func(e *Envelope)
		wantKind error
	}{
		{"short IV", func(e *Envelope) { e.IV = e.IV[:8] }, ErrUnsupported},
		{"ragged ciphertext", func(e *Envelope) { e.EncryptedContent = e.EncryptedContent[:20] }, ErrMalformed},
		{"no ciphertext", func(e *Envelope) { e.EncryptedContent = nil }, ErrMalformed},
		{"other hash", func(e *Envelope) { e.KeyEncryption.Hash = "SHA-1" }, ErrUnsupported},
		{"zero Envelope", func(e *Envelope) { *e = Envelope{} }, ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(e)
			if _, err := e.Decrypt(key); !isKind(err, tt.wantKind) {
				t.Errorf("Decrypt error = %v, want %v", err, tt.wantKind)
			}
		})
	}
	e, err := Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decrypt(nil); !isKind(err, ErrNoMatchingKey) {
		t.Errorf("Decrypt(nil) error = %v, want ErrNoMatchingKey", err)
	}
	if _, err := e.Decrypt(mustOtherKey(t)); !isKind(err, ErrNoMatchingKey) {
		t.Errorf("Decrypt(other key) error = %v, want ErrNoMatchingKey", err)
	}
}

func TestReadEnvelope(t *testing.T) {
	for _, tt := range []struct {
		name     string
		size     int
		wantKind error
	}{
		{"empty", 0, nil},
		{"at the limit", MaxEnvelopeSize, nil},
		{"one past", MaxEnvelopeSize + 1, ErrTooLarge},
		{"far past", 10 * MaxEnvelopeSize, ErrTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadEnvelope(bytes.NewReader(make([]byte, tt.size)))
			if tt.wantKind != nil {
				if !isKind(err, tt.wantKind) {
					t.Errorf("error %v, want %v", err, tt.wantKind)
				}
				return
			}
			if err != nil || len(got) != tt.size {
				t.Errorf("ReadEnvelope = %d bytes, %v; want %d", len(got), err, tt.size)
			}
		})
	}
	if _, err := ReadEnvelope(&failingReader{n: 3}); err == nil || !strings.Contains(err.Error(), "failed to read envelope") {
		t.Errorf("failing reader: error %v", err)
	}
}
