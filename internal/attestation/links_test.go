package attestation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"testing"
	"time"
)

// testChain is root, two intermediates and a leaf, in NSM's shape
// (P-384 keys, ecdsa-with-SHA384), to be spoiled one way per case.
type testChain struct {
	tmpl [4]*x509.Certificate // root, intermediate, intermediate, leaf
	key  [4]crypto.Signer
	// signer[i] signs certificate i (default key[i-1], the root itself);
	// parent[i] is the issuer template it names (default tmpl[i-1]).
	signer [4]crypto.Signer
	parent [4]*x509.Certificate
}

func newTestChain(t *testing.T) *testChain {
	t.Helper()
	from := time.Now().Add(-time.Hour)
	ca := func(serial int64, name string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: from, NotAfter: from.Add(48 * time.Hour), BasicConstraintsValid: true, IsCA: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, MaxPathLen: -1}
	}
	c := &testChain{tmpl: [4]*x509.Certificate{
		ca(1, "links root"), ca(2, "links regional"), ca(3, "links instance"),
		{SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "links enclave"},
			NotBefore: from, NotAfter: from.Add(3 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature},
	}}
	for i := range c.key {
		c.key[i] = testKey(t, elliptic.P384())
	}
	return c
}

func testKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// build signs the chain and returns the document's certificates (parsed
// and DER) and a pool holding its root.
func (c *testChain) build(t *testing.T) (*Document, *x509.CertPool) {
	t.Helper()
	certs := make([]*x509.Certificate, 4)
	for i, tmpl := range c.tmpl {
		signer, parent := c.signer[i], c.parent[i]
		if signer == nil {
			signer = c.key[max(i-1, 0)]
		}
		if parent == nil {
			parent = c.tmpl[max(i-1, 0)]
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, c.key[i].Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(certs[0])
	return withDER(&Document{leaf: certs[3], bundle: certs[:3]}), roots
}

// withDER fills the DER fields chainKey hashes, so that cache keys are
// those of a parsed document.
func withDER(doc *Document) *Document {
	doc.Certificate = doc.leaf.Raw
	doc.CABundle = make([][]byte, len(doc.bundle))
	for i, c := range doc.bundle {
		doc.CABundle[i] = c.Raw
	}
	return doc
}

// TestLinksVerifyProvesOnlyWhatX509Proves builds chains that differ from
// NSM's in one way each and checks that the shortcut accepts a chain only
// where crypto/x509 accepts it too, and that it does accept the plain
// ones (or Verify would gain nothing).
func TestLinksVerifyProvesOnlyWhatX509Proves(t *testing.T) {
	// policyConstraints (2.5.29.36) with requireExplicitPolicy 0.
	policyConstraints := pkix.Extension{Id: []int{2, 5, 29, 36}, Critical: true, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}}
	unknownCritical := pkix.Extension{Id: []int{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{0x05, 0x00}}
	for _, tc := range []struct {
		name           string
		spoil          func(t *testing.T, c *testChain)
		fast, viaX509  bool
		onlyLeafsLink  bool // linksVerify(doc, n-1), a cabundle verified before
		leafLinkResult bool
	}{
		{name: "NSM's shape", spoil: func(*testing.T, *testChain) {}, fast: true, viaX509: true},
		{name: "path length 2 at the root", spoil: func(_ *testing.T, c *testChain) { c.tmpl[0].MaxPathLen = 2 }, fast: true, viaX509: true},
		{name: "path length 0 on the instance certificate", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[2].MaxPathLen, c.tmpl[2].MaxPathLenZero = 0, true
		}, fast: true, viaX509: true},
		{name: "path length 1 at the root, two intermediates below", spoil: func(_ *testing.T, c *testChain) { c.tmpl[0].MaxPathLen = 1 }},
		{name: "path length 0 on the regional certificate", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[1].MaxPathLen, c.tmpl[1].MaxPathLenZero = 0, true
		}},
		{name: "intermediate not a CA", spoil: func(_ *testing.T, c *testChain) { c.tmpl[1].IsCA = false; c.tmpl[1].MaxPathLen = 0 }},
		{name: "intermediate without basic constraints", spoil: func(_ *testing.T, c *testChain) { c.tmpl[2].BasicConstraintsValid = false }},
		{name: "intermediate may not sign certificates", spoil: func(_ *testing.T, c *testChain) { c.tmpl[2].KeyUsage = x509.KeyUsageDigitalSignature }},
		{name: "leaf signed by another key", spoil: func(t *testing.T, c *testChain) { c.signer[3] = testKey(t, elliptic.P384()) }},
		{name: "intermediate signed by another key", spoil: func(t *testing.T, c *testChain) { c.signer[1] = testKey(t, elliptic.P384()) }},
		{name: "leaf names another issuer", spoil: func(_ *testing.T, c *testChain) {
			other := *c.tmpl[2]
			other.Subject = pkix.Name{CommonName: "links someone else"}
			c.parent[3] = &other
		}},
		{name: "unknown critical extension on an intermediate", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[1].ExtraExtensions = []pkix.Extension{unknownCritical}
		}},
		{name: "unknown critical extension on the leaf", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[3].ExtraExtensions = []pkix.Extension{unknownCritical}
		}},
		{name: "explicit policy required, none given", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[1].ExtraExtensions = []pkix.Extension{policyConstraints}
		}},
		{name: "explicit policy required, leaf's link alone", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[1].ExtraExtensions = []pkix.Extension{policyConstraints}
		}, onlyLeafsLink: true},
		// Left to crypto/x509, which accepts them.
		{name: "leaf signed with SHA-256", spoil: func(_ *testing.T, c *testChain) { c.tmpl[3].SignatureAlgorithm = x509.ECDSAWithSHA256 }, viaX509: true},
		{name: "instance key P-256", spoil: func(t *testing.T, c *testChain) { c.key[2] = testKey(t, elliptic.P256()) }, viaX509: true},
		{name: "name constraints on the root", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[0].PermittedDNSDomains = []string{"enclave.example"}
		}, viaX509: true},
		{name: "name constraints on the root, leaf's link alone", spoil: func(_ *testing.T, c *testChain) {
			c.tmpl[0].PermittedDNSDomains = []string{"enclave.example"}
		}, viaX509: true, onlyLeafsLink: true},
		{name: "leaf's link alone, genuine", spoil: func(*testing.T, *testChain) {}, viaX509: true, onlyLeafsLink: true, leafLinkResult: true},
		{name: "leaf's link alone, forged", spoil: func(t *testing.T, c *testChain) { c.signer[3] = testKey(t, elliptic.P384()) }, onlyLeafsLink: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestChain(t)
			tc.spoil(t, c)
			doc, roots := c.build(t)
			at := time.Now()
			if !isRoot(doc.bundle[0], roots, at) {
				t.Fatal("the chain's root is not found among the roots")
			}
			top, want := 0, tc.fast
			if tc.onlyLeafsLink {
				top, want = len(doc.bundle)-1, tc.leafLinkResult
			}
			fast := linksVerify(doc, top)
			_, err := verifyChainX509(doc, roots, at)
			if fast != want {
				t.Errorf("linksVerify = %v, want %v", fast, want)
			}
			if (err == nil) != tc.viaX509 {
				t.Errorf("crypto/x509: %v, want accepted %v", err, tc.viaX509)
			}
			if fast && err != nil && !tc.onlyLeafsLink {
				t.Errorf("linksVerify accepts a chain crypto/x509 refuses: %v", err)
			}
		})
	}
}

