package attestation_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// FuzzParse feeds Parse (and, when it succeeds, Verify and ChainSubjects)
// arbitrary bytes, seeded from the committed vectors and the real
// documents. It asserts no panic, errors that are *attestation.Error with
// the package prefix, and that whatever parses respects NSM's limits.
func FuzzParse(f *testing.F) {
	seeds := 0
	addAll := func(pattern string) {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			seeds++
		}
	}
	addAll(filepath.Join(vectorDir, "*.cbor"))
	addAll(filepath.Join("testdata", "real", "*.cbor"))
	before := seeds
	addAll(filepath.Join("testdata", "nitrotpm", "*.cbor"))
	if seeds == 0 || seeds == before {
		f.Fatal("FuzzParse lacks seeds: testdata/vectors or testdata/nitrotpm is empty")
	}
	pools := []*x509.CertPool{vectorRoots(f), attestation.NitroRoots()}

	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := attestation.Parse(b)
		if err != nil {
			checkTyped(t, err, nil)
			if doc != nil {
				t.Fatal("Parse returned a document with an error")
			}
			return
		}
		if len(doc.PublicKey) > attestation.MaxPublicKeySize || len(doc.UserData) > attestation.MaxUserDataSize ||
			len(doc.Nonce) > attestation.MaxNonceSize || len(doc.CABundle) > attestation.MaxCABundleLen ||
			len(doc.PCRs) > attestation.MaxPCRs || len(doc.NitroTPMPCRs) > attestation.MaxPCRs ||
			doc.ModuleID == "" || len(doc.Certificate) > attestation.MaxCertificateSize {
			t.Fatalf("Parse accepted a document beyond NSM's limits")
		}
		// One kind, its PCR map alone, and a module ID of its form.
		switch {
		case doc.Kind == attestation.KindEnclave && len(doc.PCRs) > 0 && doc.NitroTPMPCRs == nil,
			doc.Kind == attestation.KindNitroTPM && len(doc.NitroTPMPCRs) > 0 && doc.PCRs == nil:
		default:
			t.Fatalf("Parse returned a %v document with %d pcrs and %d nitrotpm_pcrs", doc.Kind, len(doc.PCRs), len(doc.NitroTPMPCRs))
		}
		if err := attestation.ValidateModuleID(doc.Kind, doc.ModuleID); err != nil {
			t.Fatalf("Parse accepted module ID %q: %v", doc.ModuleID, err)
		}
		if _, err := attestation.RecipientKey(doc); err != nil {
			checkTyped(t, err, attestation.ErrPublicKey)
		}
		if got := len(doc.ChainSubjects()); got != 1+len(doc.CABundle) {
			t.Fatalf("ChainSubjects has %d entries for %d certificates", got, 1+len(doc.CABundle))
		}
		for _, pool := range pools {
			if err := attestation.Verify(doc, pool, doc.Timestamp); err != nil {
				checkTyped(t, err, nil)
			}
		}
	})
}
