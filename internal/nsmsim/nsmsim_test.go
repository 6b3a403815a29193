package nsmsim_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

func newCA(t testing.TB) *nsmsim.CA {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func newSim(t testing.TB, ca *nsmsim.CA, opts nsmsim.Options) *nsmsim.Simulator {
	t.Helper()
	s, err := nsmsim.New(ca, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func attest(t testing.TB, s *nsmsim.Simulator, req attestation.Request) []byte {
	t.Helper()
	doc, err := s.Attest(context.Background(), req)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	return doc
}

// parseVerify parses doc and verifies it against ca at its own timestamp.
func parseVerify(t testing.TB, ca *nsmsim.CA, doc []byte) *attestation.Document {
	t.Helper()
	d, err := attestation.Parse(doc)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := attestation.Verify(d, ca.Roots(), d.Timestamp); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return d
}

// clock is a settable time source safe for concurrent use.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func pcrValue(label string) []byte {
	sum := sha512.Sum384([]byte(label))
	return sum[:]
}

func TestRoundTrip(t *testing.T) {
	ca := newCA(t)
	measured := map[int][]byte{0: pcrValue("pcr0"), 1: pcrValue("pcr1"), 2: pcrValue("pcr2"), 8: pcrValue("pcr8")}
	tests := []struct {
		name     string
		opts     nsmsim.Options
		req      attestation.Request
		wantPCRs map[int][]byte // the non-zero ones
	}{
		{name: "debug mode, no optional fields", opts: nsmsim.Options{}},
		{name: "every field", opts: nsmsim.Options{ModuleID: "i-0aaaaaaaaaaaaaaaa-enc0bbbbbbbbbbbbbbb", PCRs: measured},
			req:      attestation.Request{PublicKey: []byte("pk"), UserData: []byte("ud"), Nonce: []byte("nonce")},
			wantPCRs: measured},
		{name: "fields at NSM's limits", req: attestation.Request{
			PublicKey: bytes.Repeat([]byte{1}, attestation.MaxPublicKeySize),
			UserData:  bytes.Repeat([]byte{2}, attestation.MaxUserDataSize),
			Nonce:     bytes.Repeat([]byte{3}, attestation.MaxNonceSize),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Truncate(time.Millisecond)
			doc := parseVerify(t, ca, attest(t, newSim(t, ca, tt.opts), tt.req))
			wantID := tt.opts.ModuleID
			if wantID == "" {
				wantID = nsmsim.DefaultModuleID
			}
			if doc.ModuleID != wantID || doc.Digest != "SHA384" {
				t.Errorf("module_id, digest = %q, %q; want %q, SHA384", doc.ModuleID, doc.Digest, wantID)
			}
			if doc.Timestamp.Before(before) || doc.Timestamp.After(time.Now()) {
				t.Errorf("timestamp %v is not now", doc.Timestamp)
			}
			wantPCRs := map[int][]byte{}
			for i := range attestation.PCRCount {
				wantPCRs[i] = make([]byte, attestation.PCRSize)
				if v, ok := tt.wantPCRs[i]; ok {
					wantPCRs[i] = v
				}
			}
			if diff := cmp.Diff(wantPCRs, doc.PCRs); diff != "" {
				t.Errorf("PCRs (-want +got):\n%s", diff)
			}
			got := attestation.Request{PublicKey: doc.PublicKey, UserData: doc.UserData, Nonce: doc.Nonce}
			if diff := cmp.Diff(tt.req, got); diff != "" {
				t.Errorf("optional fields (-want +got):\n%s", diff)
			}
			leaf := doc.LeafCertificate()
			if got := leaf.NotAfter.Sub(leaf.NotBefore); got != nsmsim.LeafLifetime {
				t.Errorf("leaf lives %v, want %v", got, nsmsim.LeafLifetime)
			}
			if !strings.Contains(leaf.Subject.CommonName, doc.ModuleID) {
				t.Errorf("leaf CN %q does not name the module", leaf.Subject.CommonName)
			}
			if len(doc.CABundle) != 2 || !bytes.Equal(doc.CABundle[0], ca.RootCertificate().Raw) {
				t.Errorf("cabundle has %d certificates; want root first, then the intermediate", len(doc.CABundle))
			}
			// Simulator documents are never trusted under the AWS root.
			if err := attestation.Verify(doc, attestation.NitroRoots(), doc.Timestamp); !errors.Is(err, attestation.ErrChain) {
				t.Errorf("Verify with the AWS root: got %v, want ErrChain", err)
			}
		})
	}
}

// TestEnvelopeBytes pins the COSE_Sign1 framing NSM emits: untagged array
// of 4, protected bstr {1: -35}, empty unprotected map, payload bstr with
// a 2-byte length, 96-byte signature.
func TestEnvelopeBytes(t *testing.T) {
	doc := attest(t, newSim(t, newCA(t), nsmsim.Options{}), attestation.Request{})
	wantPrefix := []byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59}
	if !bytes.HasPrefix(doc, wantPrefix) {
		t.Fatalf("document starts % x, want % x", doc[:len(wantPrefix)], wantPrefix)
	}
	n := int(doc[8])<<8 | int(doc[9])
	payload := doc[10 : 10+n]
	if payload[0] != 0xbf || payload[len(payload)-1] != 0xff {
		t.Errorf("payload map is not indefinite-length: starts 0x%02x ends 0x%02x", payload[0], payload[len(payload)-1])
	}
	sig := doc[10+n:]
	if !bytes.Equal(sig[:2], []byte{0x58, 0x60}) || len(sig) != 2+96 {
		t.Errorf("signature item is % x... (%d bytes), want a 96-byte bstr", sig[:2], len(sig))
	}
}

// TestShapeMatchesRealDocuments compares the simulator's output, item by
// item, with every real document: same COSE framing, same payload keys in
// the same order, same major types and head forms, PCRs as 16 entries of
// 48 bytes keyed 0-15 in order, and optional fields null or bytes exactly
// where the real one has them (the simulator is asked for the same
// pattern). The one intended difference: the simulator's outer payload map
// has indefinite length, as NSM's output has since 2025, while these
// samples (2021-2024) are definite.
func TestShapeMatchesRealDocuments(t *testing.T) {
	ca := newCA(t)
	sims := map[string]*nsmsim.Simulator{
		"real":     newSim(t, ca, nsmsim.Options{}),
		"nitrotpm": newSim(t, ca, nsmsim.Options{Kind: attestation.KindNitroTPM}),
	}
	for _, name := range []string{"real/nitrite-2021-debug.cbor", "real/veracruz-2022.cbor", "real/evervault-2023-debug.cbor", "real/marlin-2024.cbor",
		"nitrotpm/vaportpm_i-030a1f233f8348690.cbor", "nitrotpm/vaportpm_i-0082f89b039c97a0f.cbor", "nitrotpm/vaportpm_i-01cfb383223e42522.cbor"} {
		sim := sims[filepath.Dir(name)]
		t.Run(name, func(t *testing.T) {
			realDoc, err := os.ReadFile(filepath.Join("..", "attestation", "testdata", filepath.FromSlash(name)))
			if err != nil {
				t.Fatal(err)
			}
			realEnv, realPayload := splitDocument(t, realDoc)

			// Ask the simulator for the real document's optional-field pattern.
			var req attestation.Request
			for _, e := range entries(realPayload) {
				var v []byte
				if e.value.major == 2 {
					v = bytes.Repeat([]byte{0x42}, len(e.value.content))
				}
				switch e.key {
				case "public_key":
					req.PublicKey = v
				case "user_data":
					req.UserData = v
				case "nonce":
					req.Nonce = v
				}
			}
			simEnv, simPayload := splitDocument(t, attest(t, sim, req))

			if got, want := describeEnvelope(simEnv), describeEnvelope(realEnv); got != want {
				t.Errorf("COSE envelope: simulator %s, real %s", got, want)
			}
			if !simPayload.indefinite() {
				t.Error("simulator payload map is definite-length; NSM uses indefinite length since 2025")
			}
			if diff := cmp.Diff(describePayload(t, realPayload), describePayload(t, simPayload)); diff != "" {
				t.Errorf("payload shape (-real +simulator):\n%s", diff)
			}
		})
	}
}

// splitDocument returns the COSE array and the decoded payload map.
func splitDocument(t testing.TB, doc []byte) (item, item) {
	t.Helper()
	env, err := parseItem(doc)
	if err != nil {
		t.Fatal(err)
	}
	if env.major != 4 || len(env.children) != 4 {
		t.Fatalf("not a COSE_Sign1 array: major %d, %d items", env.major, len(env.children))
	}
	payload, err := parseItem(env.children[2].content)
	if err != nil {
		t.Fatal(err)
	}
	if payload.major != 5 {
		t.Fatalf("payload is major type %d, not a map", payload.major)
	}
	return env, payload
}

func describeEnvelope(env item) string {
	var b strings.Builder
	fmt.Fprintf(&b, "array(%d, indef=%v)", len(env.children), env.indefinite())
	for i, c := range env.children {
		fmt.Fprintf(&b, " [%d]major=%d", i, c.major)
		switch i {
		case 0:
			fmt.Fprintf(&b, " protected=% x", c.content)
		case 1:
			fmt.Fprintf(&b, " entries=%d", len(c.children))
		case 2:
			fmt.Fprintf(&b, " head=%d", c.info)
		case 3:
			fmt.Fprintf(&b, " len=%d", len(c.content))
		}
	}
	return b.String()
}

// describePayload lists each entry's key, major type and head form, with
// details that must match: PCR keys, sizes and order, digest text, the
// element types of cabundle, and the sizes of the optional fields.
func describePayload(t testing.TB, m item) []string {
	t.Helper()
	var out []string
	for _, e := range entries(m) {
		v := e.value
		line := fmt.Sprintf("%s: major=%d", e.key, v.major)
		switch e.key {
		case "digest":
			line += " value=" + string(v.content)
		case "timestamp":
			line += fmt.Sprintf(" head=%d", v.info)
		case "pcrs":
			line += fmt.Sprintf(" indef=%v", v.indefinite())
			for i := 0; i+1 < len(v.children); i += 2 {
				k, val := v.children[i], v.children[i+1]
				line += fmt.Sprintf(" %d:%d/%d", k.n, val.major, len(val.content))
			}
		case "cabundle":
			line += fmt.Sprintf(" indef=%v", v.indefinite())
			for _, c := range v.children {
				if c.major != 2 {
					line += fmt.Sprintf(" element-major=%d", c.major)
				}
			}
		case "public_key", "user_data", "nonce":
			line += fmt.Sprintf(" len=%d", len(v.content))
		}
		out = append(out, line)
	}
	return out
}

func TestRequestLimits(t *testing.T) {
	ca := newCA(t)
	sim := newSim(t, ca, nsmsim.Options{})
	tests := []struct {
		name string
		req  attestation.Request
		want error
	}{
		{name: "public_key at the limit", req: attestation.Request{PublicKey: make([]byte, attestation.MaxPublicKeySize)}},
		{name: "public_key past the limit", req: attestation.Request{PublicKey: make([]byte, attestation.MaxPublicKeySize+1)}, want: attestation.ErrTooLarge},
		{name: "user_data at the limit", req: attestation.Request{UserData: make([]byte, attestation.MaxUserDataSize)}},
		{name: "user_data past the limit", req: attestation.Request{UserData: make([]byte, attestation.MaxUserDataSize+1)}, want: attestation.ErrTooLarge},
		{name: "nonce at the limit", req: attestation.Request{Nonce: make([]byte, attestation.MaxNonceSize)}},
		{name: "nonce past the limit", req: attestation.Request{Nonce: make([]byte, attestation.MaxNonceSize+1)}, want: attestation.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := sim.Attest(context.Background(), tt.req)
			if tt.want != nil {
				if !errors.Is(err, tt.want) || doc != nil {
					t.Fatalf("Attest = %d bytes, %v; want no document and %v", len(doc), err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parseVerify(t, ca, doc)
		})
	}
}

func TestAttestCanceled(t *testing.T) {
	sim := newSim(t, newCA(t), nsmsim.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sim.Attest(ctx, attestation.Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Attest with a canceled context: %v", err)
	}
}

// TestLeafRenewal: one leaf signs until less than an hour of its three
// remains, then a new one takes over; documents signed by the old leaf
// keep verifying at their own time.
func TestLeafRenewal(t *testing.T) {
	ca := newCA(t)
	clk := &clock{now: time.Now()}
	sim := newSim(t, ca, nsmsim.Options{Now: clk.Now})
	leafOf := func(doc []byte) []byte { return parseVerify(t, ca, doc).Certificate }

	first := attest(t, sim, attestation.Request{})
	clk.Add(nsmsim.LeafLifetime - time.Hour - time.Minute)
	sameLeaf := attest(t, sim, attestation.Request{})
	if !bytes.Equal(leafOf(first), leafOf(sameLeaf)) {
		t.Error("leaf was replaced with more than an hour of its life left")
	}
	clk.Add(2 * time.Minute)
	renewed := attest(t, sim, attestation.Request{})
	if bytes.Equal(leafOf(first), leafOf(renewed)) {
		t.Error("leaf was not replaced with less than an hour of its life left")
	}
	// The first document still verifies now, an hour before its leaf expires.
	d, err := attestation.Parse(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(d, ca.Roots(), clk.Now()); err != nil {
		t.Errorf("first document no longer verifies: %v", err)
	}
	// A clock that jumps back before the leaf's start gets a new leaf too.
	clk.Add(-150 * time.Minute)
	parseVerify(t, ca, attest(t, sim, attestation.Request{}))
}

// TestConcurrentAttest runs Attest from several goroutines while the clock
// crosses leaf renewals; run with -race.
func TestConcurrentAttest(t *testing.T) {
	ca := newCA(t)
	clk := &clock{now: time.Now()}
	sim := newSim(t, ca, nsmsim.Options{Now: clk.Now})
	const workers, perWorker = 4, 8
	docs := make(chan []byte, workers*perWorker)
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if i%2 == 0 {
					clk.Add(40 * time.Minute)
				}
				doc, err := sim.Attest(context.Background(), attestation.Request{Nonce: fmt.Appendf(nil, "%d-%d", w, i)})
				if err != nil {
					errs <- err
					return
				}
				docs <- doc
			}
		})
	}
	wg.Wait()
	close(docs)
	close(errs)
	for err := range errs {
		t.Fatalf("Attest: %v", err)
	}
	leaves := map[string]bool{}
	nonces := map[string]bool{}
	for doc := range docs {
		d := parseVerify(t, ca, doc)
		leaves[string(d.Certificate)] = true
		nonces[string(d.Nonce)] = true
	}
	if len(nonces) != workers*perWorker {
		t.Errorf("got %d distinct documents, want %d", len(nonces), workers*perWorker)
	}
	if len(leaves) < 2 {
		t.Errorf("the clock crossed renewals but only %d leaf was used", len(leaves))
	}
}

func fixedKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P384(), pcrValue(label))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestDeterministic: fixed keys and clock give the same bytes every time,
// which the committed test vectors rely on.
func TestDeterministic(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	make1 := func() []byte {
		ca, err := nsmsim.NewCAFromKeys(fixedKey(t, "root"), fixedKey(t, "intermediate"), at.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		leafKey := fixedKey(t, "leaf")
		sim := newSim(t, ca, nsmsim.Options{
			Now:        func() time.Time { return at },
			NewLeafKey: func() (*ecdsa.PrivateKey, error) { return leafKey, nil },
		})
		return attest(t, sim, attestation.Request{Nonce: []byte("n")})
	}
	a, b := make1(), make1()
	if !bytes.Equal(a, b) {
		t.Fatal("the same keys and time gave different documents")
	}
}

func TestNewOptions(t *testing.T) {
	ca := newCA(t)
	tests := []struct {
		name string
		opts nsmsim.Options
		ok   bool
	}{
		{name: "defaults", ok: true},
		{name: "PCR15", opts: nsmsim.Options{PCRs: map[int][]byte{15: make([]byte, 48)}}, ok: true},
		{name: "PCR16", opts: nsmsim.Options{PCRs: map[int][]byte{16: make([]byte, 48)}}},
		{name: "negative PCR index", opts: nsmsim.Options{PCRs: map[int][]byte{-1: make([]byte, 48)}}},
		{name: "PCR of 32 bytes", opts: nsmsim.Options{PCRs: map[int][]byte{0: make([]byte, 32)}}},
		{name: "module ID of another enclave", opts: nsmsim.Options{ModuleID: "i-0fedcba9876543210-enc00000000000000ff"}, ok: true},
		{name: "module ID of another form", opts: nsmsim.Options{ModuleID: strings.Repeat("i", attestation.MaxModuleIDLen)}},
		{name: "module ID past the limit", opts: nsmsim.Options{ModuleID: strings.Repeat("i", attestation.MaxModuleIDLen+1)}},
		{name: "module ID of a NitroTPM", opts: nsmsim.Options{ModuleID: nsmsim.DefaultNitroTPMModuleID}},
		{name: "NitroTPM", opts: nsmsim.Options{Kind: attestation.KindNitroTPM}, ok: true},
		{name: "NitroTPM PCR23", opts: nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: map[int][]byte{23: make([]byte, 48)}}, ok: true},
		{name: "NitroTPM PCR24", opts: nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: map[int][]byte{24: make([]byte, 48)}}},
		{name: "NitroTPM with an enclave module ID", opts: nsmsim.Options{Kind: attestation.KindNitroTPM, ModuleID: nsmsim.DefaultModuleID}},
		{name: "unknown kind", opts: nsmsim.Options{Kind: 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, err := nsmsim.New(ca, tt.opts)
			if !tt.ok {
				if err == nil || !strings.HasPrefix(err.Error(), "nsmsim: ") {
					t.Fatalf("New = %v; want an nsmsim: error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parseVerify(t, ca, attest(t, sim, attestation.Request{}))
		})
	}
	if _, err := nsmsim.New(nil, nsmsim.Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	// The caller's PCR slices are copied.
	v := make([]byte, 48)
	sim := newSim(t, ca, nsmsim.Options{PCRs: map[int][]byte{0: v}})
	v[0] = 1
	if d := parseVerify(t, ca, attest(t, sim, attestation.Request{})); d.PCRs[0][0] != 0 {
		t.Error("changing the caller's PCR slice changed the documents")
	}
}

func TestLeafKeyErrors(t *testing.T) {
	ca := newCA(t)
	tests := []struct {
		name string
		key  func() (*ecdsa.PrivateKey, error)
	}{
		{name: "error", key: func() (*ecdsa.PrivateKey, error) { return nil, errors.New("no entropy") }},
		{name: "P-256", key: func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t, ca, nsmsim.Options{NewLeafKey: tt.key})
			if _, err := sim.Attest(context.Background(), attestation.Request{}); err == nil || !strings.HasPrefix(err.Error(), "nsmsim: ") {
				t.Fatalf("Attest = %v; want an nsmsim: error", err)
			}
		})
	}
}

// TestIntermediateValidity: a CA whose intermediate is not valid (or would
// not outlive a fresh leaf by the renewal margin) refuses to sign.
func TestIntermediateValidity(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name      string
		notBefore time.Time
	}{
		{name: "intermediate expired", notBefore: now.AddDate(-10, 0, -1)},
		{name: "intermediate not yet valid", notBefore: now.Add(time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := nsmsim.NewCAFromKeys(fixedKey(t, "r"), fixedKey(t, "i"), tt.notBefore)
			if err != nil {
				t.Fatal(err)
			}
			sim := newSim(t, ca, nsmsim.Options{})
			_, err = sim.Attest(context.Background(), attestation.Request{})
			if err == nil || !strings.Contains(err.Error(), "create a new CA") {
				t.Fatalf("Attest = %v; want an error saying to create a new CA", err)
			}
		})
	}
	if _, err := nsmsim.NewCAFromKeys(fixedKey(t, "r"), nil, now); err == nil {
		t.Error("NewCAFromKeys accepted a nil key")
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nsmsim.NewCAFromKeys(p256, fixedKey(t, "i"), now); err == nil {
		t.Error("NewCAFromKeys accepted a P-256 key")
	}
}

func BenchmarkSimulatorAttest(b *testing.B) {
	sim := newSim(b, newCA(b), nsmsim.Options{})
	req := attestation.Request{PublicKey: make([]byte, 294), Nonce: make([]byte, 32)} // an RSA-2048 SPKI, as kmsproxyd sends
	ctx := context.Background()
	if _, err := sim.Attest(ctx, req); err != nil { // issue the leaf outside the loop
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := sim.Attest(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
