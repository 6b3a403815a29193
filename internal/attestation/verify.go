package attestation

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// Verify checks that doc, as returned by Parse, is an authentic attestation
// document of its kind at time at:
//
//  1. its exported fields still match the signed payload;
//  2. digest is SHA384 and the PCRs are exactly 0-15 (an enclave's pcrs) or
//     0-23 (a NitroTPM's nitrotpm_pcrs) of 48 bytes each;
//  3. the leaf certificate's key is ECDSA P-384;
//  4. the COSE_Sign1 ES384 signature verifies with that key (go-cose, with
//     circl's P-384 arithmetic: see p384.go);
//  5. every certificate of the chain is valid at at;
//  6. the chain certificate → cabundle[n-1] → ... → cabundle[1] verifies up
//     to cabundle[0], which must be one of roots.
//
// It does not judge freshness (compare doc.Timestamp with your clock) nor
// the PCR values (compare doc.Measurements() with your policy), nor
// public_key, which need not be a key at all (a NitroTPM document made for
// another purpose may carry an EC point; KMS needs RecipientKey's RSA key).
// Both kinds chain to the same AWS Nitro root. A nil roots is
// refused: pass NitroRoots() for documents from real hardware. roots is a
// set of trusted certificates: a constraint function attached with
// x509.CertPool.AddCertWithConstraint is not applied (the shortcuts below
// cannot see it); filter the roots before building the pool instead.
//
// Chains that verified once are remembered (by the hash of their
// certificates, at most maxCachedChains of them), so verifying further
// documents from the same enclave costs one ES384 verification, and a
// first document from another enclave of a known instance (a new leaf
// under a known cabundle) costs two (see linksVerify); the root's
// presence in roots and every certificate's validity at at are checked on
// every call. A chain never seen costs one verification per certificate,
// checked in parallel. Verify is safe for concurrent use. Failures are
// *Error values naming the check.
func Verify(doc *Document, roots *x509.CertPool, at time.Time) error {
	if doc == nil || doc.payload == nil || doc.leaf == nil {
		return newError(CheckMalformed, "document did not come from Parse", nil)
	}
	if err := checkUnchanged(doc); err != nil {
		return err
	}
	if doc.Digest != "SHA384" {
		return newError(CheckDigest, fmt.Sprintf("digest is %.16q; Nitro Enclaves use SHA384", doc.Digest), nil)
	}
	if err := checkPCRs(doc.Kind, doc.Measurements()); err != nil {
		return err
	}
	pub, ok := doc.leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P384() {
		return newError(CheckLeafKey, fmt.Sprintf("leaf certificate key is %s, not ECDSA P-384", keyName(doc.leaf)), nil)
	}
	if err := verifySignature(doc, pub); err != nil {
		return err
	}
	if roots == nil {
		return newError(CheckChain, "no trusted roots given", nil)
	}
	if err := checkValidity(doc, at); err != nil {
		return err
	}
	return verifyChain(doc, roots, at)
}

// checkUnchanged re-decodes the signed payload and compares it with the
// exported fields, so a caller cannot verify one thing and read another.
func checkUnchanged(doc *Document) error {
	signed, err := decodePayload(doc.payload)
	if err != nil {
		return err
	}
	same := signed.Kind == doc.Kind &&
		signed.ModuleID == doc.ModuleID &&
		signed.Digest == doc.Digest &&
		signed.Timestamp.Equal(doc.Timestamp) &&
		bytes.Equal(signed.Certificate, doc.Certificate) &&
		bytes.Equal(signed.PublicKey, doc.PublicKey) &&
		bytes.Equal(signed.UserData, doc.UserData) &&
		bytes.Equal(signed.Nonce, doc.Nonce) &&
		len(signed.CABundle) == len(doc.CABundle) &&
		samePCRs(signed.PCRs, doc.PCRs) && samePCRs(signed.NitroTPMPCRs, doc.NitroTPMPCRs)
	for i := 0; same && i < len(signed.CABundle); i++ {
		same = bytes.Equal(signed.CABundle[i], doc.CABundle[i])
	}
	if !same {
		return newError(CheckMalformed, "document fields differ from the signed payload (modified after Parse)", nil)
	}
	return nil
}

