//go:build cgo && openssl && (amd64 || arm64)

package cms

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOpenSSLIsTheDefault(t *testing.T) {
	if DefaultBackend() != BackendOpenSSL {
		t.Fatalf("DefaultBackend() = %q in a binary built with -tags openssl", DefaultBackend())
	}
	if v := BackendVersion(BackendOpenSSL); !strings.HasPrefix(v, "OpenSSL 3.") {
		t.Errorf("BackendVersion(openssl) = %q, want OpenSSL 3.x", v)
	}
	k, err := NewKey(testKey(t, 2048))
	if err != nil {
		t.Fatal(err)
	}
	if k.Backend() != BackendOpenSSL {
		t.Errorf("NewKey made a %q key", k.Backend())
	}
	if _, ok := k.rsa.(*sslKey); !ok {
		t.Errorf("NewKey's key decrypts with %T", k.rsa)
	}
}

// TestBackendsAgree is the differential test: for real KMS and OpenSSL
// envelopes, the generated vectors, random envelopes and every kind of
// tampering, both backends give the same plaintext or the same typed error
// with the same message.
func TestBackendsAgree(t *testing.T) {
	type testCase struct {
		name string
		env  []byte
		key  *rsa.PrivateKey
	}
	var cases []testCase
	add := func(name string, env []byte, key *rsa.PrivateKey) {
		cases = append(cases, testCase{name, env, key})
	}

	// Real envelopes with their keys.
	add("real/edgebit", realFile(t, edgebitEnvelope), readKey(t, realFile(t, edgebitKey)))
	osslKey := readKey(t, realFile(t, opensslKey))
	add("real/openssl-der", realFile(t, opensslDER), osslKey)
	add("real/openssl-indefinite", realFile(t, opensslIndef), osslKey)

	// Generated vectors.
	vectors, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.ber"))
	if err != nil || len(vectors) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	for _, v := range vectors {
		name := strings.TrimSuffix(filepath.Base(v), ".ber")
		var bits int
		if _, err := fmt.Sscanf(name, "rsa%d-", &bits); err != nil {
			t.Fatalf("vector %s: %v", name, err)
		}
		env, _ := readVector(t, name)
		add("vector/"+name, env, testKey(t, bits))
	}

	// Random envelopes for random keys and sizes.
	fresh, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for i, size := range []int{0, 1, 15, 16, 17, 31, 32, 33, 100, 1000, 1001, 4095, MaxPlaintext} {
		key := []*rsa.PrivateKey{fresh, testKey(t, 2048), testKey(t, 3072), testKey(t, 4096)}[i%4]
		add(fmt.Sprintf("random/%d-bytes-rsa%d", size, key.N.BitLen()), mustEncrypt(t, &key.PublicKey, randomBytes(t, size)), key)
	}

	// Tampering with a KMS-layout envelope for the 2048-bit test key.
	key := testKey(t, 2048)
	base, _ := readVector(t, "rsa2048-32")
	tree := mustTree(t, base)
	ek := at(t, &tree, pathEncryptedKey).value
	ekStart := bytes.Index(base, ek)
	if ekStart < 0 {
		t.Fatal("encrypted key not found in the vector")
	}
	// Every bit position of the encrypted key's first and last bytes, and
	// one flip in every byte of it: OAEP failures at every stage (the
	// leading zero byte, the masked seed, the hash, the padding string).
	for i := range len(ek) {
		bits := []byte{0x01}
		if i == 0 || i == len(ek)-1 {
			bits = []byte{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80}
		}
		for _, bit := range bits {
			b := bytes.Clone(base)
			b[ekStart+i] ^= bit
			add(fmt.Sprintf("tampered/encrypted-key-byte-%d-bit-%02x", i, bit), b, key)
		}
	}
	// Encrypted keys at and past the edges of the modulus.
	n := key.N
	for _, v := range []*big.Int{big.NewInt(0), big.NewInt(1), new(big.Int).Sub(n, big.NewInt(1)), n, new(big.Int).Add(n, big.NewInt(1)), new(big.Int).Lsh(big.NewInt(1), 2048-1)} {
		c := make([]byte, len(ek))
		if v.BitLen() <= 8*len(c) {
			v.FillBytes(c)
		} else {
			continue
		}
		add(fmt.Sprintf("tampered/encrypted-key-%d-bits", v.BitLen()), mutate(t, base, func(r *berNode) { at(t, r, pathEncryptedKey).value = c }), key)
	}
	// Valid OAEP around a content-encryption key of the wrong size.
	for _, size := range []int{0, 16, 31, 33, 64} {
		c, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, make([]byte, size), nil)
		if err != nil {
			t.Fatal(err)
		}
		add(fmt.Sprintf("tampered/%d-byte-content-key", size), mutate(t, base, func(r *berNode) { at(t, r, pathEncryptedKey).value = c }), key)
	}
	// OAEP with another label, or SHA-1: well formed, but not what KMS does.
	for name, enc := range map[string]func() ([]byte, error){
		"label": func() ([]byte, error) {
			return rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, make([]byte, 32), []byte("label"))
		},
		"sha1": func() ([]byte, error) {
			return rsa.EncryptOAEPWithOptions(rand.Reader, &key.PublicKey, make([]byte, 32), &rsa.OAEPOptions{Hash: crypto.SHA1})
		},
	} {
		c, err := enc()
		if err != nil {
			t.Fatal(err)
		}
		add("tampered/oaep-"+name, mutate(t, base, func(r *berNode) { at(t, r, pathEncryptedKey).value = c }), key)
	}
	// Every byte of the rest of the envelope, once each, and truncations.
	for i := range len(base) {
		if i >= ekStart && i < ekStart+len(ek) {
			continue
		}
		b := bytes.Clone(base)
		b[i] ^= 0x80
		add(fmt.Sprintf("tampered/byte-%d", i), b, key)
	}
	for _, cut := range []int{1, 10, 100, ekStart + 10, len(base) - 11, len(base) - 1} {
		add(fmt.Sprintf("tampered/truncated-to-%d", cut), base[:cut], key)
	}
	// A wrong key for a KMS envelope and for OpenSSL's (tried, not matched).
	add("wrong-key/kms", base, fresh)
	add("wrong-key/openssl", realFile(t, opensslDER), fresh)

	keys := map[*rsa.PrivateKey]map[Backend]*Key{}
	keyFor := func(priv *rsa.PrivateKey, b Backend) *Key {
		if keys[priv] == nil {
			keys[priv] = map[Backend]*Key{}
		}
		if k := keys[priv][b]; k != nil {
			return k
		}
		k, err := NewKeyWithBackend(priv, b)
		if err != nil {
			t.Fatal(err)
		}
		keys[priv][b] = k
		return k
	}
	type outcome struct {
		Plaintext []byte
		Err       string
	}
	var errors, plaintexts int
	for _, tc := range cases {
		var got [2]outcome
		for i, b := range []Backend{BackendOpenSSL, BackendGo} {
			pt, err := DecryptWithKeys(tc.env, keyFor(tc.key, b))
			checkTyped(t, err)
			got[i] = outcome{Plaintext: pt}
			if err != nil {
				got[i].Err = err.Error()
			}
		}
		if diff := cmp.Diff(got[1], got[0]); diff != "" {
			t.Errorf("%s: openssl and go differ (-go +openssl):\n%s", tc.name, diff)
		}
		if got[0].Err != "" {
			errors++
		} else {
			plaintexts++
		}
	}
	// The cases must exercise both outcomes, and OAEP failures in numbers.
	if plaintexts < 30 || errors < 400 {
		t.Errorf("%d cases decrypted and %d failed: the test lost its cases", plaintexts, errors)
	}
	t.Logf("%d envelopes: %d decrypted, %d refused, alike in both backends", len(cases), plaintexts, errors)
}

