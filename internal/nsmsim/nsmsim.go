// Package nsmsim simulates the Nitro Secure Module for machines without
// Nitro hardware: it signs attestation documents in NSM's exact format
// (untagged COSE_Sign1, ES384, NSM's payload map and limits) under a
// simulator CA, so that the real verifier (attestation.Verify), devkms and
// kmsproxyd's whole attested path run in development and tests.
//
// Documents it signs chain to the simulator CA's root, never to AWS's, so
// nothing that trusts only attestation.NitroRoots accepts them. Still, the
// simulator must never be linked into a production enclave binary:
// kmsproxyd reaches it only through the nsmsim build tag.
package nsmsim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"sync"
	"time"

	"github.com/veraison/go-cose"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// DefaultModuleID is the module_id documents carry when Options.ModuleID
// is empty, in the shape of a real one ("i-" instance ID "-enc" enclave ID).
const DefaultModuleID = "i-0123456789abcdef0-enc0123456789abcdef"

// DefaultNitroTPMModuleID is the module_id of KindNitroTPM documents when
// Options.ModuleID is empty, in the shape of a real NitroTPM's ("i-"
// instance ID "-tpm" and 16 zeros, as in every real document in
// internal/attestation/testdata/nitrotpm).
const DefaultNitroTPMModuleID = "i-0123456789abcdef0-tpm0000000000000000"

// leafRenewBefore: a leaf is replaced once less than this much of its life
// remains, so every document stays verifiable for at least an hour after
// it is signed, well beyond kmsproxyd's --attestation-ttl (5m) plus devkms's
// --max-attestation-age (5m).
const leafRenewBefore = time.Hour

// Options configures a Simulator.
type Options struct {
	// Kind is the kind of document to sign: attestation.KindEnclave (the
	// zero value means it too) as an enclave's NSM does, with pcrs 0-15, or
	// attestation.KindNitroTPM as the Nitro Hypervisor does for an
	// instance's NitroTPM, with nitrotpm_pcrs 0-23 (internal/nitrotpmsim
	// puts this behind a simulated TPM).
	Kind attestation.Kind
	// PCRs maps indexes (0-15, or 0-23 for a NitroTPM) to 48-byte values,
	// e.g. from LoadMeasurements. Indexes not given are zero; nil gives all
	// zeros, which is what a debug-mode enclave reports for PCR0, 1, 2
	// and 8.
	PCRs map[int][]byte
	// ModuleID is the module_id; empty means DefaultModuleID (or
	// DefaultNitroTPMModuleID). It must have the kind's form
	// (attestation.ValidateModuleID).
	ModuleID string
	// Now is the clock for timestamps and leaf validity; nil means time.Now.
	Now func() time.Time
	// NewLeafKey makes the key of each new leaf certificate; nil means a
	// fresh random P-384 key. Test-vector generators pass a fixed key.
	NewLeafKey func() (*ecdsa.PrivateKey, error)
}

// Simulator is an attestation.Attester that signs documents as NSM (or,
// with Options.Kind, the Nitro Hypervisor for a NitroTPM) does.
// It is safe for concurrent use.
type Simulator struct {
	ca         *CA
	now        func() time.Time
	newLeafKey func() (*ecdsa.PrivateKey, error)
	moduleID   string
	head       []byte // encoded start of the payload map
	pcrsEntry  []byte // encoded pcrs key and map

	mu   sync.Mutex
	leaf *leaf
}

var _ attestation.Attester = (*Simulator)(nil)

// leaf is a signing certificate and what Attest needs from it.
type leaf struct {
	cert   *x509.Certificate
	signer cose.Signer
	chain  []byte // encoded certificate and cabundle entries
}

