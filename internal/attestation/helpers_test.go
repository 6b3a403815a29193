package attestation_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// simFixture is a simulator whose leaf key the test knows, so tests can
// re-sign payloads they tamper with and isolate one check at a time.
type simFixture struct {
	ca      *nsmsim.CA
	sim     *nsmsim.Simulator
	leafKey *ecdsa.PrivateKey
	now     time.Time
	doc     []byte // a valid document with every optional field set
}

func newSimFixture(t testing.TB) *simFixture {
	t.Helper()
	return newSimFixtureAt(t, time.Now())
}

// newSimFixtureAt is newSimFixture with the simulator's clock at now: two
// fixtures whose documents are verified at one time must share it, or a
// second boundary between their creations leaves the later leaf not yet
// valid at the earlier time.
func newSimFixtureAt(t testing.TB, now time.Time) *simFixture {
	t.Helper()
	return newSimFixtureOf(t, now, attestation.KindEnclave)
}

// newSimFixtureOf is newSimFixtureAt for documents of the given kind: an
// enclave's (pcrs) or a NitroTPM's (nitrotpm_pcrs).
func newSimFixtureOf(t testing.TB, now time.Time, kind attestation.Kind) *simFixture {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f := &simFixture{ca: ca, leafKey: leafKey, now: now}
	f.sim, err = nsmsim.New(ca, nsmsim.Options{
		Kind:       kind,
		Now:        func() time.Time { return f.now },
		NewLeafKey: func() (*ecdsa.PrivateKey, error) { return leafKey, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.doc = f.attest(t, attestation.Request{
		PublicKey: []byte("not a DER key: NSM does not care"),
		UserData:  []byte("user data"),
		Nonce:     []byte("0123456789abcdef"),
	})
	return f
}

func (f *simFixture) attest(t testing.TB, req attestation.Request) []byte {
	t.Helper()
	doc, err := f.sim.Attest(context.Background(), req)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	return doc
}

// coseParts splits a document into its four raw COSE_Sign1 items.
func coseParts(t testing.TB, doc []byte) []cbor.RawMessage {
	t.Helper()
	var parts []cbor.RawMessage
	if err := cbor.Unmarshal(doc, &parts); err != nil || len(parts) != 4 {
		t.Fatalf("not a COSE_Sign1: %v", err)
	}
	return parts
}

// payloadOf returns a document's payload bytes.
func payloadOf(t testing.TB, doc []byte) []byte {
	t.Helper()
	var p []byte
	if err := cbor.Unmarshal(coseParts(t, doc)[2], &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// fields decodes the fixture document's payload map for tampering.
func (f *simFixture) fields(t testing.TB) map[string]cbor.RawMessage {
	t.Helper()
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(payloadOf(t, f.doc), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// enc encodes v as CBOR.
func enc(t testing.TB, v any) cbor.RawMessage {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signPayload wraps payload in an ES384 COSE_Sign1 signed by the fixture's
// leaf key, exactly as the simulator would.
func (f *simFixture) signPayload(t testing.TB, payload []byte) []byte {
	t.Helper()
	return signWith(t, f.leafKey, payload)
}

func signWith(t testing.TB, key *ecdsa.PrivateKey, payload []byte) []byte {
	t.Helper()
	signer, err := cose.NewSigner(cose.AlgorithmES384, key)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := cose.Sign1Untagged(rand.Reader, signer, cose.Headers{
		Protected: cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmES384},
	}, payload, nil)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// resign re-encodes fields as the payload and signs it.
func (f *simFixture) resign(t testing.TB, m map[string]cbor.RawMessage) []byte {
	t.Helper()
	return f.signPayload(t, enc(t, m))
}

// rawCOSE assembles a COSE_Sign1 array from raw items, for shapes go-cose
// would refuse to produce.
func rawCOSE(t testing.TB, protected []byte, unprotected any, payload, sig []byte) []byte {
	t.Helper()
	return enc(t, []any{protected, unprotected, payload, sig})
}

// checkTyped fails unless err is an *attestation.Error with the package
// prefix and, when want is non-nil, matches want.
func checkTyped(t testing.TB, err, want error) {
	t.Helper()
	var typed *attestation.Error
	if !errors.As(err, &typed) {
		t.Fatalf("error %v (%T) is not an *attestation.Error", err, err)
	}
	if !strings.HasPrefix(err.Error(), "attestation: ") {
		t.Errorf("error %q lacks the attestation: prefix", err)
	}
	if want != nil && !errors.Is(err, want) {
		t.Errorf("got %v, want %v", err, want)
	}
}

// readTestdata reads a file under testdata, e.g. "real/marlin-2024.cbor".
func readTestdata(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("failed to read test data: %v", err)
	}
	return b
}
