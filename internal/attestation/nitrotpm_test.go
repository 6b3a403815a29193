package attestation_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// nitroTPMExpected is one entry of testdata/nitrotpm/expected.json (the
// fields the tests compare; the file also records where each came from).
type nitroTPMExpected struct {
	SHA256         string            `json:"sha256"`
	ModuleID       string            `json:"module_id"`
	TimestampMS    int64             `json:"timestamp_ms"`
	Digest         string            `json:"digest"`
	PCRs           map[string]string `json:"pcrs"`
	PublicKeyLen   int               `json:"public_key_len"`
	UserDataIsNull bool              `json:"user_data_present_as_null"`
	NonceLen       int               `json:"nonce_len"`
	CABundleCount  int               `json:"cabundle_count"`
	LeafNotBefore  string            `json:"leaf_not_before"`
	LeafNotAfter   string            `json:"leaf_not_after"`
}

func summarizeNitroTPM(b []byte, d *attestation.Document) nitroTPMExpected {
	sum := sha256.Sum256(b)
	pcrs := map[string]string{}
	for i, v := range d.NitroTPMPCRs {
		pcrs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return nitroTPMExpected{
		SHA256:         hex.EncodeToString(sum[:]),
		ModuleID:       d.ModuleID,
		TimestampMS:    d.Timestamp.UnixMilli(),
		Digest:         d.Digest,
		PCRs:           pcrs,
		PublicKeyLen:   len(d.PublicKey),
		UserDataIsNull: d.UserData == nil,
		NonceLen:       len(d.Nonce),
		CABundleCount:  len(d.CABundle),
		LeafNotBefore:  d.LeafCertificate().NotBefore.UTC().Format(time.RFC3339),
		LeafNotAfter:   d.LeafCertificate().NotAfter.UTC().Format(time.RFC3339),
	}
}

// nitroTPMDocuments returns the real NitroTPM documents by file name with
// their expectations, failing when the folder and expected.json disagree.
func nitroTPMDocuments(t testing.TB) map[string]nitroTPMExpected {
	t.Helper()
	var want map[string]nitroTPMExpected
	if err := json.Unmarshal(readTestdata(t, "nitrotpm/expected.json"), &want); err != nil {
		t.Fatalf("failed to decode nitrotpm/expected.json: %v", err)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "nitrotpm", "*.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, ok := want[filepath.Base(f)]; !ok {
			t.Errorf("%s has no entry in nitrotpm/expected.json", f)
		}
	}
	// Three documents from three instances (see PROVENANCE.md).
	if len(files) != len(want) || len(files) < 3 {
		t.Fatalf("NitroTPM documents %v do not match expected.json (%d entries)", files, len(want))
	}
	return want
}

