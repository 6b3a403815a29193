package devkms_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// instanceModuleID is a NitroTPM module ID of the form real ones have.
const instanceModuleID = "i-0abc123def4567890-tpm0000000000000000"

// instanceDoc returns a NitroTPM attestation document of a simulated EC2
// instance whose boot measured pcrs (the other PCRs hold a TPM's reset
// values), carrying pub, signed under ca as the Nitro Hypervisor signs an
// instance's documents.
func instanceDoc(t testing.TB, ca *nsmsim.CA, pcrs map[int][]byte, pub any, now func() time.Time) []byte {
	t.Helper()
	sim, err := nsmsim.New(ca, nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: nitrotpmsim.DefaultPCRs(pcrs), ModuleID: instanceModuleID, Now: now})
	if err != nil {
		t.Fatalf("nsmsim.New: %v", err)
	}
	var spki []byte
	if pub != nil {
		if spki, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	return doc
}

// logBuffer collects devkms's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// line returns the last log line that contains every part, or "".
func (b *logBuffer) line(parts ...string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(b.buf.String(), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(lines[i], p)
		}
		if ok {
			return lines[i]
		}
	}
	return ""
}

// instancePolicy is the key policy of the KMS Developer Guide's NitroTPM
// example ("Condition keys for NitroTPM": the data-processing role may
// Decrypt when kms:RecipientAttestation:NitroTPMPCR4 matches, compared
// with StringEqualsIgnoreCase), with PCR12 besides PCR4 as an Attestable
// AMI's standard boot needs, and the values in upper case as people paste
// them.
func instancePolicy(pcr4, pcr12 []byte) string {
	cond := `"kms:RecipientAttestation:NitroTPMPCR4": "` + strings.ToUpper(hex.EncodeToString(pcr4)) + `"`
	if pcr12 != nil {
		cond += `, "kms:RecipientAttestation:NitroTPMPCR12": "` + strings.ToUpper(hex.EncodeToString(pcr12)) + `"`
	}
	return `{"Version": "2012-10-17", "Statement": [{
  "Sid": "Enable NitroTPM data processing",
  "Effect": "Allow",
  "Principal": {"AWS": "arn:aws:iam::123456789012:role/data-processing"},
  "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateRandom"],
  "Resource": "*",
  "Condition": {"StringEqualsIgnoreCase": {` + cond + `}}
}]}`
}

func pcrValue(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, attestation.PCRSize)
	rand.Read(b)
	return b
}

