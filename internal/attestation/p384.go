package attestation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"math/big"

	"github.com/cloudflare/circl/ecc/p384"
	"github.com/veraison/go-cose"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Every signature of a Nitro attestation document is ECDSA P-384 with
// SHA-384: the COSE_Sign1 signature (ES384) and each certificate of the
// chain (ecdsa-with-SHA384). crypto/ecdsa has assembly for P-256 only; its
// P-384 verification (fiat-crypto field arithmetic in Go) takes 0.8 to
// 1.1 ms on the 2-vCPU AMD EPYC this repository is benchmarked on, and a
// document from an instance never seen before needs five of them.
// Cloudflare's circl implements the P-384 field in amd64 and arm64
// assembly and offers CombinedMult, u1·G + u2·Q in variable time for
// verification: 0.42 ms on the same machine. crypto/ecdsa no longer
// accepts an accelerated curve (since Go 1.20 it dispatches on the curve's
// parameters, and circl's curve reports the standard ones), so
// verifyP384 states the verification equation itself, on public inputs
// only, and is checked against crypto/ecdsa by TestVerifyP384MatchesStdlib
// and FuzzVerifyP384.
var circlP384 = p384.P384()

// p384Order is n, the order of P-384's base point.
var p384Order = elliptic.P384().Params().N

// p384Size is the size in bytes of P-384's coordinates and scalars.
const p384Size = 48

// verifyP384 reports whether (r, s), big-endian, is a valid ECDSA signature
// of digest, a SHA-384 hash, under pub, a P-384 key: SEC 1 version 2.0,
// section 4.1.4, as crypto/ecdsa.Verify computes it. A key that is not a
// point of P-384 other than the point at infinity is refused (crypto/x509
// never returns one: it refuses such keys when parsing).
func verifyP384(pub *ecdsa.PublicKey, digest, rBytes, sBytes []byte) bool {
	if pub == nil || pub.Curve != elliptic.P384() || len(digest) != sha512.Size384 {
		return false
	}
	point, err := pub.Bytes() // validates the point; 0x04 ‖ X ‖ Y
	if err != nil || len(point) != 1+2*p384Size {
		return false
	}
	qx, qy := new(big.Int).SetBytes(point[1:1+p384Size]), new(big.Int).SetBytes(point[1+p384Size:])
	r, s := new(big.Int).SetBytes(rBytes), new(big.Int).SetBytes(sBytes)
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(p384Order) >= 0 || s.Cmp(p384Order) >= 0 {
		return false
	}
	// The hash is exactly as long as n (384 bits), so e is the hash as an
	// integer (step 3's truncation keeps every bit).
	e := new(big.Int).SetBytes(digest)
	w := new(big.Int).ModInverse(s, p384Order) // n is prime and 0 < s < n: always invertible
	u1 := e.Mul(e, w)
	u1.Mod(u1, p384Order)
	u2 := w.Mul(r, w)
	u2.Mod(u2, p384Order)
	x, y := circlP384.CombinedMult(qx, qy, u1.Bytes(), u2.Bytes())
	if x.Sign() == 0 && y.Sign() == 0 { // the point at infinity
		return false
	}
	x.Mod(x, p384Order)
	return x.Cmp(r) == 0
}

// verifyP384ASN1 is verifyP384 for a DER ECDSA-Sig-Value (RFC 3279,
// section 2.2.3: SEQUENCE { r INTEGER, s INTEGER }), the form X.509
// signatures take, parsed as strictly as crypto/ecdsa.VerifyASN1 does.
func verifyP384ASN1(pub *ecdsa.PublicKey, digest, sig []byte) bool {
	var r, s []byte
	var inner cryptobyte.String
	input := cryptobyte.String(sig)
	if !input.ReadASN1(&inner, asn1.SEQUENCE) || !input.Empty() ||
		!inner.ReadASN1Integer(&r) || !inner.ReadASN1Integer(&s) || !inner.Empty() {
		return false
	}
	return verifyP384(pub, digest, r, s)
}

// es384Verifier is a go-cose Verifier for ES384 (RFC 9053, section 2.1)
// through verifyP384. go-cose still builds the Sig_structure and checks
// the algorithm header; only the ECDSA arithmetic is circl's.
type es384Verifier struct{ pub *ecdsa.PublicKey }

func (v es384Verifier) Algorithm() cose.Algorithm { return cose.AlgorithmES384 }

// Verify checks signature, the 96-byte r ‖ s of RFC 9053 section 2.1, over
// content, the COSE Sig_structure.
func (v es384Verifier) Verify(content, signature []byte) error {
	if len(signature) != 2*p384Size {
		return cose.ErrVerification
	}
	digest := sha512.Sum384(content)
	if !verifyP384(v.pub, digest[:], signature[:p384Size], signature[p384Size:]) {
		return cose.ErrVerification
	}
	return nil
}