func TestNitroTPMRealDocuments(t *testing.T) {
	want := nitroTPMDocuments(t)
	simCA, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			b := readTestdata(t, "nitrotpm/"+name)
			doc, err := attestation.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if doc.Kind != attestation.KindNitroTPM {
				t.Fatalf("Kind = %v, want NitroTPM", doc.Kind)
			}
			if doc.PCRs != nil {
				t.Errorf("an instance's document has enclave PCRs: %d", len(doc.PCRs))
			}
			if got := len(doc.Measurements()); got != attestation.NitroTPMPCRCount {
				t.Errorf("Measurements has %d PCRs, want %d", got, attestation.NitroTPMPCRCount)
			}
			if diff := cmp.Diff(w, summarizeNitroTPM(b, doc)); diff != "" {
				t.Errorf("parsed fields differ from expected.json (-want +got):\n%s", diff)
			}

			leaf := doc.LeafCertificate()
			for _, tt := range []struct {
				name  string
				roots *x509.CertPool
				at    time.Time
				want  error
			}{
				{name: "at its timestamp", roots: attestation.NitroRoots(), at: doc.Timestamp},
				{name: "at the leaf's last second", roots: attestation.NitroRoots(), at: leaf.NotAfter},
				{name: "a second after the leaf expired", roots: attestation.NitroRoots(), at: leaf.NotAfter.Add(time.Second), want: attestation.ErrExpired},
				{name: "now", roots: attestation.NitroRoots(), at: time.Now(), want: attestation.ErrExpired},
				{name: "before the leaf", roots: attestation.NitroRoots(), at: leaf.NotBefore.Add(-time.Second), want: attestation.ErrNotYetValid},
				{name: "under a simulator root", roots: simCA.Roots(), at: doc.Timestamp, want: attestation.ErrChain},
				{name: "no roots", roots: nil, at: doc.Timestamp, want: attestation.ErrChain},
			} {
				t.Run(tt.name, func(t *testing.T) {
					err := attestation.Verify(doc, tt.roots, tt.at)
					if tt.want == nil {
						if err != nil {
							t.Fatalf("Verify: %v", err)
						}
						return
					}
					checkTyped(t, err, tt.want)
				})
			}

			// The same AWS root as an enclave's; the leaf names the module.
			subjects := doc.ChainSubjects()
			if got, want := subjects[len(subjects)-1], attestation.NitroRoot().Subject.String(); got != want {
				t.Errorf("last chain subject = %q, want the AWS root %q", got, want)
			}
			if !strings.Contains(subjects[0], doc.ModuleID) {
				t.Errorf("leaf subject %q does not name module %s", subjects[0], doc.ModuleID)
			}
			// Its public_key is an EC point, not the RSA key a KMS
			// Recipient needs.
			if _, err := attestation.RecipientKey(doc); err == nil {
				t.Error("RecipientKey accepted a 65-byte EC point")
			} else {
				checkTyped(t, err, attestation.ErrPublicKey)
			}
		})
	}
}