// TestIsRoot: only a certificate that is itself in the pool counts, not
// one the pool's root issued.
func TestIsRoot(t *testing.T) {
	doc, roots := newTestChain(t).build(t)
	other, _ := newTestChain(t).build(t)
	at := time.Now()
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want bool
	}{
		{name: "the root", cert: doc.bundle[0], want: true},
		{name: "an intermediate the root issued", cert: doc.bundle[1]},
		{name: "another root", cert: other.bundle[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := isRoot(tc.cert, roots, at); got != tc.want {
				t.Errorf("isRoot = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLinksVerifyTakesRealChains: the shortcut applies to every real
// document's chain and to the simulator's, whole and leaf alone.
func TestLinksVerifyTakesRealChains(t *testing.T) {
	sim, err := os.ReadFile("testdata/vectors/measured-full.cbor")
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]byte{"simulator": sim}
	for _, name := range []string{"marlin-2024", "veracruz-2022", "nitrite-2021-debug", "evervault-2023-debug"} {
		b, err := os.ReadFile("testdata/real/" + name + ".cbor")
		if err != nil {
			t.Fatal(err)
		}
		docs[name] = b
	}
	for name, raw := range docs {
		t.Run(name, func(t *testing.T) {
			doc, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !linksVerify(doc, 0) {
				t.Error("whole chain not proven")
			}
			if !linksVerify(doc, len(doc.bundle)-1) {
				t.Error("leaf's link not proven")
			}
			// Under another instance's cabundle the leaf's link fails.
			otherName := "marlin-2024"
			if name == otherName {
				otherName = "simulator"
			}
			other, err := Parse(docs[otherName])
			if err != nil {
				t.Fatal(err)
			}
			mixed := *doc
			mixed.bundle = other.bundle
			if linksVerify(&mixed, len(mixed.bundle)-1) || linksVerify(&mixed, 0) {
				t.Error("leaf accepted under another instance's cabundle")
			}
		})
	}
}
