package attestation_test

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// realExpected is one entry of testdata/real/expected.json.
type realExpected struct {
	CABundleLen  int    `json:"cabundle_len"`
	Digest       string `json:"digest"`
	ModuleID     string `json:"module_id"`
	NonceLen     int    `json:"nonce_len"`
	PCR0         string `json:"pcr0"`
	PCR1         string `json:"pcr1"`
	PCR2         string `json:"pcr2"`
	PCR3         string `json:"pcr3"`
	PCR4         string `json:"pcr4"`
	PCR8         string `json:"pcr8"`
	PCRCount     int    `json:"pcr_count"`
	PublicKeyLen int    `json:"public_key_len"`
	TimestampMS  int64  `json:"timestamp_ms"`
	UserDataLen  int    `json:"user_data_len"`
}

func summarize(d *attestation.Document) realExpected {
	h := func(i int) string { return hex.EncodeToString(d.PCRs[i]) }
	return realExpected{
		CABundleLen:  len(d.CABundle),
		Digest:       d.Digest,
		ModuleID:     d.ModuleID,
		NonceLen:     len(d.Nonce),
		PCR0:         h(0),
		PCR1:         h(1),
		PCR2:         h(2),
		PCR3:         h(3),
		PCR4:         h(4),
		PCR8:         h(8),
		PCRCount:     len(d.PCRs),
		PublicKeyLen: len(d.PublicKey),
		TimestampMS:  d.Timestamp.UnixMilli(),
		UserDataLen:  len(d.UserData),
	}
}

// realDocuments returns the real documents that must verify, by file name,
// with the expectations from expected.json. It fails when expected.json and
// the folder disagree, so a new sample cannot go untested.
func realDocuments(t testing.TB) map[string]realExpected {
	t.Helper()
	var want map[string]realExpected
	if err := json.Unmarshal(readTestdata(t, "real/expected.json"), &want); err != nil {
		t.Fatalf("failed to decode expected.json: %v", err)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "real", "*.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		name := filepath.Base(f)
		if strings.Contains(name, "bad-signature") {
			continue
		}
		names = append(names, name)
		if _, ok := want[name]; !ok {
			t.Errorf("%s has no entry in expected.json", name)
		}
	}
	if len(names) != len(want) || len(names) == 0 {
		t.Fatalf("real documents %v do not match expected.json (%d entries)", names, len(want))
	}
	return want
}

func TestRealDocuments(t *testing.T) {
	want := realDocuments(t)
	simCA, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	wrongRoots := simCA.Roots()

	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			b := readTestdata(t, "real/"+name)
			doc, err := attestation.Parse(b)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(w, summarize(doc)); diff != "" {
				t.Errorf("parsed fields differ from expected.json (-want +got):\n%s", diff)
			}
			for i, v := range doc.PCRs {
				if len(v) != attestation.PCRSize {
					t.Errorf("PCR%d is %d bytes", i, len(v))
				}
			}
			// Optional fields that are null or empty in the document are nil.
			for field, v := range map[string][]byte{"public_key": doc.PublicKey, "user_data": doc.UserData, "nonce": doc.Nonce} {
				if v != nil && len(v) == 0 {
					t.Errorf("%s is empty but not nil", field)
				}
			}

			if err := attestation.Verify(doc, attestation.NitroRoots(), doc.Timestamp); err != nil {
				t.Errorf("Verify at the document's timestamp: %v", err)
			}
			err = attestation.Verify(doc, attestation.NitroRoots(), time.Now())
			if !errors.Is(err, attestation.ErrExpired) {
				t.Errorf("Verify now: got %v, want ErrExpired", err)
			}
			err = attestation.Verify(doc, wrongRoots, doc.Timestamp)
			if !errors.Is(err, attestation.ErrChain) {
				t.Errorf("Verify with a simulator root: got %v, want ErrChain", err)
			}
			// After a successful verification the chain is cached; a wrong
			// pool must still be refused.
			if err := attestation.Verify(doc, attestation.NitroRoots(), doc.Timestamp); err != nil {
				t.Fatal(err)
			}
			err = attestation.Verify(doc, wrongRoots, doc.Timestamp)
			if !errors.Is(err, attestation.ErrChain) {
				t.Errorf("Verify with a simulator root after a cached success: got %v, want ErrChain", err)
			}
			err = attestation.Verify(doc, nil, doc.Timestamp)
			if !errors.Is(err, attestation.ErrChain) {
				t.Errorf("Verify with nil roots: got %v, want ErrChain", err)
			}
			// Before the leaf was issued.
			err = attestation.Verify(doc, attestation.NitroRoots(), doc.LeafCertificate().NotBefore.Add(-time.Second))
			if !errors.Is(err, attestation.ErrNotYetValid) {
				t.Errorf("Verify before the leaf's NotBefore: got %v, want ErrNotYetValid", err)
			}

			subjects := doc.ChainSubjects()
			if len(subjects) != 1+len(doc.CABundle) {
				t.Fatalf("ChainSubjects has %d entries, want %d", len(subjects), 1+len(doc.CABundle))
			}
			if got, want := subjects[len(subjects)-1], attestation.NitroRoot().Subject.String(); got != want {
				t.Errorf("last chain subject = %q, want the AWS root %q", got, want)
			}
			if !strings.Contains(subjects[0], doc.ModuleID) {
				t.Errorf("leaf subject %q does not name module %s", subjects[0], doc.ModuleID)
			}
		})
	}
}

func TestRealBadSignature(t *testing.T) {
	b := readTestdata(t, "real/veracruz-2022-bad-signature.cbor")
	doc, err := attestation.Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, at := range []time.Time{doc.Timestamp, time.Now()} {
		err := attestation.Verify(doc, attestation.NitroRoots(), at)
		if !errors.Is(err, attestation.ErrSignature) {
			t.Errorf("Verify at %v: got %v, want ErrSignature", at, err)
		}
	}
}

func TestNitroRootFingerprint(t *testing.T) {
	const want = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
	sum := sha256.Sum256(attestation.NitroRoot().Raw)
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("embedded root fingerprint = %s, want %s", got, want)
	}
	root := attestation.NitroRoot()
	if got, want := root.Subject.CommonName, "aws.nitro-enclaves"; got != want {
		t.Errorf("root CN = %q, want %q", got, want)
	}
	if !root.IsCA || root.NotAfter.Year() != 2049 {
		t.Errorf("root IsCA=%v NotAfter=%v, want a CA valid until 2049", root.IsCA, root.NotAfter)
	}
	if _, err := root.Verify(x509.VerifyOptions{Roots: attestation.NitroRoots(), CurrentTime: root.NotBefore.AddDate(1, 0, 0)}); err != nil {
		t.Errorf("NitroRoots does not hold the root: %v", err)
	}
}