// TestNitroTPMRealTampered changes bytes of real documents: whatever
// changes, the document is refused, with the check that catches it.
func TestNitroTPMRealTampered(t *testing.T) {
	want := nitroTPMDocuments(t)
	var names []string
	for name := range want {
		names = append(names, name)
	}
	docs := map[string][]byte{}
	for _, name := range names {
		docs[name] = readTestdata(t, "nitrotpm/"+name)
	}
	for i, name := range names {
		orig := docs[name]
		other := docs[names[(i+1)%len(names)]]
		parsed, err := attestation.Parse(orig)
		if err != nil {
			t.Fatal(err)
		}
		otherParsed, err := attestation.Parse(other)
		if err != nil {
			t.Fatal(err)
		}
		// replaceOnce swaps one occurrence of old for new (same length, so
		// the CBOR structure stays intact).
		replaceOnce := func(b, old, new []byte) []byte {
			t.Helper()
			if len(old) != len(new) || bytes.Count(b, old) != 1 {
				t.Fatalf("%s: %x occurs %d times", name, old, bytes.Count(b, old))
			}
			return bytes.Replace(b, old, new, 1)
		}
		flipped := func(v []byte) []byte { w := bytes.Clone(v); w[len(w)/2] ^= 0x01; return w }
		// pcrEntry is PCR i's encoded entry in nitrotpm_pcrs: key i, then a
		// 48-byte string (head 0x58 0x30); values repeat, entries do not.
		pcrEntry := func(i int) []byte {
			return append([]byte{byte(i), 0x58, 0x30}, parsed.NitroTPMPCRs[i]...)
		}
		pcrFlipped := func(i int) []byte {
			return replaceOnce(orig, pcrEntry(i), append([]byte{byte(i), 0x58, 0x30}, flipped(parsed.NitroTPMPCRs[i])...))
		}
		// The signature is the last 96 bytes of the document.
		sigFlipped := bytes.Clone(orig)
		sigFlipped[len(sigFlipped)-10] ^= 0x80
		// A cabundle certificate of the other document's chain in place of
		// this one's: the instance CA (the last entry) differs per instance.
		swapped := rebuild(t, orig, func(m map[string]cbor.RawMessage) {
			bundle := append([][]byte(nil), parsed.CABundle...)
			bundle[len(bundle)-1] = otherParsed.CABundle[len(otherParsed.CABundle)-1]
			m["cabundle"] = enc(t, bundle)
		})
		asEnclave := rebuild(t, orig, func(m map[string]cbor.RawMessage) {
			m["pcrs"] = m["nitrotpm_pcrs"]
			delete(m, "nitrotpm_pcrs")
		})
		both := rebuild(t, orig, func(m map[string]cbor.RawMessage) { m["pcrs"] = m["nitrotpm_pcrs"] })

		tests := []struct {
			name       string
			doc        []byte
			wantParse  error
			wantVerify error
		}{
			{name: "unchanged", doc: orig},
			{name: "signature byte", doc: sigFlipped, wantVerify: attestation.ErrSignature},
			{name: "nonce byte in the payload", doc: replaceOnce(orig, parsed.Nonce, flipped(parsed.Nonce)), wantVerify: attestation.ErrSignature},
			{name: "PCR4 value", doc: pcrFlipped(4), wantVerify: attestation.ErrSignature},
			{name: "PCR12 value", doc: pcrFlipped(12), wantVerify: attestation.ErrSignature},
			{name: "PCR23 value", doc: pcrFlipped(23), wantVerify: attestation.ErrSignature},
			{name: "public key", doc: replaceOnce(orig, parsed.PublicKey, flipped(parsed.PublicKey)), wantVerify: attestation.ErrSignature},
			{name: "timestamp", doc: rebuild(t, orig, func(m map[string]cbor.RawMessage) { m["timestamp"] = enc(t, parsed.Timestamp.UnixMilli()+1) }), wantVerify: attestation.ErrSignature},
			{name: "instance CA swapped with another instance's", doc: swapped, wantVerify: attestation.ErrSignature},
			{name: "leaf swapped with another instance's", doc: rebuild(t, orig, func(m map[string]cbor.RawMessage) { m["certificate"] = enc(t, otherParsed.Certificate) }), wantVerify: attestation.ErrSignature},
			// The payload's module_id (a 39-byte text string: head 0x78 0x27),
			// not the leaf certificate's subject, which names it too.
			{name: "module ID of an enclave", doc: replaceOnce(orig, append([]byte{0x78, 0x27}, parsed.ModuleID...),
				append([]byte{0x78, 0x27}, strings.Replace(parsed.ModuleID, "-tpm", "-enc", 1)...)), wantParse: attestation.ErrModuleID},
			{name: "nitrotpm_pcrs relabelled pcrs", doc: asEnclave, wantParse: attestation.ErrModuleID},
			{name: "both pcrs and nitrotpm_pcrs", doc: both, wantParse: attestation.ErrKind},
			{name: "truncated", doc: orig[:len(orig)-1], wantParse: attestation.ErrMalformed},
		}
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				doc, err := attestation.Parse(tt.doc)
				if tt.wantParse != nil {
					checkTyped(t, err, tt.wantParse)
					return
				}
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				err = attestation.Verify(doc, attestation.NitroRoots(), doc.Timestamp)
				if tt.wantVerify == nil {
					if err != nil {
						t.Fatalf("Verify: %v", err)
					}
					return
				}
				checkTyped(t, err, tt.wantVerify)
			})
		}
	}
}