// samePCRs reports whether a and b hold the same PCRs (nil and empty are
// the same).
func samePCRs(a, b map[int][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i, v := range a {
		w, ok := b[i]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// checkPCRs requires exactly the kind's PCRs: 0-15 for an enclave, 0-23 for
// a NitroTPM, each a SHA-384 value.
func checkPCRs(kind Kind, pcrs map[int][]byte) error {
	n := kind.PCRCount()
	if len(pcrs) != n {
		return newError(CheckPCRs, fmt.Sprintf("document has %d %s; a %s reports %d", len(pcrs), kind.Field(), kind, n), nil)
	}
	for i := range n {
		v, ok := pcrs[i]
		if !ok {
			return newError(CheckPCRs, fmt.Sprintf("PCR%d is missing from %s", i, kind.Field()), nil)
		}
		if len(v) != PCRSize {
			return newError(CheckPCRs, fmt.Sprintf("PCR%d is %d bytes; SHA-384 PCRs are %d", i, len(v), PCRSize), nil)
		}
	}
	return nil
}

func keyName(c *x509.Certificate) string {
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + pub.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func verifySignature(doc *Document, pub *ecdsa.PublicKey) error {
	rawProtected, err := cbor.Marshal(doc.protected)
	if err != nil {
		return newError(CheckMalformed, "failed to encode the protected header", err)
	}
	msg := cose.Sign1Message{
		Headers: cose.Headers{
			RawProtected: rawProtected,
			Protected:    cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmES384},
		},
		Payload:   doc.payload,
		Signature: doc.signature,
	}
	if err := msg.Verify(nil, es384Verifier{pub}); err != nil {
		return newError(CheckSignature, "COSE_Sign1 ES384 signature does not verify with the leaf certificate's key", err)
	}
	return nil
}

// checkValidity checks the leaf and every cabundle certificate at at, so
// expiry is reported as such rather than as a broken chain.
func checkValidity(doc *Document, at time.Time) error {
	if err := validAt(doc.leaf, at); err != nil {
		return err
	}
	for i := len(doc.bundle) - 1; i >= 0; i-- {
		if err := validAt(doc.bundle[i], at); err != nil {
			return err
		}
	}
	return nil
}

func validAt(c *x509.Certificate, at time.Time) error {
	const layout = time.RFC3339
	if at.After(c.NotAfter) {
		return newError(CheckExpired, fmt.Sprintf("certificate %.120q expired at %s; checked at %s",
			c.Subject.String(), c.NotAfter.UTC().Format(layout), at.UTC().Format(layout)), nil)
	}
	if at.Before(c.NotBefore) {
		return newError(CheckNotYetValid, fmt.Sprintf("certificate %.120q is valid from %s; checked at %s",
			c.Subject.String(), c.NotBefore.UTC().Format(layout), at.UTC().Format(layout)), nil)
	}
	return nil
}

// anyUsage: NSM certificates carry no extended key usage.
var anyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}

// verifyChain verifies leaf → cabundle[n-1] → ... → cabundle[1] → root
// (signatures, CA flags, path lengths, key usage, validity) and requires
// the chain to follow the cabundle in NSM's order with cabundle[0] as the
// trusted root: by linksVerify for the plain chains NSM issues, by
// crypto/x509 otherwise or when linksVerify does not accept the chain.
func verifyChain(doc *Document, roots *x509.CertPool, at time.Time) error {
	key, bundleKey := chainKey(doc, true), chainKey(doc, false)
	// Signatures and constraints do not depend on time or on the pool; on
	// a cache hit, re-check that the anchoring root is still trusted and
	// valid at at (every certificate's validity was checked already).
	// crypto/x509 finds no chain following the cabundle when the leaf is
	// itself in roots (it answers with the leaf alone): no shortcut then.
	leafIsRoot := isRoot(doc.leaf, roots, at)
	if root := chains.get(key); root != nil && !leafIsRoot && isRoot(root, roots, at) {
		return nil
	}
	if root := chains.get(bundleKey); root != nil && !leafIsRoot && isRoot(root, roots, at) && linksVerify(doc, len(doc.bundle)-1) {
		chains.put(key, root)
		return nil
	}
	if root := doc.bundle[0]; !leafIsRoot && isRoot(root, roots, at) && linksVerify(doc, 0) {
		chains.put(key, root)
		chains.put(bundleKey, root)
		return nil
	}
	root, err := verifyChainX509(doc, roots, at)
	if err != nil {
		return err
	}
	chains.put(key, root)
	chains.put(bundleKey, root)
	return nil
}

// verifyChainX509 is the whole verification by crypto/x509, for the chains
// linksVerify does not prove (and to name what is wrong with a chain that
// does not verify). It returns the anchoring root.
func verifyChainX509(doc *Document, roots *x509.CertPool, at time.Time) (*x509.Certificate, error) {
	inter := x509.NewCertPool()
	for _, c := range doc.bundle[1:] {
		inter.AddCert(c)
	}
	found, err := doc.leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   at,
		KeyUsages:     anyUsage,
	})
	if err != nil {
		return nil, chainError(err, at)
	}
	for _, chain := range found {
		if followsBundle(chain, doc) {
			return chain[len(chain)-1], nil
		}
	}
	return nil, newError(CheckChain, "the verified chain does not follow the cabundle (root first, then each issuer down to the leaf's)", nil)
}

