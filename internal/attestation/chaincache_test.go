package attestation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// TestVerifyNewLeafUnderKnownBundle: a second enclave of the same
// instance (another leaf, the same cabundle) verifies, through the cached
// cabundle, and its document is refused where a full verification would
// refuse it.
func TestVerifyNewLeafUnderKnownBundle(t *testing.T) {
	f := newSimFixture(t)
	first, err := attestation.Parse(f.doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(first, f.ca.Roots(), f.now); err != nil {
		t.Fatal(err)
	}
	sim2, err := nsmsim.New(f.ca, nsmsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw2, err := sim2.Attest(context.Background(), attestation.Request{Nonce: []byte("second enclave")})
	if err != nil {
		t.Fatal(err)
	}
	second, err := attestation.Parse(raw2)
	if err != nil {
		t.Fatal(err)
	}
	if string(second.Certificate) == string(first.Certificate) {
		t.Fatal("the second simulator reused the first leaf")
	}
	if err := attestation.Verify(second, f.ca.Roots(), second.Timestamp); err != nil {
		t.Errorf("new leaf under a verified cabundle: %v", err)
	}
	// The cache does not carry trust to another set of roots.
	ca2, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	checkTyped(t, attestation.Verify(second, ca2.Roots(), second.Timestamp), attestation.ErrChain)
	checkTyped(t, attestation.Verify(second, attestation.NitroRoots(), second.Timestamp), attestation.ErrChain)
}

// TestVerifyForgedLeafUnderKnownBundle: a leaf that names the instance
// certificate as its issuer but was signed by another key is refused,
// though its cabundle verified before.
func TestVerifyForgedLeafUnderKnownBundle(t *testing.T) {
	f := newSimFixture(t)
	genuine, err := attestation.Parse(f.doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(genuine, f.ca.Roots(), f.now); err != nil {
		t.Fatal(err)
	}
	issuer, err := x509.ParseCertificate(genuine.CABundle[len(genuine.CABundle)-1])
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(genuine.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Same subject, issuer name, validity and key as the genuine leaf;
	// only the signature is the forger's.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: leaf.Subject.CommonName},
		NotBefore:    leaf.NotBefore,
		NotAfter:     leaf.NotAfter,
		KeyUsage:     leaf.KeyUsage,
	}
	fakeIssuer := *issuer
	fakeIssuer.PublicKey = &forger.PublicKey
	forged, err := x509.CreateCertificate(rand.Reader, tmpl, &fakeIssuer, &f.leafKey.PublicKey, forger)
	if err != nil {
		t.Fatal(err)
	}
	m := f.fields(t)
	m["certificate"] = enc(t, forged)
	raw := f.resign(t, m)
	doc, err := attestation.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := x509.ParseCertificate(doc.Certificate); err != nil || string(c.RawIssuer) != string(issuer.RawSubject) {
		t.Fatalf("forged leaf does not name the genuine issuer: %v", err)
	}
	checkTyped(t, attestation.Verify(doc, f.ca.Roots(), f.now), attestation.ErrChain)
}