// rebuild re-encodes doc's payload after change, keeping its protected
// header and signature (which then no longer match).
func rebuild(t testing.TB, doc []byte, change func(m map[string]cbor.RawMessage)) []byte {
	t.Helper()
	parts := coseParts(t, doc)
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(payloadOf(t, doc), &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	var protected, sig []byte
	if err := cbor.Unmarshal(parts[0], &protected); err != nil {
		t.Fatal(err)
	}
	if err := cbor.Unmarshal(parts[3], &sig); err != nil {
		t.Fatal(err)
	}
	return rawCOSE(t, protected, map[int]int{}, enc(t, m), sig)
}

// TestDocumentKind: a document is an enclave's or an instance's, by the
// PCR map it holds and a module ID of that kind's form; anything else is
// refused before any signature is checked, and the PCR count of each kind
// is Verify's.
func TestDocumentKind(t *testing.T) {
	now := time.Now()
	tpm := newSimFixtureOf(t, now, attestation.KindNitroTPM)
	enclave := newSimFixtureOf(t, now, attestation.KindEnclave)
	with := func(f *simFixture, change func(m map[string]cbor.RawMessage)) []byte {
		m := f.fields(t)
		change(m)
		return f.resign(t, m)
	}
	pcrMap := func(n int) cbor.RawMessage {
		m := map[int][]byte{}
		for i := range n {
			m[i] = make([]byte, attestation.PCRSize)
		}
		return enc(t, m)
	}
	moduleID := func(id string) func(m map[string]cbor.RawMessage) {
		return func(m map[string]cbor.RawMessage) { m["module_id"] = enc(t, id) }
	}
	tests := []struct {
		name       string
		f          *simFixture
		doc        []byte
		wantKind   attestation.Kind
		wantParse  error
		wantVerify error
	}{
		{name: "NitroTPM", f: tpm, doc: tpm.doc, wantKind: attestation.KindNitroTPM},
		{name: "enclave", f: enclave, doc: enclave.doc, wantKind: attestation.KindEnclave},
		{name: "NitroTPM with pcrs too", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { m["pcrs"] = pcrMap(16) }), wantParse: attestation.ErrKind},
		{name: "enclave with nitrotpm_pcrs too", f: enclave, doc: with(enclave, func(m map[string]cbor.RawMessage) { m["nitrotpm_pcrs"] = pcrMap(24) }), wantParse: attestation.ErrKind},
		{name: "no PCR map", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { delete(m, "nitrotpm_pcrs") }), wantParse: attestation.ErrKind},
		{name: "nitrotpm_pcrs null", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { m["nitrotpm_pcrs"] = cbor.RawMessage{0xf6} }), wantParse: attestation.ErrMalformed},
		{name: "nitrotpm_pcrs empty", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { m["nitrotpm_pcrs"] = pcrMap(0) }), wantParse: attestation.ErrPCRs},
		{name: "nitrotpm_pcrs of 16", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { m["nitrotpm_pcrs"] = pcrMap(16) }), wantVerify: attestation.ErrPCRs},
		{name: "nitrotpm_pcrs of 25", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { m["nitrotpm_pcrs"] = pcrMap(25) }), wantVerify: attestation.ErrPCRs},
		{name: "nitrotpm_pcrs of 33", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) { m["nitrotpm_pcrs"] = pcrMap(33) }), wantParse: attestation.ErrTooLarge},
		{name: "pcrs of 24 with a NitroTPM module ID", f: tpm, doc: with(tpm, func(m map[string]cbor.RawMessage) {
			m["pcrs"] = m["nitrotpm_pcrs"]
			delete(m, "nitrotpm_pcrs")
		}), wantParse: attestation.ErrModuleID},
		{name: "NitroTPM with an enclave module ID", f: tpm, doc: with(tpm, moduleID(nsmsim.DefaultModuleID)), wantParse: attestation.ErrModuleID},
		{name: "enclave with a NitroTPM module ID", f: enclave, doc: with(enclave, moduleID(nsmsim.DefaultNitroTPMModuleID)), wantParse: attestation.ErrModuleID},
		{name: "module ID of another NitroTPM", f: tpm, doc: with(tpm, moduleID("i-0fedcba9876543210-tpm00000000000000ff")), wantKind: attestation.KindNitroTPM},
		{name: "module ID with upper-case hex", f: tpm, doc: with(tpm, moduleID("i-0123456789ABCDEF0-tpm0000000000000000")), wantParse: attestation.ErrModuleID},
		{name: "module ID of an 8-digit instance", f: tpm, doc: with(tpm, moduleID("i-01234567-tpm0000000000000000")), wantParse: attestation.ErrModuleID},
		{name: "module ID one digit long", f: tpm, doc: with(tpm, moduleID(nsmsim.DefaultNitroTPMModuleID+"0")), wantParse: attestation.ErrModuleID},
		{name: "module ID one digit short", f: tpm, doc: with(tpm, moduleID(nsmsim.DefaultNitroTPMModuleID[1:])), wantParse: attestation.ErrModuleID},
		{name: "module ID with another suffix", f: tpm, doc: with(tpm, moduleID("i-0123456789abcdef0-vtp0000000000000000")), wantParse: attestation.ErrModuleID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := attestation.Parse(tt.doc)
			if tt.wantParse != nil {
				checkTyped(t, err, tt.wantParse)
				if doc != nil {
					t.Error("Parse returned a document with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = attestation.Verify(doc, tt.f.ca.Roots(), tt.f.now)
			if tt.wantVerify != nil {
				checkTyped(t, err, tt.wantVerify)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if doc.Kind != tt.wantKind {
				t.Errorf("Kind = %v, want %v", doc.Kind, tt.wantKind)
			}
			// Exactly one PCR map, the kind's.
			if tt.wantKind == attestation.KindNitroTPM && (doc.PCRs != nil || len(doc.NitroTPMPCRs) != 24) ||
				tt.wantKind == attestation.KindEnclave && (doc.NitroTPMPCRs != nil || len(doc.PCRs) != 16) {
				t.Errorf("%v document has %d pcrs and %d nitrotpm_pcrs", doc.Kind, len(doc.PCRs), len(doc.NitroTPMPCRs))
			}
		})
	}

	// Verify re-reads the signed payload: changing the kind or the
	// instance's PCRs after Parse is caught.
	for _, change := range []struct {
		name string
		fn   func(d *attestation.Document)
	}{
		{name: "kind", fn: func(d *attestation.Document) { d.Kind = attestation.KindEnclave }},
		{name: "PCR moved to the enclave map", fn: func(d *attestation.Document) { d.PCRs, d.NitroTPMPCRs = d.NitroTPMPCRs, nil }},
		{name: "NitroTPM PCR value", fn: func(d *attestation.Document) { d.NitroTPMPCRs[4][0] ^= 1 }},
	} {
		t.Run("changed after Parse/"+change.name, func(t *testing.T) {
			doc, err := attestation.Parse(tpm.doc)
			if err != nil {
				t.Fatal(err)
			}
			change.fn(doc)
			checkTyped(t, attestation.Verify(doc, tpm.ca.Roots(), tpm.now), attestation.ErrMalformed)
		})
	}
}

func TestRecipientKey(t *testing.T) {
	spki := func(pub any) []byte {
		b, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rsaKey := func(bits int) []byte {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return spki(&k.PublicKey)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPoint, err := ecKey.PublicKey.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	rsa2048 := rsaKey(2048)
	tests := []struct {
		name string
		key  []byte
		want error
	}{
		{name: "RSA-2048", key: rsa2048},
		{name: "RSA-3072", key: rsaKey(3072)},
		{name: "RSA-1024", key: rsaKey(1024), want: attestation.ErrPublicKey},
		{name: "ECDSA P-256 SubjectPublicKeyInfo", key: spki(&ecKey.PublicKey), want: attestation.ErrPublicKey},
		{name: "65-byte EC point", key: ecPoint.Bytes(), want: attestation.ErrPublicKey},
		{name: "none", key: nil, want: attestation.ErrPublicKey},
		{name: "RSA SubjectPublicKeyInfo truncated", key: rsa2048[:len(rsa2048)-1], want: attestation.ErrPublicKey},
	}
	now := time.Now()
	for _, kind := range []attestation.Kind{attestation.KindEnclave, attestation.KindNitroTPM} {
		f := newSimFixtureOf(t, now, kind)
		for _, tt := range tests {
			t.Run(kind.String()+"/"+tt.name, func(t *testing.T) {
				doc, err := attestation.Parse(f.attest(t, attestation.Request{PublicKey: tt.key}))
				if err != nil {
					t.Fatal(err)
				}
				if err := attestation.Verify(doc, f.ca.Roots(), f.now); err != nil {
					t.Fatalf("Verify does not care what public_key holds, but: %v", err)
				}
				pub, err := attestation.RecipientKey(doc)
				if tt.want != nil {
					checkTyped(t, err, tt.want)
					if pub != nil {
						t.Error("RecipientKey returned a key with its error")
					}
					return
				}
				if err != nil {
					t.Fatalf("RecipientKey: %v", err)
				}
				if !bytes.Equal(spki(pub), tt.key) {
					t.Error("RecipientKey returned another key")
				}
			})
		}
	}
	checkTyped(t, func() error { _, err := attestation.RecipientKey(nil); return err }(), attestation.ErrPublicKey)
}