// isRoot reports whether c itself is one of roots (not merely issued by
// one, nor a certificate with the same name and key): crypto/x509 answers
// a certificate found in the pool (compared byte for byte) with the chain
// of that certificate alone, without a signature check.
func isRoot(c *x509.Certificate, roots *x509.CertPool, at time.Time) bool {
	found, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: anyUsage})
	return err == nil && len(found) == 1 && len(found[0]) == 1 && found[0][0] == c
}

// linksVerify reports whether the links of doc's chain from the leaf up to
// cabundle[top] are proven valid by the checks crypto/x509's Verify would
// make, with verifyP384 for the signatures. The chain, leaf first, is
// leaf, cabundle[n-1], ..., cabundle[0]; top 0 is the whole chain up to the
// root, top n-1 the leaf's own link alone (for a cabundle that verified
// before under another leaf: path lengths do not count the leaf, so that
// verification settled everything above it).
//
// It only ever proves: false means "not shown here", and the caller then
// lets crypto/x509 decide and name the failure. So it accepts only plain
// chains, where its checks are exactly crypto/x509's (isValid and
// CheckSignatureFrom in crypto/x509/verify.go and x509.go): every
// signature ecdsa-with-SHA384 by a P-384 key; each issuer's subject the
// child's issuer name, a CA (basic constraints with cA) allowed to sign
// certificates when it states key usages, its path length constraint not
// exceeded by the intermediates below it; no certificate with a critical
// extension crypto/x509 does not handle, name constraints (they would
// apply to the names below), a policy constraint requiring an explicit
// policy (RFC 5280 section 6.1.5: the certificate policies would matter)
// or policy mappings; no two certificates with one subject. Validity at the verification
// time is checkValidity's, before. (No certificate of the five real
// documents in testdata/real, 2021 to 2024, falls outside this.)
//
// The signatures are independent of each other; with more than one to
// check they are checked in parallel, so a cold real chain (four
// certificate signatures) costs two verifications' time on two cores.
func linksVerify(doc *Document, top int) bool {
	n := len(doc.bundle)
	if top < 0 || top >= n {
		return false
	}
	chain := make([]*x509.Certificate, 0, n+1)
	chain = append(chain, doc.leaf)
	for i := n - 1; i >= 0; i-- {
		chain = append(chain, doc.bundle[i])
	}
	// Name constraints and policy constraints anywhere above a certificate
	// apply to it: plainness is the whole chain's, whatever top is.
	for k, c := range chain {
		if !plain(c) {
			return false
		}
		// Two certificates with one name: crypto/x509 may refuse the
		// chain as a loop (alreadyInChain) or give up after its budget of
		// candidate issuers (maxChainSignatureChecks), which certificates
		// sharing a name multiply. NSM's chains never repeat a name.
		for _, other := range chain[:k] {
			if bytes.Equal(c.RawSubject, other.RawSubject) {
				return false
			}
		}
	}
	last := n - top // chain[last] is cabundle[top], the highest issuer checked
	for k := 1; k <= last; k++ {
		c := chain[k]
		// c issues chain[k-1]; k-1 intermediates lie below it.
		if !bytes.Equal(chain[k-1].RawIssuer, c.RawSubject) || !c.BasicConstraintsValid || !c.IsCA ||
			(c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0) ||
			(c.MaxPathLen >= 0 && k-1 > c.MaxPathLen) || chain[k-1].SignatureAlgorithm != x509.ECDSAWithSHA384 {
			return false
		}
		if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P384() {
			return false
		}
	}
	ok := make([]bool, last)
	check := func(k int) {
		digest := sha512.Sum384(chain[k].RawTBSCertificate)
		ok[k] = verifyP384ASN1(chain[k+1].PublicKey.(*ecdsa.PublicKey), digest[:], chain[k].Signature)
	}
	var wg sync.WaitGroup
	for k := 1; k < last; k++ {
		wg.Go(func() { check(k) })
	}
	check(0)
	wg.Wait()
	for _, v := range ok {
		if !v {
			return false
		}
	}
	return true
}