// A key libcrypto reads differently from Go fails when it is made, not on
// the first request.
func TestOpenSSLPairwiseCheck(t *testing.T) {
	good := testKey(t, 2048)
	bad := *good
	// Both exponents: OpenSSL checks each CRT result with the public
	// exponent and recomputes a wrong one with d alone, so a damaged Dp by
	// itself still decrypts (slowly).
	bad.D = new(big.Int).Add(good.D, big.NewInt(2))
	bad.Precomputed.Dp = new(big.Int).Add(good.Precomputed.Dp, big.NewInt(2))
	_, err := NewKeyWithBackend(&bad, BackendOpenSSL)
	if err == nil || !strings.Contains(err.Error(), "self-test") {
		t.Fatalf("NewKeyWithBackend with damaged exponents: err = %v, want a self-test failure", err)
	}
	bad = *good
	bad.Primes = append([]*big.Int{}, good.Primes[0], good.Primes[1], big.NewInt(3))
	if _, err := NewKeyWithBackend(&bad, BackendOpenSSL); err == nil || !strings.Contains(err.Error(), "two-prime") {
		t.Fatalf("three primes: err = %v, want the two-prime refusal", err)
	}
}

// Destroy frees libcrypto's copy and every pooled context.
func TestOpenSSLDestroyFrees(t *testing.T) {
	k, err := NewKeyWithBackend(testKey(t, 2048), BackendOpenSSL)
	if err != nil {
		t.Fatal(err)
	}
	sk := k.rsa.(*sslKey)
	if sk.ctxs < 1 || len(sk.pool) != sk.ctxs {
		t.Fatalf("pool holds %d of %d contexts", len(sk.pool), sk.ctxs)
	}
	// Destroy clears the caller's key too: use a copy of the shared test key.
	k, err = NewKeyWithBackend(copyKey(testKey(t, 2048)), BackendOpenSSL)
	if err != nil {
		t.Fatal(err)
	}
	sk = k.rsa.(*sslKey)
	k.Destroy()
	if sk.pkey != nil || len(sk.pool) != 0 {
		t.Errorf("after Destroy: key %p, %d contexts still pooled", sk.pkey, len(sk.pool))
	}
	if k.rsa != nil {
		t.Error("the Key still refers to libcrypto's copy")
	}
}
