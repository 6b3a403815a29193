package attestation_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/veraison/go-cose"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// The committed vectors in testdata/vectors are produced by
// generateVectors below from fixed keys and a fixed clock, so the same
// code always yields the same bytes. TestVectors regenerates them and
// fails when the committed files differ; after an intended change run
//
//	go test ./internal/attestation -run TestVectors -update
var update = flag.Bool("update", false, "rewrite testdata/vectors from the deterministic generator")

const vectorDir = "testdata/vectors"

// vector is one entry of testdata/vectors/vectors.json.
type vector struct {
	File     string    `json:"file"`
	Comment  string    `json:"comment"`
	VerifyAt time.Time `json:"verify_at"`
	// Error is the Check (its String form) that Parse or Verify must
	// report; empty for documents that verify.
	Error string `json:"error,omitempty"`
	// For valid documents, the fields Parse must return.
	ModuleID    string            `json:"module_id,omitempty"`
	TimestampMS int64             `json:"timestamp_ms,omitempty"`
	PCRs        map[string]string `json:"pcrs,omitempty"` // index -> hex, all 16
	PublicKey   *string           `json:"public_key,omitempty"`
	UserData    *string           `json:"user_data,omitempty"`
	Nonce       *string           `json:"nonce,omitempty"`
}

// fixedKey derives a P-384 key from a label: the scalar is SHA-384 of the
// label (below the group order with overwhelming probability).
func fixedKey(t testing.TB, curve elliptic.Curve, label string) *ecdsa.PrivateKey {
	t.Helper()
	sum := sha512.Sum384([]byte("kmsproxy attestation test vector key: " + label))
	k, err := ecdsa.ParseRawPrivateKey(curve, sum[:curve.Params().BitSize/8])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// deterministic makes go-cose sign with RFC 6979 nonces, for tampered
// vectors re-signed by the leaf key.
type deterministic struct{ *ecdsa.PrivateKey }

func (d deterministic) Sign(_ io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	return d.PrivateKey.Sign(nil, digest, crypto.SHA384)
}

func generateVectors(t testing.TB) (files map[string][]byte, index []vector) {
	t.Helper()
	epoch := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	ca, err := nsmsim.NewCAFromKeys(fixedKey(t, elliptic.P384(), "root"), fixedKey(t, elliptic.P384(), "intermediate"), epoch.AddDate(0, -5, 0))
	if err != nil {
		t.Fatal(err)
	}
	leafKey := fixedKey(t, elliptic.P384(), "leaf")
	now := epoch
	opts := nsmsim.Options{
		Now:        func() time.Time { return now },
		NewLeafKey: func() (*ecdsa.PrivateKey, error) { return leafKey, nil },
	}
	debugSim, err := nsmsim.New(ca, opts)
	if err != nil {
		t.Fatal(err)
	}
	measured := map[int][]byte{}
	for _, i := range []int{0, 1, 2, 3, 4, 8} {
		sum := sha512.Sum384([]byte("kmsproxy test vector PCR" + strconv.Itoa(i)))
		measured[i] = sum[:]
	}
	opts.PCRs = measured
	opts.ModuleID = "i-0a1b2c3d4e5f60718-enc0123456789abcdef"
	measuredSim, err := nsmsim.New(ca, opts)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&fixedKey(t, elliptic.P256(), "recipient").PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	files = map[string][]byte{
		"root.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.RootCertificate().Raw}),
	}
	add := func(name, comment string, doc []byte, at time.Time, wantErr string, req *attestation.Request, pcrs map[int][]byte, moduleID string) {
		v := vector{File: name, Comment: comment, VerifyAt: at, Error: wantErr}
		if req != nil {
			v.ModuleID = moduleID
			v.TimestampMS = at.UnixMilli()
			v.PCRs = map[string]string{}
			for i := range attestation.PCRCount {
				p := make([]byte, attestation.PCRSize)
				if m, ok := pcrs[i]; ok {
					p = m
				}
				v.PCRs[strconv.Itoa(i)] = hex.EncodeToString(p)
			}
			opt := func(b []byte) *string {
				s := hex.EncodeToString(b) // "" for null or empty: Parse returns nil for both
				return &s
			}
			v.PublicKey, v.UserData, v.Nonce = opt(req.PublicKey), opt(req.UserData), opt(req.Nonce)
		}
		files[name] = doc
		index = append(index, v)
	}
	attest := func(sim *nsmsim.Simulator, req attestation.Request) ([]byte, time.Time) {
		now = now.Add(time.Second)
		doc, err := sim.Attest(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return doc, now
	}

	req := attestation.Request{}
	doc, at := attest(debugSim, req)
	add("debug-null-optionals.cbor", "debug-mode PCRs (all zero); public_key, user_data and nonce null", doc, at, "", &req, nil, nsmsim.DefaultModuleID)

	req = attestation.Request{PublicKey: []byte{}, UserData: []byte{}, Nonce: []byte{}}
	doc, at = attest(debugSim, req)
	add("debug-empty-optionals.cbor", "public_key, user_data and nonce as empty byte strings (as in nitrite-2021-debug.cbor)", doc, at, "", &req, nil, nsmsim.DefaultModuleID)

	full := attestation.Request{PublicKey: spki, UserData: []byte(`{"purpose":"kmsproxy test vector"}`), Nonce: bytes.Repeat([]byte{0x5a}, 32)}
	fullDoc, fullAt := attest(measuredSim, full)
	add("measured-full.cbor", "PCR0-4 and 8 set; a DER P-256 public key, JSON user_data, 32-byte nonce", fullDoc, fullAt, "", &full, measured, opts.ModuleID)

	req = attestation.Request{PublicKey: []byte("raw key bytes, not DER"), Nonce: []byte{1}}
	doc, at = attest(measuredSim, req)
	add("public-key-not-der.cbor", "public_key that is not a DER key (NSM does not check it)", doc, at, "", &req, measured, opts.ModuleID)

	req = attestation.Request{
		PublicKey: bytes.Repeat([]byte{0xa1}, attestation.MaxPublicKeySize),
		UserData:  bytes.Repeat([]byte{0xb2}, attestation.MaxUserDataSize),
		Nonce:     bytes.Repeat([]byte{0xc3}, attestation.MaxNonceSize),
	}
	doc, at = attest(measuredSim, req)
	add("fields-at-limits.cbor", "public_key, user_data and nonce of 1024 bytes each, NSM's limits", doc, at, "", &req, measured, opts.ModuleID)

	add("tagged.cbor", "measured-full.cbor wrapped in COSE_Sign1 tag 18", append([]byte{0xd2}, fullDoc...), fullAt, "", &full, measured, opts.ModuleID)

	// Invalid documents.
	bad := slices.Clone(fullDoc)
	bad[len(bad)-1] ^= 0x01
	add("bad-signature.cbor", "measured-full.cbor with the last signature byte changed", bad, fullAt, attestation.CheckSignature.String(), nil, nil, "")
	add("truncated.cbor", "measured-full.cbor without its last 10 bytes", fullDoc[:len(fullDoc)-10], fullAt, attestation.CheckMalformed.String(), nil, nil, "")

	// Re-signed by the leaf key after editing the payload, so only the
	// edited field is wrong.
	var parts []cbor.RawMessage
	if err := cbor.Unmarshal(fullDoc, &parts); err != nil {
		t.Fatal(err)
	}
	var payload []byte
	if err := cbor.Unmarshal(parts[2], &payload); err != nil {
		t.Fatal(err)
	}
	encMode, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES384, deterministic{leafKey})
	if err != nil {
		t.Fatal(err)
	}
	edited := func(change func(m map[string]cbor.RawMessage)) []byte {
		var m map[string]cbor.RawMessage
		if err := cbor.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		change(m)
		p, err := encMode.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := cose.Sign1Untagged(nil, signer, cose.Headers{
			Protected: cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmES384},
		}, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	set := func(field string, v any) func(m map[string]cbor.RawMessage) {
		return func(m map[string]cbor.RawMessage) {
			b, err := encMode.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			m[field] = b
		}
	}
	pcrs15 := map[int][]byte{}
	for i := range 15 {
		pcrs15[i] = make([]byte, attestation.PCRSize)
	}
	add("resigned-valid.cbor", "measured-full.cbor re-encoded (definite-length map, sorted keys) and re-signed: still valid", edited(func(map[string]cbor.RawMessage) {}), fullAt, "", &full, measured, opts.ModuleID)
	add("user-data-too-large.cbor", "user_data of 1025 bytes, re-signed", edited(set("user_data", make([]byte, attestation.MaxUserDataSize+1))), fullAt, attestation.CheckTooLarge.String(), nil, nil, "")
	add("pcrs-15.cbor", "15 PCRs, re-signed", edited(set("pcrs", pcrs15)), fullAt, attestation.CheckPCRs.String(), nil, nil, "")
	add("digest-sha256.cbor", "digest SHA256, re-signed", edited(set("digest", "SHA256")), fullAt, attestation.CheckDigest.String(), nil, nil, "")
	add("cabundle-empty.cbor", "empty cabundle, re-signed", edited(set("cabundle", [][]byte{})), fullAt, attestation.CheckMalformed.String(), nil, nil, "")

	js, err := json.MarshalIndent(index, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	files["vectors.json"] = append(js, '\n')
	return files, index
}

func readVectorIndex(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, "vectors.json"))
	if err != nil {
		t.Fatalf("failed to read the vector index: %v", err)
	}
	var index []vector
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	if len(index) == 0 {
		t.Fatal("the vector index is empty")
	}
	return index
}

func vectorRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorDir, "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("testdata/vectors/root.pem holds no certificate")
	}
	return pool
}