// plain reports whether c has none of the features linksVerify leaves to
// crypto/x509.
func plain(c *x509.Certificate) bool {
	return len(c.UnhandledCriticalExtensions) == 0 && !hasNameConstraints(c) && !requiresExplicitPolicy(c) && len(c.PolicyMappings) == 0
}

// oidNameConstraints is the nameConstraints extension (RFC 5280 section
// 4.2.1.10).
var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

// hasNameConstraints reports whether c carries the nameConstraints
// extension at all, parsed or not: crypto/x509 checks the names below any
// certificate that has it (checkChainConstraints), also for forms it does
// not parse into Certificate's fields (a directoryName subtree, say).
func hasNameConstraints(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidNameConstraints) {
			return true
		}
	}
	return false
}

func requiresExplicitPolicy(c *x509.Certificate) bool {
	return c.RequireExplicitPolicy > 0 || c.RequireExplicitPolicyZero
}

func chainError(err error, at time.Time) error {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil {
		if e := validAt(invalid.Cert, at); e != nil {
			return e
		}
	}
	var unknown x509.UnknownAuthorityError
	if errors.As(err, &unknown) {
		return newError(CheckChain, "the chain does not lead to a trusted root", err)
	}
	return newError(CheckChain, "failed to verify the certificate chain", err)
}

func followsBundle(chain []*x509.Certificate, doc *Document) bool {
	n := len(doc.bundle)
	if len(chain) != n+1 || !chain[0].Equal(doc.leaf) {
		return false
	}
	for i := 1; i < n; i++ {
		if !chain[i].Equal(doc.bundle[n-i]) {
			return false
		}
	}
	return bytes.Equal(chain[n].Raw, doc.bundle[0].Raw)
}

// maxCachedChains bounds the verified-chain cache: one entry per distinct
// leaf (NSM issues a new leaf every few hours per enclave) and one per
// distinct cabundle (per parent instance), a few hundred bytes each.
const maxCachedChains = 256

type chainCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*x509.Certificate // chain hash -> anchoring root
}

var chains = &chainCache{m: make(map[[sha256.Size]byte]*x509.Certificate)}

func (c *chainCache) get(k [sha256.Size]byte) *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

func (c *chainCache) put(k [sha256.Size]byte, root *x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCachedChains {
		for old := range c.m { // evict an arbitrary entry
			delete(c.m, old)
			break
		}
	}
	c.m[k] = root
}

func (c *chainCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// chainKey hashes the cabundle, each certificate with its length, and
// with withLeaf the leaf first; the two kinds of key cannot collide.
func chainKey(doc *Document, withLeaf bool) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	ders := doc.CABundle
	if withLeaf {
		h.Write([]byte("leaf+bundle"))
		ders = append([][]byte{doc.Certificate}, doc.CABundle...)
	} else {
		h.Write([]byte("bundle"))
	}
	for _, der := range ders {
		binary.BigEndian.PutUint32(n[:], uint32(len(der)))
		h.Write(n[:])
		h.Write(der)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}
