package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Real envelopes and the keys they open with, under testdata/real (each
// folder's PROVENANCE.md says where they come from).
const (
	edgebitEnvelope  = "edgebit/ciphertext_for_recipient.ber"
	edgebitKey       = "edgebit/rsa_private_key.pem"
	edgebitPlaintext = "edgebit/expected_plaintext.bin"
	opensslDER       = "openssl/env_der.cms"
	opensslIndef     = "openssl/env_indef.cms"
	opensslKey       = "openssl/key.pem"
	opensslCert      = "openssl/cert.pem"
	opensslPlain     = "openssl/plain.bin"
	rustcrypto4      = "rustcrypto/rustcrypto-4.ber"
)

// Paths into the element tree of a KMS envelope (see kmsEnvelope), as child
// indexes from the ContentInfo.
var (
	pathEnvelopedData    = []int{1, 0}
	pathEnvelopedVersion = []int{1, 0, 0}
	pathRecipientInfos   = []int{1, 0, 1}
	pathRecipientInfo    = []int{1, 0, 1, 0}
	pathRecipientVersion = []int{1, 0, 1, 0, 0}
	pathRecipientID      = []int{1, 0, 1, 0, 1}
	pathKeyAlgorithm     = []int{1, 0, 1, 0, 2}
	pathOAEPParams       = []int{1, 0, 1, 0, 2, 1}
	pathOAEPHash         = []int{1, 0, 1, 0, 2, 1, 0, 0}    // SEQUENCE { OID, NULL } inside [0]
	pathMGFHash          = []int{1, 0, 1, 0, 2, 1, 1, 0, 1} // SEQUENCE { OID, NULL } inside [1] SEQUENCE
	pathEncryptedKey     = []int{1, 0, 1, 0, 3}
	pathEncryptedInfo    = []int{1, 0, 2}
	pathContentType      = []int{1, 0, 2, 0}
	pathContentAlgorithm = []int{1, 0, 2, 1}
	pathIV               = []int{1, 0, 2, 1, 1}
	pathContent          = []int{1, 0, 2, 2}
)

// at returns the node at path inside n.
func at(tb testing.TB, n *berNode, path []int) *berNode {
	tb.Helper()
	for i, idx := range path {
		if idx >= len(n.children) {
			tb.Fatalf("path %v: element at step %d has %d children", path, i, len(n.children))
		}
		n = &n.children[idx]
	}
	return n
}

// toTree turns an element read by parseBER into a tree for the writer.
func toTree(tb testing.TB, el berElement) berNode {
	tb.Helper()
	n := berNode{tag: el.tag, indefinite: el.indefinite}
	if !el.constructed() {
		n.value = el.contents
		return n
	}
	kids, err := el.elements(nil)
	if err != nil {
		tb.Fatalf("failed to read the elements of a checked element: %v", err)
	}
	for _, k := range kids {
		n.children = append(n.children, toTree(tb, k))
	}
	return n
}

// mustTree parses a copy of b into a tree the caller may modify freely.
func mustTree(tb testing.TB, b []byte) berNode {
	tb.Helper()
	el, err := parseBER(bytes.Clone(b))
	if err != nil {
		tb.Fatalf("failed to parse test envelope: %v", err)
	}
	return toTree(tb, el)
}

// mutate returns the encoding of base's tree after f has changed it.
func mutate(tb testing.TB, base []byte, f func(root *berNode)) []byte {
	tb.Helper()
	root := mustTree(tb, base)
	f(&root)
	return appendBER(nil, &root)
}

// readKey reads an RSA private key in PKCS #1 or PKCS #8 PEM.
func readKey(tb testing.TB, pemBytes []byte) *rsa.PrivateKey {
	tb.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		tb.Fatal("no PEM block in key file")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatalf("failed to parse key: %v", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		tb.Fatalf("key is %T, want *rsa.PrivateKey", k)
	}
	return rk
}

var (
	vectorKeysOnce sync.Once
	vectorKeys     map[int]*rsa.PrivateKey
	vectorKeysErr  error
)

// testKey returns the committed test key of the given size
// (testdata/keys/rsa-N.pem, derived by the vector generator).
func testKey(tb testing.TB, bits int) *rsa.PrivateKey {
	tb.Helper()
	vectorKeysOnce.Do(func() {
		vectorKeys = map[int]*rsa.PrivateKey{}
		for _, b := range []int{2048, 3072, 4096} {
			p, err := os.ReadFile(filepath.Join("testdata", "keys", fmt.Sprintf("rsa-%d.pem", b)))
			if err != nil {
				vectorKeysErr = err
				return
			}
			block, _ := pem.Decode(p)
			if block == nil {
				vectorKeysErr = errors.New("no PEM block")
				return
			}
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				vectorKeysErr = err
				return
			}
			vectorKeys[b] = k
		}
	})
	if vectorKeysErr != nil {
		tb.Fatalf("failed to load committed test keys: %v", vectorKeysErr)
	}
	return vectorKeys[bits]
}

// copyKey returns a deep copy of a precomputed key, for tests that Destroy
// a Key (which clears the *rsa.PrivateKey it was made from) made from one of
// the shared test keys.
func copyKey(priv *rsa.PrivateKey) *rsa.PrivateKey {
	c := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Set(priv.N), E: priv.E},
		D:         new(big.Int).Set(priv.D),
	}
	for _, p := range priv.Primes {
		c.Primes = append(c.Primes, new(big.Int).Set(p))
	}
	c.Precompute()
	return c
}

// otherKey is an RSA-2048 key that is the recipient of nothing.
var otherKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

func mustOtherKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	k, err := otherKey()
	if err != nil {
		tb.Fatalf("failed to generate key: %v", err)
	}
	return k
}

// mustEncrypt is Encrypt that fails tb on error.
func mustEncrypt(tb testing.TB, pub *rsa.PublicKey, plaintext []byte) []byte {
	tb.Helper()
	env, err := Encrypt(nil, pub, plaintext)
	if err != nil {
		tb.Fatalf("Encrypt: %v", err)
	}
	return env
}

// checkTyped fails tb unless err is an *Error whose Kind is a sentinel.
func checkTyped(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	var ce *Error
	if !errors.As(err, &ce) {
		tb.Fatalf("error %q is %T, want *cms.Error", err, err)
	}
	for _, k := range sentinels {
		if ce.Kind == k {
			return
		}
	}
	tb.Fatalf("error %q has Kind %v, which is not a cms sentinel", err, ce.Kind)
}

var sentinels = []error{
	ErrTruncated, ErrTrailingData, ErrTooLarge, ErrTooDeep, ErrTooManyChunks,
	ErrMalformed, ErrUnsupported, ErrNoMatchingKey, ErrKeyDecrypt, ErrBadPadding,
}

// realDir holds the real envelopes, one folder per source.
const realDir = "testdata/real"

// realFile reads a file under realDir, e.g. realFile(tb, edgebitEnvelope).
func realFile(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(realDir, filepath.FromSlash(rel)))
	if err != nil {
		tb.Fatalf("failed to read real test data: %v", err)
	}
	return b
}

// isKind reports whether err is a cms *Error of the given kind.
func isKind(err, kind error) bool {
	var ce *Error
	return errors.As(err, &ce) && errors.Is(err, kind)
}

func pemBlock(tb testing.TB, b []byte) []byte {
	tb.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		tb.Fatal("no PEM block")
	}
	return block.Bytes
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