// TestNitroTPMRecipient: devkms takes an EC2 instance's NitroTPM document
// as a Recipient as KMS does: verified against the trusted roots, fresh,
// with an RSA key, its nitrotpm_pcrs as kms:RecipientAttestation:
// NitroTPMPCR<n>, and the answer only in CiphertextForRecipient. Another
// boot (PCR4 or PCR12), no Recipient, or an enclave's document whose PCRs
// hold the instance's values is refused; the request log names the module
// and the PCRs under CloudTrail's field names.
func TestNitroTPMRecipient(t *testing.T) {
	ca := sharedCA(t)
	pcr4, pcr12 := pcrValue(t), pcrValue(t)
	logs := &logBuffer{}
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithCredentials(enclaveRole, otherUser),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.AccountID = "123456789012"
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}),
	)
	keyID := kmsd.CreateKey(t, instancePolicy(pcr4, pcr12))
	role := kmsd.ClientFor(t, enclaveRole.AccessKeyID)
	priv := sharedRecipientKey(t)
	measured := map[int][]byte{4: pcr4, 12: pcr12}
	good := &types.RecipientInfo{AttestationDocument: instanceDoc(t, ca, measured, &priv.PublicKey, nil), KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}

	gdk, err := role.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256, Recipient: good})
	if err != nil {
		t.Fatalf("GenerateDataKey with the instance's NitroTPM document: %v", err)
	}
	if gdk.Plaintext != nil || len(gdk.CiphertextForRecipient) == 0 {
		t.Fatalf("GenerateDataKey: Plaintext %d bytes, CiphertextForRecipient %d; want none and the envelope", len(gdk.Plaintext), len(gdk.CiphertextForRecipient))
	}
	dataKey, err := cms.Decrypt(gdk.CiphertextForRecipient, priv)
	if err != nil || len(dataKey) != 32 {
		t.Fatalf("opening the GenerateDataKey envelope: %d bytes, %v", len(dataKey), err)
	}
	dec, err := role.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, Recipient: good})
	if err != nil {
		t.Fatalf("Decrypt with the instance's NitroTPM document: %v", err)
	}
	if got, err := cms.Decrypt(dec.CiphertextForRecipient, priv); err != nil || !bytes.Equal(got, dataKey) || dec.Plaintext != nil {
		t.Fatalf("Decrypt envelope: %v; plaintext outside it: %d bytes", err, len(dec.Plaintext))
	}

	t.Run("the request log names the document as CloudTrail does", func(t *testing.T) {
		line := logs.line("op=Decrypt", "status=200")
		b64 := base64.StdEncoding.EncodeToString
		for _, want := range []string{
			"recipient.attestationDocumentModuleId=" + instanceModuleID,
			"recipient.attestationDocumentNitroTPMPCR4=" + b64(pcr4),
			"recipient.attestationDocumentNitroTPMPCR12=" + b64(pcr12),
			"recipient.attestationDocumentNitroTPMPCR16=" + b64(make([]byte, attestation.PCRSize)),
		} {
			if !strings.Contains(line, want) {
				t.Errorf("log line %q lacks %q", line, want)
			}
		}
		// The PCRs AWS's example does not show (but PCR12), and the
		// enclave fields, are not recorded.
		for _, unwanted := range []string{"NitroTPMPCR0=", "NitroTPMPCR17=", "Enclave"} {
			if strings.Contains(line, unwanted) {
				t.Errorf("log line %q has %q", line, unwanted)
			}
		}
	})

	other := func(pcrs map[int][]byte) *types.RecipientInfo {
		return &types.RecipientInfo{AttestationDocument: instanceDoc(t, ca, pcrs, &priv.PublicKey, nil)}
	}
	// An enclave whose PCR4 (its parent instance's ID) and every other PCR
	// hold the instance's PCR4 value.
	enclavePCRs := map[int][]byte{}
	for i := range attestation.PCRCount {
		enclavePCRs[i] = pcr4
	}
	enclaveDoc, _ := recipient(t, ca, enclavePCRs)
	denied := enclaveRole.Principal + " is not authorized to perform: kms:Decrypt on resource: " + kmsd.KeyARN(keyID) + " because no resource-based policy allows the kms:Decrypt action"
	tests := []struct {
		name      string
		recipient *types.RecipientInfo
	}{
		{"another boot manager (PCR4)", other(map[int][]byte{4: pcrValue(t), 12: pcr12})},
		{"another kernel command line (PCR12)", other(map[int][]byte{4: pcr4, 12: pcrValue(t)})},
		{"nothing measured into PCR12", other(map[int][]byte{4: pcr4})},
		{"PCR4 and PCR12 swapped", other(map[int][]byte{4: pcr12, 12: pcr4})},
		{"no Recipient", nil},
		{"an enclave's document with the instance's values in its PCRs", enclaveDoc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := role.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, Recipient: tt.recipient})
			if err == nil {
				t.Fatalf("Decrypt succeeded (%d bytes of envelope, %d of plaintext), want AccessDeniedException", len(out.CiphertextForRecipient), len(out.Plaintext))
			}
			wantAPIError(t, err, "AccessDeniedException", "User: "+denied)
		})
	}
	t.Run("another principal with the instance's document", func(t *testing.T) {
		_, err := kmsd.ClientFor(t, otherUser.AccessKeyID).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, Recipient: good})
		wantAPIError(t, err, "AccessDeniedException", "User: "+otherUser.Principal+" is not authorized")
	})
	t.Run("GenerateRandom", func(t *testing.T) {
		out, err := role.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(48), Recipient: good})
		if err != nil {
			t.Fatal(err)
		}
		if b, err := cms.Decrypt(out.CiphertextForRecipient, priv); err != nil || len(b) != 48 || out.Plaintext != nil {
			t.Fatalf("GenerateRandom envelope: %d bytes, %v; plaintext outside it: %d bytes", len(b), err, len(out.Plaintext))
		}
	})
}

// TestNitroTPMDocumentIsNoEnclave: the other way round, an instance whose
// PCR0-PCR4 hold exactly an enclave image's measurements (PCR0 is what an
// enclave key policy calls ImageSha384) gets nothing under the policy of
// AWS's Nitro Enclaves example, and the enclave itself does; the log
// records the enclave's document under the enclave's CloudTrail fields.
func TestNitroTPMDocumentIsNoEnclave(t *testing.T) {
	ca := sharedCA(t)
	pcrs := randomPCRs(t)
	logs := &logBuffer{}
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithCredentials(enclaveRole),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.AccountID = "123456789012"
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}),
	)
	keyID := kmsd.CreateKey(t, examplePolicy(t, pcrs))
	role := kmsd.ClientFor(t, enclaveRole.AccessKeyID)
	priv := sharedRecipientKey(t)

	tpm := &types.RecipientInfo{AttestationDocument: instanceDoc(t, ca, pcrs, &priv.PublicKey, nil)}
	_, err := role.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256, Recipient: tpm})
	wantAPIError(t, err, "AccessDeniedException", "is not authorized to perform: kms:GenerateDataKey")

	enclave, _ := recipient(t, ca, pcrs)
	if _, err := role.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256, Recipient: enclave}); err != nil {
		t.Fatalf("the enclave itself: %v", err)
	}
	line := logs.line("op=GenerateDataKey", "status=200")
	b64 := base64.StdEncoding.EncodeToString
	for _, want := range []string{
		"recipient.attestationDocumentModuleId=" + nsmsim.DefaultModuleID,
		"recipient.attestationDocumentEnclaveImageDigest=" + b64(pcrs[0]),
		"recipient.attestationDocumentEnclavePCR1=" + b64(pcrs[1]),
		"recipient.attestationDocumentEnclavePCR4=" + b64(pcrs[4]),
		"recipient.attestationDocumentEnclavePCR8=" + b64(make([]byte, attestation.PCRSize)),
	} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "NitroTPM") || strings.Contains(line, "EnclavePCR0=") {
		t.Errorf("log line %q records the enclave's document under other fields", line)
	}
	// The refused NitroTPM request is logged with its document too.
	if line := logs.line("op=GenerateDataKey", "error=AccessDeniedException"); !strings.Contains(line, "recipient.attestationDocumentNitroTPMPCR4="+b64(pcrs[4])) {
		t.Errorf("the refused request's log line %q does not record its NitroTPM document", line)
	}
}

