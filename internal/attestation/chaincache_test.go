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
	"time"

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
	forger := p384Key(t)
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
	forged := issue(t, tmpl, &fakeIssuer, &f.leafKey.PublicKey, forger)
	m := f.fields(t)
	m["certificate"] = enc(t, forged.Raw)
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

// TestVerifyNewLeafKeepsPolicyChecks: where a policy constraint requires an
// explicit certificate policy, a leaf without an acceptable one is refused
// also when its cabundle was verified before with another leaf.
func TestVerifyNewLeafKeepsPolicyChecks(t *testing.T) {
	// policyConstraints is the extension (2.5.29.36) with
	// requireExplicitPolicy 0: SEQUENCE { [0] INTEGER 0 }.
	policyConstraints := pkix.Extension{Id: []int{2, 5, 29, 36}, Critical: true, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}}
	policy, err := x509.ParseOID("1.2.3.4")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name               string
		bundleExt, leafExt []pkix.Extension
		bundlePol, goodPol []x509.OID
	}{
		{name: "the cabundle requires a policy", bundleExt: []pkix.Extension{policyConstraints}, bundlePol: []x509.OID{policy}, goodPol: []x509.OID{policy}},
		{name: "the new leaf requires a policy", leafExt: []pkix.Extension{policyConstraints}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSimFixture(t)
			rootKey, interKey := p384Key(t), p384Key(t)
			from := time.Now().Add(-time.Hour)
			root := issue(t, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "policy test root"},
				NotBefore: from, NotAfter: from.Add(48 * time.Hour), BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign},
				nil, &rootKey.PublicKey, rootKey)
			inter := issue(t, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "policy test instance"},
				NotBefore: from, NotAfter: from.Add(48 * time.Hour), BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign,
				ExtraExtensions: tc.bundleExt, Policies: tc.bundlePol}, root, &interKey.PublicKey, rootKey)
			doc := func(serial int64, ext []pkix.Extension, pols []x509.OID) *attestation.Document {
				leafKey := p384Key(t)
				leaf := issue(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "policy test enclave"},
					NotBefore: from, NotAfter: from.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
					ExtraExtensions: ext, Policies: pols}, inter, &leafKey.PublicKey, interKey)
				m := f.fields(t)
				m["certificate"] = enc(t, leaf.Raw)
				m["cabundle"] = enc(t, [][]byte{root.Raw, inter.Raw})
				d, err := attestation.Parse(signWith(t, leafKey, enc(t, m)))
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			roots := x509.NewCertPool()
			roots.AddCert(root)
			good, bad := doc(10, nil, tc.goodPol), doc(11, tc.leafExt, nil)
			now := time.Now()
			checkTyped(t, attestation.Verify(bad, roots, now), attestation.ErrChain)
			if err := attestation.Verify(good, roots, now); err != nil {
				t.Fatalf("compliant leaf: %v", err)
			}
			checkTyped(t, attestation.Verify(bad, roots, now), attestation.ErrChain)
		})
	}
}

func p384Key(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issue creates tmpl signed by parent's key (self-signed when parent is
// nil).
func issue(t *testing.T, tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
