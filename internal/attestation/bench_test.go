package attestation

import (
	"crypto/x509"
	"os"
	"testing"
)

// Benchmarks live in the internal test package so the cold variants can
// empty the verified-chain cache. The simulator document is a committed
// vector (root → intermediate → leaf); the real one is marlin-2024.cbor
// (AWS root → 3 intermediates → leaf), an enclave's; the real NitroTPM one
// (an instance's, 24 PCRs, same chain shape) is vaportpm_i-030a1f233f8348690.cbor.

type benchDoc struct {
	name  string
	raw   []byte
	roots *x509.CertPool
}

func benchDocs(b *testing.B) []benchDoc {
	b.Helper()
	sim, err := os.ReadFile("testdata/vectors/measured-full.cbor")
	if err != nil {
		b.Fatal(err)
	}
	rootPEM, err := os.ReadFile("testdata/vectors/root.pem")
	if err != nil {
		b.Fatal(err)
	}
	simRoots := x509.NewCertPool()
	if !simRoots.AppendCertsFromPEM(rootPEM) {
		b.Fatal("no root in testdata/vectors/root.pem")
	}
	real, err := os.ReadFile("testdata/real/marlin-2024.cbor")
	if err != nil {
		b.Fatal(err)
	}
	tpm, err := os.ReadFile("testdata/nitrotpm/vaportpm_i-030a1f233f8348690.cbor")
	if err != nil {
		b.Fatal(err)
	}
	return []benchDoc{
		{name: "real", raw: real, roots: NitroRoots()},
		{name: "real-nitrotpm", raw: tpm, roots: NitroRoots()},
		{name: "simulator", raw: sim, roots: simRoots},
	}
}

func BenchmarkParse(b *testing.B) {
	for _, d := range benchDocs(b) {
		b.Run(d.name, func(b *testing.B) {
			b.SetBytes(int64(len(d.raw)))
			for b.Loop() {
				if _, err := Parse(d.raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify measures Verify alone. "warm" is the steady state (the
// chain was verified before, as for every further document from the same
// enclave leaf); "new-leaf" forgets the leaf but not its cabundle, as for
// the first document of another enclave on a known instance (the leaf's
// signature is checked too); "cold" empties the chain cache each time, so
// every certificate signature is checked (in parallel: see linksVerify).
func BenchmarkVerify(b *testing.B) {
	for _, d := range benchDocs(b) {
		doc, err := Parse(d.raw)
		if err != nil {
			b.Fatal(err)
		}
		if err := Verify(doc, d.roots, doc.Timestamp); err != nil {
			b.Fatal(err)
		}
		b.Run(d.name+"/warm", func(b *testing.B) {
			for b.Loop() {
				if err := Verify(doc, d.roots, doc.Timestamp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(d.name+"/new-leaf", func(b *testing.B) {
			for b.Loop() {
				chains.forget(chainKey(doc, true))
				if err := Verify(doc, d.roots, doc.Timestamp); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(d.name+"/cold", func(b *testing.B) {
			for b.Loop() {
				chains.reset()
				if err := Verify(doc, d.roots, doc.Timestamp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseVerify is what a verifier pays per received document in
// the steady state.
func BenchmarkParseVerify(b *testing.B) {
	for _, d := range benchDocs(b) {
		b.Run(d.name, func(b *testing.B) {
			for b.Loop() {
				doc, err := Parse(d.raw)
				if err != nil {
					b.Fatal(err)
				}
				if err := Verify(doc, d.roots, doc.Timestamp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// forget drops one entry, for the benchmark's new-leaf case.
func (c *chainCache) forget(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}