// TestNitroTPMRecipientChecks: a NitroTPM document is held to the same
// checks as an enclave's, and each error names its kind.
func TestNitroTPMRecipientChecks(t *testing.T) {
	ca := sharedCA(t)
	now := time.Now().UTC().Truncate(time.Second)
	clk := &fakeClock{t: now}
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithConfig(func(c *devkms.Config) { c.Now = clk.Now }),
	)
	c := kmsd.Client(t)
	priv := sharedRecipientKey(t)
	otherCA, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	age := devkms.DefaultMaxAttestationAge
	at := func(ts time.Time) func() time.Time { return func() time.Time { return ts } }
	good := instanceDoc(t, ca, nil, &priv.PublicKey, at(now))
	// The module ID turned into an enclave's: Parse refuses the form
	// before the (now broken) signature is looked at.
	enclaveID := bytes.Clone(good)
	i := bytes.Index(enclaveID, []byte("-tpm0000"))
	if i < 0 {
		t.Fatal("no module ID in the document")
	}
	copy(enclaveID[i:], "-enc")

	tests := []struct {
		name string
		doc  []byte
		want string // "" for success
	}{
		{"fresh", good, ""},
		{"exactly the maximum age", instanceDoc(t, ca, nil, &priv.PublicKey, at(now.Add(-age))), ""},
		{"1ms older than the maximum age", instanceDoc(t, ca, nil, &priv.PublicKey, at(now.Add(-age-time.Millisecond))),
			"Invalid Recipient: the attestation document is too old"},
		{"untrusted root", instanceDoc(t, otherCA, nil, &priv.PublicKey, at(now)),
			"Invalid Recipient: the NitroTPM attestation document does not verify: attestation: untrusted certificate chain"},
		{"RSA-1024 public key", instanceDoc(t, ca, nil, &small.PublicKey, at(now)),
			"Invalid Recipient: the NitroTPM attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: public_key is an RSA-1024 key"},
		{"no public key", instanceDoc(t, ca, nil, nil, at(now)),
			"Invalid Recipient: the NitroTPM attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: the document has no public_key"},
		{"an enclave's module ID", enclaveID,
			"Invalid Recipient: the attestation document is malformed: attestation: wrong module ID form"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16), Recipient: &types.RecipientInfo{AttestationDocument: tt.doc}})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("GenerateRandom: %v", err)
				}
				if b, err := cms.Decrypt(out.CiphertextForRecipient, priv); err != nil || len(b) != 16 {
					t.Fatalf("envelope: %v", err)
				}
				return
			}
			wantAPIError(t, err, "ValidationException", tt.want)
		})
	}
}

// TestRealNitroTPMDocuments: documents the Nitro Hypervisor signed for real
// EC2 instances (internal/attestation/testdata/nitrotpm) verify in devkms
// against the AWS Nitro root it always trusts, at their own time: they are
// refused only because their public_key, a bare 65-byte P-256 point made
// for another use, cannot receive KMS's answer (KMS encrypts to an RSA
// SubjectPublicKeyInfo). An hour past their leaf certificate they no longer
// verify.
func TestRealNitroTPMDocuments(t *testing.T) {
	dir := filepath.Join("..", "attestation", "testdata", "nitrotpm")
	raw, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var expected map[string]struct {
		TimestampMS int64  `json:"timestamp_ms"`
		ModuleID    string `json:"module_id"`
	}
	if err := json.Unmarshal(raw, &expected); err != nil {
		t.Fatal(err)
	}
	if len(expected) == 0 {
		t.Fatal("no real NitroTPM documents")
	}
	for name, want := range expected {
		t.Run(name, func(t *testing.T) {
			doc, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			clk := &fakeClock{t: time.UnixMilli(want.TimestampMS)}
			logs := &logBuffer{}
			kmsd := devkmstest.Start(t, devkmstest.WithConfig(func(c *devkms.Config) {
				c.Now = clk.Now
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			}))
			c := kmsd.Client(t)
			_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16), Recipient: &types.RecipientInfo{AttestationDocument: doc}})
			wantAPIError(t, err, "ValidationException",
				"Invalid Recipient: the NitroTPM attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: public_key (65 bytes) is not a DER SubjectPublicKeyInfo")

			clk.Set(time.UnixMilli(want.TimestampMS).Add(4 * time.Hour))
			_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16), Recipient: &types.RecipientInfo{AttestationDocument: doc}})
			wantAPIError(t, err, "ValidationException", "Invalid Recipient: the NitroTPM attestation document does not verify: attestation: certificate expired")
		})
	}
}