func TestVectors(t *testing.T) {
	files, _ := generateVectors(t)
	if *update {
		if err := os.MkdirAll(vectorDir, 0o755); err != nil {
			t.Fatal(err)
		}
		old, _ := filepath.Glob(filepath.Join(vectorDir, "*"))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(vectorDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("committed files match the generator", func(t *testing.T) {
		committed, err := filepath.Glob(filepath.Join(vectorDir, "*"))
		if err != nil {
			t.Fatal(err)
		}
		if len(committed) != len(files) {
			t.Errorf("%s holds %d files, the generator makes %d (run with -update)", vectorDir, len(committed), len(files))
		}
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(vectorDir, name))
			if err != nil {
				t.Errorf("%v (run with -update)", err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the generator's output (run with -update after an intended change)", name)
			}
		}
	})

	roots := vectorRoots(t)
	for _, v := range readVectorIndex(t) {
		t.Run(v.File, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(vectorDir, v.File))
			if err != nil {
				t.Fatal(err)
			}
			doc, err := attestation.Parse(b)
			if err == nil {
				err = attestation.Verify(doc, roots, v.VerifyAt)
			}
			if v.Error != "" {
				var typed *attestation.Error
				if !errors.As(err, &typed) || typed.Check.String() != v.Error {
					t.Fatalf("got %v, want a %q error", err, v.Error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(v, describeVector(v, doc)); diff != "" {
				t.Errorf("parsed fields (-index +parsed):\n%s", diff)
			}
			if err := attestation.Verify(doc, roots, time.Now()); !errors.Is(err, attestation.ErrExpired) {
				t.Errorf("Verify now: got %v, want ErrExpired", err)
			}
			if err := attestation.Verify(doc, attestation.NitroRoots(), v.VerifyAt); !errors.Is(err, attestation.ErrChain) {
				t.Errorf("Verify with the AWS root: got %v, want ErrChain", err)
			}
		})
	}
}

// describeVector renders a parsed document in the index's form.
func describeVector(v vector, doc *attestation.Document) vector {
	got := vector{File: v.File, Comment: v.Comment, VerifyAt: v.VerifyAt,
		ModuleID: doc.ModuleID, TimestampMS: doc.Timestamp.UnixMilli(), PCRs: map[string]string{}}
	for i, p := range doc.PCRs {
		got.PCRs[strconv.Itoa(i)] = hex.EncodeToString(p)
	}
	s := func(b []byte) *string {
		h := hex.EncodeToString(b)
		return &h
	}
	got.PublicKey, got.UserData, got.Nonce = s(doc.PublicKey), s(doc.UserData), s(doc.Nonce)
	return got
}
