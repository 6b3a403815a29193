package attestation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// TestTampered runs documents that are malformed, tampered with or merely
// unusual through Parse and Verify. wantParse is the error Parse must
// return (nil: it must succeed); wantVerify the error Verify must then
// return at the fixture's time with the fixture's root (nil: success).
func TestTampered(t *testing.T) {
	f := newSimFixture(t)
	pcrs := func(m map[string]cbor.RawMessage) map[uint64][]byte {
		var p map[uint64][]byte
		if err := cbor.Unmarshal(m["pcrs"], &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	with := func(change func(m map[string]cbor.RawMessage)) []byte {
		m := f.fields(t)
		change(m)
		return f.resign(t, m)
	}
	parts := coseParts(t, f.doc)
	payload := payloadOf(t, f.doc)
	var sig []byte
	if err := cbor.Unmarshal(parts[3], &sig); err != nil {
		t.Fatal(err)
	}
	es384 := []byte(enc(t, map[int]int{1: -35})) // []byte: encoded as the bstr it must be

	// Another simulator CA: its leaf verifies against its own root only.
	// Same clock as f: the documents below are verified at f.now.
	other := newSimFixtureAt(t, f.now)

	// A leaf with a P-256 key under a throwaway P-384 root.
	p256Doc := func() []byte {
		rootKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
			NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
		if err != nil {
			t.Fatal(err)
		}
		leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"},
			NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour)}
		leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, rootTmpl, &leafKey.PublicKey, rootKey)
		if err != nil {
			t.Fatal(err)
		}
		m := f.fields(t)
		m["certificate"] = enc(t, leafDER)
		m["cabundle"] = enc(t, [][]byte{rootDER})
		return f.resign(t, m) // signed by a P-384 key that is not the leaf's: the key check comes first
	}()

	// Payload variants encoded by hand.
	insertBeforeBreak := func(extra []byte) []byte {
		if payload[0] != 0xbf || payload[len(payload)-1] != 0xff {
			t.Fatal("simulator payload is not an indefinite-length map")
		}
		p := append([]byte(nil), payload[:len(payload)-1]...)
		p = append(p, extra...)
		return append(p, 0xff)
	}
	deep := func(n int) []byte { return append(bytes.Repeat([]byte{0x81}, n), 0x00) }

	tests := []struct {
		name       string
		doc        []byte
		wantParse  error
		wantVerify error
	}{
		{name: "valid", doc: f.doc},
		{name: "tag 18 wrapper", doc: append([]byte{0xd2}, f.doc...)},
		{name: "definite-length payload map", doc: f.resign(t, f.fields(t))},
		{name: "indefinite-length COSE array", doc: append(append([]byte{0x9f}, f.doc[1:]...), 0xff)},
		{name: "empty input", doc: nil, wantParse: attestation.ErrMalformed},
		{name: "truncated by half", doc: f.doc[:len(f.doc)/2], wantParse: attestation.ErrMalformed},
		{name: "truncated by one byte", doc: f.doc[:len(f.doc)-1], wantParse: attestation.ErrMalformed},
		{name: "trailing bytes", doc: append(append([]byte(nil), f.doc...), 0x00), wantParse: attestation.ErrMalformed},
		{name: "trailing bytes inside the payload", doc: f.signPayload(t, append(append([]byte(nil), payload...), 0x00)), wantParse: attestation.ErrMalformed},
		{name: "COSE array of three", doc: enc(t, []any{es384, map[int]int{}, payload}), wantParse: attestation.ErrMalformed},
		{name: "COSE map instead of array", doc: enc(t, map[int]any{1: payload}), wantParse: attestation.ErrMalformed},
		{name: "other tag", doc: append([]byte{0xd8, 0x62}, f.doc...), wantParse: attestation.ErrMalformed},
		{name: "wrong alg ES256", doc: rawCOSE(t, enc(t, map[int]int{1: -7}), map[int]int{}, payload, sig), wantParse: attestation.ErrAlgorithm},
		{name: "alg as text", doc: rawCOSE(t, enc(t, map[int]string{1: "ES384"}), map[int]int{}, payload, sig), wantParse: attestation.ErrAlgorithm},
		{name: "empty protected header", doc: rawCOSE(t, []byte{}, map[int]int{}, payload, sig), wantParse: attestation.ErrAlgorithm},
		{name: "extra protected parameter", doc: rawCOSE(t, enc(t, map[int]any{1: -35, 4: []byte{1}}), map[int]int{}, payload, sig), wantParse: attestation.ErrMalformed},
		{name: "non-empty unprotected header", doc: rawCOSE(t, es384, map[int]any{4: []byte{1}}, payload, sig), wantParse: attestation.ErrMalformed},
		{name: "payload is text", doc: enc(t, []any{es384, map[int]int{}, "payload", sig}), wantParse: attestation.ErrMalformed},
		{name: "detached payload", doc: enc(t, []any{es384, map[int]int{}, nil, sig}), wantParse: attestation.ErrMalformed},
		{name: "payload is an array", doc: f.signPayload(t, enc(t, []int{1})), wantParse: attestation.ErrMalformed},
		{name: "signature of 64 bytes", doc: rawCOSE(t, es384, map[int]int{}, payload, sig[:64]), wantParse: attestation.ErrMalformed},
		{name: "signature bit flipped", doc: rawCOSE(t, es384, map[int]int{}, payload, flip(sig, 10)), wantVerify: attestation.ErrSignature},
		{name: "payload changed after signing", doc: rawCOSE(t, es384, map[int]int{}, bytes.Replace(payload, []byte("user data"), []byte("user dada"), 1), sig), wantVerify: attestation.ErrSignature},
		{name: "signed by another key", doc: other.signPayload(t, payload), wantVerify: attestation.ErrSignature},
		{name: "digest SHA256", doc: with(func(m map[string]cbor.RawMessage) { m["digest"] = enc(t, "SHA256") }), wantVerify: attestation.ErrDigest},
		{name: "digest MD5", doc: with(func(m map[string]cbor.RawMessage) { m["digest"] = enc(t, "MD5") }), wantParse: attestation.ErrDigest},
		{name: "15 PCRs", doc: with(func(m map[string]cbor.RawMessage) {
			p := pcrs(m)
			delete(p, 15)
			m["pcrs"] = enc(t, p)
		}), wantVerify: attestation.ErrPCRs},
		{name: "17 PCRs", doc: with(func(m map[string]cbor.RawMessage) {
			p := pcrs(m)
			p[16] = make([]byte, 48)
			m["pcrs"] = enc(t, p)
		}), wantVerify: attestation.ErrPCRs},
		{name: "PCR of 32 bytes", doc: with(func(m map[string]cbor.RawMessage) {
			p := pcrs(m)
			p[3] = make([]byte, 32)
			m["pcrs"] = enc(t, p)
		}), wantVerify: attestation.ErrPCRs},
		{name: "PCR of 47 bytes", doc: with(func(m map[string]cbor.RawMessage) {
			p := pcrs(m)
			p[3] = make([]byte, 47)
			m["pcrs"] = enc(t, p)
		}), wantParse: attestation.ErrPCRs},
		{name: "PCR index 32", doc: with(func(m map[string]cbor.RawMessage) {
			p := pcrs(m)
			p[32] = make([]byte, 48)
			m["pcrs"] = enc(t, p)
		}), wantParse: attestation.ErrPCRs},
		{name: "33 PCRs", doc: with(func(m map[string]cbor.RawMessage) {
			p := map[uint64][]byte{}
			for i := range 33 {
				p[uint64(i)] = make([]byte, 48)
			}
			m["pcrs"] = enc(t, p)
		}), wantParse: attestation.ErrTooLarge},
		{name: "PCR with a text index", doc: with(func(m map[string]cbor.RawMessage) { m["pcrs"] = enc(t, map[string][]byte{"0": make([]byte, 48)}) }), wantParse: attestation.ErrPCRs},
		{name: "PCR that is text", doc: with(func(m map[string]cbor.RawMessage) { m["pcrs"] = enc(t, map[int]string{0: strings.Repeat("0", 48)}) }), wantParse: attestation.ErrPCRs},
		{name: "no PCRs", doc: with(func(m map[string]cbor.RawMessage) { m["pcrs"] = enc(t, map[int][]byte{}) }), wantParse: attestation.ErrPCRs},
		{name: "user_data at the limit", doc: with(func(m map[string]cbor.RawMessage) { m["user_data"] = enc(t, make([]byte, attestation.MaxUserDataSize)) })},
		{name: "user_data past the limit", doc: with(func(m map[string]cbor.RawMessage) {
			m["user_data"] = enc(t, make([]byte, attestation.MaxUserDataSize+1))
		}), wantParse: attestation.ErrTooLarge},
		{name: "nonce past the limit", doc: with(func(m map[string]cbor.RawMessage) { m["nonce"] = enc(t, make([]byte, attestation.MaxNonceSize+1)) }), wantParse: attestation.ErrTooLarge},
		{name: "public_key past the limit", doc: with(func(m map[string]cbor.RawMessage) {
			m["public_key"] = enc(t, make([]byte, attestation.MaxPublicKeySize+1))
		}), wantParse: attestation.ErrTooLarge},
		{name: "optional fields absent", doc: with(func(m map[string]cbor.RawMessage) {
			delete(m, "public_key")
			delete(m, "user_data")
			delete(m, "nonce")
		})},
		{name: "nonce undefined", doc: with(func(m map[string]cbor.RawMessage) { m["nonce"] = cbor.RawMessage{0xf7} }), wantParse: attestation.ErrMalformed},
		{name: "nonce is text", doc: with(func(m map[string]cbor.RawMessage) { m["nonce"] = enc(t, "nonce") }), wantParse: attestation.ErrMalformed},
		{name: "user_data inside a tag", doc: with(func(m map[string]cbor.RawMessage) { m["user_data"] = append([]byte{0xd8, 0x18}, enc(t, []byte{1})...) }), wantParse: attestation.ErrMalformed},
		{name: "cabundle empty", doc: with(func(m map[string]cbor.RawMessage) { m["cabundle"] = enc(t, [][]byte{}) }), wantParse: attestation.ErrMalformed},
		{name: "cabundle of 17", doc: with(func(m map[string]cbor.RawMessage) {
			var b [][]byte
			if err := cbor.Unmarshal(m["cabundle"], &b); err != nil {
				t.Fatal(err)
			}
			for len(b) < attestation.MaxCABundleLen+1 {
				b = append(b, b[0])
			}
			m["cabundle"] = enc(t, b)
		}), wantParse: attestation.ErrTooLarge},
		{name: "cabundle entry empty", doc: with(func(m map[string]cbor.RawMessage) { m["cabundle"] = enc(t, [][]byte{{}}) }), wantParse: attestation.ErrMalformed},
		{name: "cabundle entry garbage", doc: with(func(m map[string]cbor.RawMessage) { m["cabundle"] = enc(t, [][]byte{bytes.Repeat([]byte{0x30}, 100)}) }), wantParse: attestation.ErrMalformed},
		{name: "cabundle reversed", doc: with(func(m map[string]cbor.RawMessage) {
			var b [][]byte
			if err := cbor.Unmarshal(m["cabundle"], &b); err != nil {
				t.Fatal(err)
			}
			m["cabundle"] = enc(t, [][]byte{b[1], b[0]})
		}), wantVerify: attestation.ErrChain},
		{name: "cabundle without the intermediate", doc: with(func(m map[string]cbor.RawMessage) {
			var b [][]byte
			if err := cbor.Unmarshal(m["cabundle"], &b); err != nil {
				t.Fatal(err)
			}
			m["cabundle"] = enc(t, b[:1])
		}), wantVerify: attestation.ErrChain},
		{name: "leaf from another CA", doc: func() []byte {
			m := other.fields(t)
			m["cabundle"] = f.fields(t)["cabundle"]
			return other.resign(t, m)
		}(), wantVerify: attestation.ErrChain},
		{name: "garbage certificate", doc: with(func(m map[string]cbor.RawMessage) { m["certificate"] = enc(t, bytes.Repeat([]byte{0xab}, 500)) }), wantParse: attestation.ErrMalformed},
		{name: "certificate past the limit", doc: with(func(m map[string]cbor.RawMessage) {
			m["certificate"] = enc(t, make([]byte, attestation.MaxCertificateSize+1))
		}), wantParse: attestation.ErrTooLarge},
		{name: "certificate null", doc: with(func(m map[string]cbor.RawMessage) { m["certificate"] = cbor.RawMessage{0xf6} }), wantParse: attestation.ErrMalformed},
		{name: "leaf key P-256", doc: p256Doc, wantVerify: attestation.ErrLeafKey},
		{name: "module_id missing", doc: with(func(m map[string]cbor.RawMessage) { delete(m, "module_id") }), wantParse: attestation.ErrMalformed},
		{name: "module_id empty", doc: with(func(m map[string]cbor.RawMessage) { m["module_id"] = enc(t, "") }), wantParse: attestation.ErrMalformed},
		// The decoding limit is far above the 39 bytes of a real module ID:
		// a long one decodes, and is then refused for its form.
		{name: "module_id at the limit", doc: with(func(m map[string]cbor.RawMessage) {
			m["module_id"] = enc(t, strings.Repeat("i", attestation.MaxModuleIDLen))
		}), wantParse: attestation.ErrModuleID},
		{name: "module_id past the limit", doc: with(func(m map[string]cbor.RawMessage) {
			m["module_id"] = enc(t, strings.Repeat("i", attestation.MaxModuleIDLen+1))
		}), wantParse: attestation.ErrTooLarge},
		{name: "module_id is bytes", doc: with(func(m map[string]cbor.RawMessage) { m["module_id"] = enc(t, []byte("i-0")) }), wantParse: attestation.ErrMalformed},
		{name: "module_id invalid UTF-8", doc: with(func(m map[string]cbor.RawMessage) { m["module_id"] = cbor.RawMessage{0x62, 0xff, 0xfe} }), wantParse: attestation.ErrMalformed},
		{name: "timestamp zero", doc: with(func(m map[string]cbor.RawMessage) { m["timestamp"] = enc(t, 0) }), wantParse: attestation.ErrMalformed},
		{name: "timestamp negative", doc: with(func(m map[string]cbor.RawMessage) { m["timestamp"] = enc(t, -1) }), wantParse: attestation.ErrMalformed},
		{name: "timestamp beyond int64", doc: with(func(m map[string]cbor.RawMessage) { m["timestamp"] = enc(t, uint64(1)<<63) }), wantParse: attestation.ErrMalformed},
		{name: "timestamp as text", doc: with(func(m map[string]cbor.RawMessage) { m["timestamp"] = enc(t, "2025-01-01") }), wantParse: attestation.ErrMalformed},
		{name: "unknown field", doc: with(func(m map[string]cbor.RawMessage) { m["extra"] = enc(t, 1) }), wantParse: attestation.ErrMalformed},
		{name: "duplicate key", doc: f.signPayload(t, insertBeforeBreak(append(enc(t, "nonce"), 0xf6))), wantParse: attestation.ErrMalformed},
		{name: "map with an integer key", doc: f.signPayload(t, insertBeforeBreak([]byte{0x01, 0x01})), wantParse: attestation.ErrMalformed},
		{name: "deep nesting as the document", doc: deep(10000), wantParse: attestation.ErrMalformed},
		{name: "deep nesting inside the payload", doc: f.signPayload(t, insertBeforeBreak(append(enc(t, "extra"), deep(100)...))), wantParse: attestation.ErrMalformed},
		{name: "huge declared byte string", doc: append([]byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 0), wantParse: attestation.ErrMalformed},
		{name: "huge declared array", doc: []byte{0x9b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00}, wantParse: attestation.ErrTooLarge},
		{name: "huge declared map in the payload", doc: f.signPayload(t, []byte{0xbb, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x60, 0x00}), wantParse: attestation.ErrTooLarge},
		{name: "huge declared text in the payload", doc: f.signPayload(t, []byte{0xa1, 0x7b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), wantParse: attestation.ErrMalformed},
		{name: "document past the size limit", doc: make([]byte, attestation.MaxDocumentSize+1), wantParse: attestation.ErrTooLarge},
		{name: "payload past the size limit", doc: rawCOSE(t, es384, map[int]int{}, make([]byte, attestation.MaxPayloadSize+1), sig), wantParse: attestation.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := attestation.Parse(tt.doc)
			if tt.wantParse != nil {
				if err == nil {
					t.Fatalf("Parse succeeded, want %v", tt.wantParse)
				}
				checkTyped(t, err, tt.wantParse)
				t.Log(err)
				if doc != nil {
					t.Error("Parse returned a document with its error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = attestation.Verify(doc, f.ca.Roots(), f.now)
			if tt.wantVerify == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify succeeded, want %v", tt.wantVerify)
			}
			checkTyped(t, err, tt.wantVerify)
			t.Log(err)
		})
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0x01
	return c
}

// TestSizeGates checks the whole-document and payload limits at and just
// past the limit: at the limit the size check passes (and the garbage
// fails later as malformed); past it the size check refuses.
func TestSizeGates(t *testing.T) {
	f := newSimFixture(t)
	sig := make([]byte, 96)
	es384 := []byte(enc(t, map[int]int{1: -35}))
	payloadDoc := func(n int) []byte {
		return rawCOSE(t, es384, map[int]int{}, bytes.Repeat([]byte{0x00}, n), sig)
	}
	tests := []struct {
		name string
		doc  []byte
		want error
	}{
		{name: "document at the limit", doc: make([]byte, attestation.MaxDocumentSize), want: attestation.ErrMalformed},
		{name: "document past the limit", doc: make([]byte, attestation.MaxDocumentSize+1), want: attestation.ErrTooLarge},
		{name: "payload at the limit", doc: payloadDoc(attestation.MaxPayloadSize), want: attestation.ErrMalformed},
		{name: "payload past the limit", doc: payloadDoc(attestation.MaxPayloadSize + 1), want: attestation.ErrTooLarge},
		{name: "tagged document with payload at the limit", doc: append([]byte{0xd2}, payloadDoc(attestation.MaxPayloadSize)...), want: attestation.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := attestation.Parse(tt.doc)
			checkTyped(t, err, tt.want)
		})
	}
	// The largest document the simulator can make (every field at its
	// limit) is far below MaxDocumentSize and verifies.
	doc := f.attest(t, attestation.Request{
		PublicKey: bytes.Repeat([]byte{1}, attestation.MaxPublicKeySize),
		UserData:  bytes.Repeat([]byte{2}, attestation.MaxUserDataSize),
		Nonce:     bytes.Repeat([]byte{3}, attestation.MaxNonceSize),
	})
	parsed, err := attestation.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(parsed, f.ca.Roots(), f.now); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyValidityWindow(t *testing.T) {
	f := newSimFixture(t)
	doc, err := attestation.Parse(f.doc)
	if err != nil {
		t.Fatal(err)
	}
	leaf := doc.LeafCertificate()
	tests := []struct {
		name string
		at   time.Time
		want error
	}{
		{name: "at NotBefore", at: leaf.NotBefore},
		{name: "at NotAfter", at: leaf.NotAfter},
		{name: "before NotBefore", at: leaf.NotBefore.Add(-time.Second), want: attestation.ErrNotYetValid},
		{name: "after NotAfter", at: leaf.NotAfter.Add(time.Second), want: attestation.ErrExpired},
		{name: "after the root expired", at: f.ca.RootCertificate().NotAfter.Add(time.Hour), want: attestation.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := attestation.Verify(doc, f.ca.Roots(), tt.at)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			checkTyped(t, err, tt.want)
		})
	}
}

// TestVerifyRefusesModifiedDocument: fields changed after Parse must not
// pass as verified.
func TestVerifyRefusesModifiedDocument(t *testing.T) {
	f := newSimFixture(t)
	tests := []struct {
		name   string
		change func(d *attestation.Document)
	}{
		{name: "PCR value", change: func(d *attestation.Document) { d.PCRs[0][0] ^= 1 }},
		{name: "PCR added", change: func(d *attestation.Document) { d.PCRs[16] = make([]byte, 48) }},
		{name: "user data", change: func(d *attestation.Document) { d.UserData = []byte("other") }},
		{name: "nonce", change: func(d *attestation.Document) { d.Nonce = nil }},
		{name: "public key", change: func(d *attestation.Document) { d.PublicKey[0] ^= 1 }},
		{name: "module ID", change: func(d *attestation.Document) { d.ModuleID = "i-1" }},
		{name: "timestamp", change: func(d *attestation.Document) { d.Timestamp = d.Timestamp.Add(time.Millisecond) }},
		{name: "cabundle", change: func(d *attestation.Document) { d.CABundle = d.CABundle[:1] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := attestation.Parse(f.doc)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(doc)
			checkTyped(t, attestation.Verify(doc, f.ca.Roots(), f.now), attestation.ErrMalformed)
		})
	}
	checkTyped(t, attestation.Verify(nil, f.ca.Roots(), f.now), attestation.ErrMalformed)
	checkTyped(t, attestation.Verify(&attestation.Document{}, f.ca.Roots(), f.now), attestation.ErrMalformed)
}

func TestParseOptionalFields(t *testing.T) {
	f := newSimFixture(t)
	tests := []struct {
		name string
		req  attestation.Request
	}{
		{name: "null", req: attestation.Request{}},
		{name: "empty", req: attestation.Request{PublicKey: []byte{}, UserData: []byte{}, Nonce: []byte{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := attestation.Parse(f.attest(t, tt.req))
			if err != nil {
				t.Fatal(err)
			}
			if doc.PublicKey != nil || doc.UserData != nil || doc.Nonce != nil {
				t.Errorf("optional fields = %q, %q, %q; want all nil", doc.PublicKey, doc.UserData, doc.Nonce)
			}
			if err := attestation.Verify(doc, f.ca.Roots(), f.now); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRequestValidate(t *testing.T) {
	tests := []struct {
		name string
		req  attestation.Request
		want error
	}{
		{name: "empty", req: attestation.Request{}},
		{name: "all at the limit", req: attestation.Request{
			PublicKey: make([]byte, attestation.MaxPublicKeySize),
			UserData:  make([]byte, attestation.MaxUserDataSize),
			Nonce:     make([]byte, attestation.MaxNonceSize),
		}},
		{name: "public_key past the limit", req: attestation.Request{PublicKey: make([]byte, attestation.MaxPublicKeySize+1)}, want: attestation.ErrTooLarge},
		{name: "user_data past the limit", req: attestation.Request{UserData: make([]byte, attestation.MaxUserDataSize+1)}, want: attestation.ErrTooLarge},
		{name: "nonce past the limit", req: attestation.Request{Nonce: make([]byte, attestation.MaxNonceSize+1)}, want: attestation.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.req.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkTyped(t, err, tt.want)
		})
	}
}

func TestErrorIs(t *testing.T) {
	err := &attestation.Error{Check: attestation.CheckExpired, Reason: "certificate expired"}
	if !errors.Is(err, attestation.ErrExpired) {
		t.Error("detailed error does not match its sentinel")
	}
	if errors.Is(err, attestation.ErrSignature) {
		t.Error("detailed error matches another check's sentinel")
	}
	if errors.Is(err, &attestation.Error{Check: attestation.CheckExpired, Reason: "another reason"}) {
		t.Error("a detailed error matches a different detailed error of the same check")
	}
	wrapped := &attestation.Error{Check: attestation.CheckDevice, Reason: "x", Err: context.Canceled}
	if !errors.Is(wrapped, context.Canceled) {
		t.Error("Unwrap does not reach the underlying error")
	}
	if got, want := err.Error(), "attestation: certificate expired: certificate expired"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestSimulatorTrustIsSeparate: simulator documents never verify against
// the AWS root, and AWS documents never against a simulator root (the
// latter is in TestRealDocuments).
func TestSimulatorTrustIsSeparate(t *testing.T) {
	f := newSimFixture(t)
	doc, err := attestation.Parse(f.doc)
	if err != nil {
		t.Fatal(err)
	}
	checkTyped(t, attestation.Verify(doc, attestation.NitroRoots(), f.now), attestation.ErrChain)
	ca2, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	checkTyped(t, attestation.Verify(doc, ca2.Roots(), f.now), attestation.ErrChain)
}