// New creates a simulator signing under ca.
func New(ca *CA, opts Options) (*Simulator, error) {
	if ca == nil {
		return nil, fmt.Errorf("nsmsim: no CA given")
	}
	s := &Simulator{
		ca:         ca,
		now:        opts.Now,
		newLeafKey: opts.NewLeafKey,
		moduleID:   opts.ModuleID,
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.newLeafKey == nil {
		s.newLeafKey = func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }
	}
	kind := opts.Kind
	switch kind {
	case 0:
		kind = attestation.KindEnclave
	case attestation.KindEnclave, attestation.KindNitroTPM:
	default:
		return nil, fmt.Errorf("nsmsim: unknown document kind %d", kind)
	}
	if s.moduleID == "" {
		s.moduleID = DefaultModuleID
		if kind == attestation.KindNitroTPM {
			s.moduleID = DefaultNitroTPMModuleID
		}
	}
	if len(s.moduleID) > attestation.MaxModuleIDLen {
		return nil, fmt.Errorf("nsmsim: module ID is %d bytes; the limit is %d", len(s.moduleID), attestation.MaxModuleIDLen)
	}
	if err := attestation.ValidateModuleID(kind, s.moduleID); err != nil {
		return nil, fmt.Errorf("nsmsim: %w", err)
	}
	pcrs := make([][]byte, kind.PCRCount())
	for i := range pcrs {
		pcrs[i] = make([]byte, attestation.PCRSize)
	}
	for i, v := range opts.PCRs {
		if i < 0 || i >= len(pcrs) {
			return nil, fmt.Errorf("nsmsim: PCR index %d is out of range 0-%d for a %s document", i, len(pcrs)-1, kind)
		}
		if len(v) != attestation.PCRSize {
			return nil, fmt.Errorf("nsmsim: PCR%d is %d bytes; it must be %d", i, len(v), attestation.PCRSize)
		}
		pcrs[i] = append([]byte(nil), v...)
	}
	s.head, s.pcrsEntry = encodeStatic(s.moduleID, kind.Field(), pcrs)
	return s, nil
}

// Attest signs a document carrying req, with the current time. It refuses
// requests beyond NSM's limits (req.Validate).
func (s *Simulator) Attest(ctx context.Context, req attestation.Request) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := s.now()
	ms := now.UnixMilli()
	if ms <= 0 {
		return nil, fmt.Errorf("nsmsim: the clock reads %v, before 1970", now)
	}
	lf, err := s.leafAt(now)
	if err != nil {
		return nil, err
	}
	msg := cose.UntaggedSign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmES384},
		},
		Payload: encodePayload(s.head, s.pcrsEntry, lf.chain, uint64(ms), req),
	}
	if err := msg.Sign(nil, nil, lf.signer); err != nil {
		return nil, fmt.Errorf("nsmsim: failed to sign the document: %w", err)
	}
	doc, err := msg.MarshalCBOR()
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to encode the document: %w", err)
	}
	return doc, nil
}

// leafAt returns a leaf valid at now with at least leafRenewBefore left,
// issuing a new one when needed. Concurrent callers share one issuance.
func (s *Simulator) leafAt(now time.Time) (*leaf, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lf := s.leaf; lf != nil && !now.Before(lf.cert.NotBefore) && now.Add(leafRenewBefore).Before(lf.cert.NotAfter) {
		return lf, nil
	}
	lf, err := s.issueLeaf(now)
	if err != nil {
		return nil, err
	}
	s.leaf = lf
	return lf, nil
}

func (s *Simulator) issueLeaf(now time.Time) (*leaf, error) {
	inter := s.ca.intermediate
	notBefore := now.UTC().Truncate(time.Second)
	notAfter := notBefore.Add(LeafLifetime)
	if notAfter.After(inter.NotAfter) {
		notAfter = inter.NotAfter
	}
	if now.Before(inter.NotBefore) || !now.Add(leafRenewBefore).Before(notAfter) {
		return nil, fmt.Errorf("nsmsim: %w (valid %s to %s)", errCAExpired,
			inter.NotBefore.Format(time.RFC3339), inter.NotAfter.Format(time.RFC3339))
	}
	key, err := s.newLeafKey()
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to generate a leaf key: %w", err)
	}
	if key == nil || key.Curve != elliptic.P384() {
		return nil, fmt.Errorf("nsmsim: leaf keys must be ECDSA P-384")
	}
	// Shaped like NSM's leaves: C/ST/L/O/OU/CN with CN "<module_id>.<region>.aws",
	// CA:FALSE, digitalSignature and nonRepudiation.
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			Country:            []string{"US"},
			Province:           []string{"Washington"},
			Locality:           []string{"Seattle"},
			Organization:       []string{simOrg},
			OrganizationalUnit: []string{"kmsproxy"},
			CommonName:         s.moduleID + ".sim.aws",
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
	}
	cert, err := issue(tmpl, inter, &key.PublicKey, s.ca.key)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to issue a leaf certificate: %w", err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES384, rfc6979{key})
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to create a signer: %w", err)
	}
	return &leaf{
		cert:   cert,
		signer: signer,
		// cabundle is root first, then each issuer down to the leaf's.
		chain: encodeChain(cert.Raw, [][]byte{s.ca.root.Raw, inter.Raw}),
	}, nil
}
