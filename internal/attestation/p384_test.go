package attestation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"math/big"
	"testing"

	"github.com/veraison/go-cose"
)

// p384TestKeys are fixed keys, so that fuzz inputs replay.
func p384TestKeys(tb testing.TB) []*ecdsa.PrivateKey {
	tb.Helper()
	var keys []*ecdsa.PrivateKey
	for _, d := range []string{
		"5f9b2e7a1c3d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7",
		"01",
		"ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52972", // n-1
	} {
		k, err := ecdsa.ParseRawPrivateKey(elliptic.P384(), fixedScalar(tb, d))
		if err != nil {
			tb.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func fixedScalar(tb testing.TB, hex string) []byte {
	tb.Helper()
	v, ok := new(big.Int).SetString(hex, 16)
	if !ok {
		tb.Fatalf("bad scalar %q", hex)
	}
	return v.FillBytes(make([]byte, 48))
}

func stdVerify(pub *ecdsa.PublicKey, digest, r, s []byte) bool {
	return ecdsa.Verify(pub, digest, new(big.Int).SetBytes(r), new(big.Int).SetBytes(s))
}

// TestVerifyP384MatchesStdlib: for genuine signatures and every way of
// spoiling one, verifyP384 answers exactly as crypto/ecdsa.Verify does.
func TestVerifyP384MatchesStdlib(t *testing.T) {
	n := p384Order
	nMinus := func(v *big.Int) []byte { return new(big.Int).Sub(n, v).Bytes() }
	plus1 := func(b []byte) []byte { return new(big.Int).Add(new(big.Int).SetBytes(b), big.NewInt(1)).Bytes() }
	keys := p384TestKeys(t)
	var zero [48]byte
	digests := [][]byte{zero[:]} // e = 0: u1 = 0, the generator's part vanishes
	for i := range 6 {
		d := sha512.Sum384([]byte{byte(i)})
		digests = append(digests, d[:])
	}
	for ki, key := range keys {
		other := keys[(ki+1)%len(keys)]
		for di, digest := range digests {
			rr, ss, err := ecdsa.Sign(rand.Reader, key, digest)
			if err != nil {
				t.Fatal(err)
			}
			r, s := rr.Bytes(), ss.Bytes()
			flipped := append([]byte(nil), digest...)
			flipped[di%48] ^= 0x01
			for _, tc := range []struct {
				name   string
				valid  bool
				pub    *ecdsa.PublicKey
				digest []byte
				r, s   []byte
			}{
				{name: "genuine", valid: true, pub: &key.PublicKey, digest: digest, r: r, s: s},
				{name: "high s (n-s), valid in ECDSA", valid: true, pub: &key.PublicKey, digest: digest, r: r, s: nMinus(ss)},
				{name: "r+1", pub: &key.PublicKey, digest: digest, r: plus1(r), s: s},
				{name: "s+1", pub: &key.PublicKey, digest: digest, r: r, s: plus1(s)},
				{name: "r and s swapped", pub: &key.PublicKey, digest: digest, r: s, s: r},
				{name: "r = 0", pub: &key.PublicKey, digest: digest, r: nil, s: s},
				{name: "s = 0", pub: &key.PublicKey, digest: digest, r: r, s: nil},
				{name: "r = n", pub: &key.PublicKey, digest: digest, r: n.Bytes(), s: s},
				{name: "s = n", pub: &key.PublicKey, digest: digest, r: r, s: n.Bytes()},
				{name: "r + n", pub: &key.PublicKey, digest: digest, r: new(big.Int).Add(rr, n).Bytes(), s: s},
				{name: "r = n-1", pub: &key.PublicKey, digest: digest, r: nMinus(big.NewInt(1)), s: s},
				{name: "other digest", pub: &key.PublicKey, digest: flipped, r: r, s: s},
				// With e = 0 a signature under d also holds under -d: keys 1
				// and n-1 accept each other's (crypto/ecdsa agrees).
				{name: "other key", pub: &other.PublicKey, digest: digest, r: r, s: s},
			} {
				got, want := verifyP384(tc.pub, tc.digest, tc.r, tc.s), stdVerify(tc.pub, tc.digest, tc.r, tc.s)
				if got != want {
					t.Errorf("key %d, digest %d, %s: verifyP384 %v, crypto/ecdsa %v", ki, di, tc.name, got, want)
				}
				if tc.valid && !got {
					t.Errorf("key %d, digest %d, %s: refused", ki, di, tc.name)
				}
			}
		}
	}
}

// TestVerifyP384RefusesBadKeys: keys crypto/x509 would never hand over
// are refused, not computed with.
func TestVerifyP384RefusesBadKeys(t *testing.T) {
	key := p384TestKeys(t)[0]
	digest := sha512.Sum384([]byte("document"))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	x, y := affine(t, &key.PublicKey)
	for _, tc := range []struct {
		name string
		pub  *ecdsa.PublicKey
	}{
		{name: "nil key", pub: nil},
		{name: "off the curve", pub: rawKey(x, new(big.Int).Add(y, big.NewInt(1)))},
		{name: "the point at infinity", pub: rawKey(new(big.Int), new(big.Int))},
		{name: "P-256 key", pub: &testKey(t, elliptic.P256()).PublicKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if verifyP384(tc.pub, digest[:], r.Bytes(), s.Bytes()) {
				t.Error("accepted")
			}
		})
	}
	if !verifyP384(&key.PublicKey, digest[:], r.Bytes(), s.Bytes()) {
		t.Fatal("the genuine signature is refused")
	}
	if verifyP384(&key.PublicKey, digest[:47], r.Bytes(), s.Bytes()) {
		t.Error("a 47-byte digest is accepted")
	}
}

// affine returns pub's coordinates.
func affine(t *testing.T, pub *ecdsa.PublicKey) (x, y *big.Int) {
	t.Helper()
	b, err := pub.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return new(big.Int).SetBytes(b[1:49]), new(big.Int).SetBytes(b[49:])
}

// rawKey builds a P-384 key from coordinates, unchecked, as only a test
// does.
func rawKey(x, y *big.Int) *ecdsa.PublicKey {
	//lint:ignore SA1019 an invalid key can only be built from raw coordinates
	return &ecdsa.PublicKey{Curve: elliptic.P384(), X: x, Y: y}
}

// TestVerifyP384ASN1 checks the DER form against crypto/ecdsa.VerifyASN1,
// including encodings it refuses (trailing data, non-minimal integers,
// negative numbers).
func TestVerifyP384ASN1(t *testing.T) {
	key := p384TestKeys(t)[0]
	digest := sha512.Sum384([]byte("certificate"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	padded := append([]byte{0x30, sig[1] + 3, 0x02, 0x01, 0x00}, sig[2:]...) // a leading INTEGER 0 shifts r, s
	for _, tc := range []struct {
		name string
		sig  []byte
	}{
		{name: "genuine", sig: sig},
		{name: "trailing byte", sig: append(append([]byte(nil), sig...), 0)},
		{name: "truncated", sig: sig[:len(sig)-1]},
		{name: "extra integer", sig: padded},
		{name: "empty", sig: nil},
		{name: "not a sequence", sig: append([]byte{0x31}, sig[1:]...)},
		{name: "negative r", sig: []byte{0x30, 0x06, 0x02, 0x01, 0xff, 0x02, 0x01, 0x01}},
		{name: "non-minimal r", sig: []byte{0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := verifyP384ASN1(&key.PublicKey, digest[:], tc.sig), ecdsa.VerifyASN1(&key.PublicKey, digest[:], tc.sig)
			if got != want {
				t.Errorf("verifyP384ASN1 %v, crypto/ecdsa.VerifyASN1 %v", got, want)
			}
		})
	}
	if !verifyP384ASN1(&key.PublicKey, digest[:], sig) {
		t.Error("genuine DER signature refused")
	}
}

// TestES384Verifier: go-cose's own verifier and es384Verifier agree on
// genuine and spoiled COSE signatures.
func TestES384Verifier(t *testing.T) {
	key := p384TestKeys(t)[0]
	signer, err := cose.NewSigner(cose.AlgorithmES384, key)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("Sig_structure stand-in")
	sig, err := signer.Sign(rand.Reader, content)
	if err != nil {
		t.Fatal(err)
	}
	std, err := cose.NewVerifier(cose.AlgorithmES384, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ours := es384Verifier{&key.PublicKey}
	if ours.Algorithm() != cose.AlgorithmES384 {
		t.Errorf("Algorithm() = %v", ours.Algorithm())
	}
	flipped := append([]byte(nil), sig...)
	flipped[10] ^= 0x80
	for _, tc := range []struct {
		name         string
		content, sig []byte
	}{
		{name: "genuine", content: content, sig: sig},
		{name: "other content", content: []byte("other"), sig: sig},
		{name: "flipped bit", content: content, sig: flipped},
		{name: "95 bytes", content: content, sig: sig[:95]},
		{name: "97 bytes", content: content, sig: append(append([]byte(nil), sig...), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, want := ours.Verify(tc.content, tc.sig), std.Verify(tc.content, tc.sig)
			if (got == nil) != (want == nil) {
				t.Errorf("es384Verifier: %v, go-cose: %v", got, want)
			}
		})
	}
}

// FuzzVerifyP384 compares verifyP384 with crypto/ecdsa.Verify on arbitrary
// digests and signatures under fixed keys, seeded with genuine ones (whose
// mutations are the interesting near misses).
func FuzzVerifyP384(f *testing.F) {
	keys := p384TestKeys(f)
	for i, key := range keys {
		digest := sha512.Sum384([]byte{byte(i)})
		r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), digest[:], r.Bytes(), s.Bytes())
	}
	f.Add(uint8(0), make([]byte, 48), []byte{1}, []byte{1})
	f.Fuzz(func(t *testing.T, ki uint8, digest, r, s []byte) {
		if len(digest) != 48 || len(r) > 64 || len(s) > 64 {
			return // SHA-384 digests only; scalars past 64 bytes say nothing new
		}
		pub := &keys[int(ki)%len(keys)].PublicKey
		if got, want := verifyP384(pub, digest, r, s), stdVerify(pub, digest, r, s); got != want {
			t.Fatalf("verifyP384 %v, crypto/ecdsa %v", got, want)
		}
	})
}
