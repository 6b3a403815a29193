package attestation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// Chains a review found that the first version of linksVerify proved
// although crypto/x509's Verify (as verifyChainX509 calls it) refuses
// them, against its contract "it only ever proves".

// TestLinksVerifyUnparsedNameConstraints: crypto/x509's
// checkChainConstraints starts from the presence of the nameConstraints
// extension (Certificate.hasNameConstraints: oidInExtensions), while the
// first version of verify.go's hasNameConstraints looked at the parsed
// Permitted*/Excluded* fields. A non-critical nameConstraints extension holding only a
// directoryName subtree (a form crypto/x509 does not parse: no field is
// set, and not being critical it is not in UnhandledCriticalExtensions)
// made the chain "plain" for linksVerify, but crypto/x509 still checks
// every SAN below it and refuses names it cannot match, such as a URI
// without a host (parseURIs in constraints.go).
func TestLinksVerifyUnparsedNameConstraints(t *testing.T) {
	// NameConstraints ::= SEQUENCE { permittedSubtrees [0] { GeneralSubtree
	// { base directoryName [4] Name (an empty SEQUENCE) } } }
	directoryNameOnly := pkix.Extension{Id: []int{2, 5, 29, 30}, Value: []byte{0x30, 0x08, 0xa0, 0x06, 0x30, 0x04, 0xa4, 0x02, 0x30, 0x00}}
	urn, err := url.Parse("urn:example:enclave")
	if err != nil {
		t.Fatal(err)
	}
	c := newTestChain(t)
	c.tmpl[1].ExtraExtensions = []pkix.Extension{directoryNameOnly}
	c.tmpl[3].URIs = []*url.URL{urn}
	doc, roots := c.build(t)
	if !hasNameConstraints(doc.bundle[1]) {
		t.Fatal("the regional certificate lost its nameConstraints extension")
	}
	at := time.Now()
	_, x509Err := verifyChainX509(doc, roots, at)
	if x509Err == nil {
		t.Fatal("crypto/x509 accepts the chain: the test says nothing")
	}
	if linksVerify(doc, 0) {
		t.Errorf("linksVerify(doc, 0) proves a chain crypto/x509 refuses: %v", x509Err)
	}
	chains.reset()
	t.Cleanup(chains.reset)
	if err := verifyChain(doc, roots, at); err == nil {
		t.Errorf("verifyChain accepts a chain crypto/x509 refuses: %v", x509Err)
	}
}

// TestLinksVerifySharedSubjects: crypto/x509's buildChains gives up after
// maxChainSignatureChecks (100) candidate considerations, each counted
// before alreadyInChain and CheckSignatureFrom. A chain of MaxCABundleLen
// CA certificates that all share one subject (distinct keys, which
// linksVerify's first duplicate test let through) and one subject key
// identifier (so findPotentialParents keeps pool order, which puts the
// right issuer last) makes every certificate a candidate at every level:
// crypto/x509 refuses the genuine chain with errSignatureLimit.
func TestLinksVerifySharedSubjects(t *testing.T) {
	const n = MaxCABundleLen
	from := time.Now().Add(-time.Hour)
	name := pkix.Name{CommonName: "review same-named CA"}
	keys := make([]*ecdsa.PrivateKey, n+1)
	for i := range keys {
		keys[i] = testKey(t, elliptic.P384())
	}
	tmpls := make([]*x509.Certificate, n+1) // n CAs root first, then the leaf
	for i := range n {
		tmpls[i] = &x509.Certificate{SerialNumber: big.NewInt(int64(100 + i)), Subject: name,
			NotBefore: from, NotAfter: from.Add(48 * time.Hour), BasicConstraintsValid: true, IsCA: true,
			KeyUsage: x509.KeyUsageCertSign, MaxPathLen: -1, SubjectKeyId: []byte{1}}
	}
	tmpls[n] = &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "review leaf"},
		NotBefore: from, NotAfter: from.Add(3 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	certs := make([]*x509.Certificate, n+1)
	for i, tmpl := range tmpls {
		parent, signer := tmpls[max(i-1, 0)], keys[max(i-1, 0)]
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &keys[i].PublicKey, signer)
		if err != nil {
			t.Fatal(err)
		}
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			t.Fatal(err)
		}
	}
	doc := withDER(&Document{leaf: certs[n], bundle: certs[:n]})
	roots := x509.NewCertPool()
	roots.AddCert(certs[0])
	at := time.Now()
	if !isRoot(doc.bundle[0], roots, at) {
		t.Fatal("the root is not in the pool")
	}
	_, x509Err := verifyChainX509(doc, roots, at)
	if x509Err == nil {
		t.Fatal("crypto/x509 found the chain within its budget: the test says nothing")
	}
	t.Logf("crypto/x509: %v", x509Err)
	if linksVerify(doc, 0) {
		t.Errorf("linksVerify(doc, 0) proves a chain crypto/x509 refuses")
	}
}

// TestVerifyChainLeafInRoots: when the pool holds the leaf itself, crypto/x509's
// Verify answers with the one-certificate chain {leaf}
// (opts.Roots.contains(c) in verify.go) and builds no other, so
// verifyChainX509 finds no chain following the cabundle and refuses;
// linksVerify does not look at the pool, so verifyChain must not take its
// shortcuts then, neither cold nor from the cache. (The caller trusts the
// leaf directly, so this was a contract mismatch, not a way in.)
func TestVerifyChainLeafInRoots(t *testing.T) {
	doc, roots := newTestChain(t).build(t)
	at := time.Now()
	chains.reset()
	t.Cleanup(chains.reset)
	if err := verifyChain(doc, roots, at); err != nil {
		t.Fatalf("the chain without the leaf among the roots: %v", err)
	}
	roots.AddCert(doc.leaf)
	_, x509Err := verifyChainX509(doc, roots, at)
	if x509Err == nil {
		t.Fatal("crypto/x509 accepts the chain: the test says nothing")
	}
	if err := verifyChain(doc, roots, at); err == nil {
		t.Errorf("verifyChain accepts from its cache a chain crypto/x509 refuses: %v", x509Err)
	}
	chains.forget(chainKey(doc, true))
	if err := verifyChain(doc, roots, at); err == nil {
		t.Errorf("verifyChain accepts under a known cabundle a chain crypto/x509 refuses: %v", x509Err)
	}
	chains.reset()
	if err := verifyChain(doc, roots, at); err == nil {
		t.Errorf("verifyChain accepts a chain crypto/x509 refuses: %v", x509Err)
	}
}
