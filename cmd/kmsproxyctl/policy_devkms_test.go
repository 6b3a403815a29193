package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// measurementsJSON writes pcrs in nitro-cli's build-enclave form.
func measurementsJSON(pcrs map[int][]byte) string {
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var b strings.Builder
	b.WriteString(`{"Measurements": {"HashAlgorithm": "Sha384 { ... }"`)
	for _, i := range idx {
		fmt.Fprintf(&b, `, "PCR%d": "%x"`, i, pcrs[i])
	}
	b.WriteString("}}\n")
	return b.String()
}

func randomPCR(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, attestation.PCRSize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGeneratedPolicyInDevKMS is the proof that `policy generate` binds a
// key to exactly the measured image: its output, set as a devkms key
// policy, lets the parent's role decrypt with an attestation document of the
// measured image (the answer only the enclave's key opens), and refuses a
// document with any measured PCR off by one bit, a debug-mode document, and
// a call without attestation.
func TestGeneratedPolicyInDevKMS(t *testing.T) {
	measured := map[int][]byte{0: randomPCR(t), 1: randomPCR(t), 2: randomPCR(t)}
	dir := t.TempDir()
	mfile := filepath.Join(dir, "measurements.json")
	if err := os.WriteFile(mfile, []byte(measurementsJSON(measured)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, policy, stderr := runCLI(t, "", "policy", "generate", "--measurements", mfile, "--role", testRoleARN)
	if code != 0 {
		t.Fatalf("policy generate: status %d: %s", code, stderr)
	}

	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithConfig(func(c *devkms.Config) { c.AccountID = testAccount }),
		devkmstest.WithCredentials(
			devkms.Credential{AccessKeyID: testRoleKeyID, SecretAccessKey: testRoleSecret, Principal: testSessionARN},
			devkms.Credential{AccessKeyID: testAdminKeyID, SecretAccessKey: testAdminSecret, Principal: "arn:aws:iam::" + testAccount + ":root"},
		))
	keyID := kmsd.CreateKey(t, policy)
	role := kmsd.ClientFor(t, testRoleKeyID)
	admin := kmsd.ClientFor(t, testAdminKeyID)
	ctx := context.Background()

	secret := []byte("the enclave's database password")
	enc, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: secret})
	if err != nil {
		t.Fatalf("the administrator cannot encrypt: %v", err)
	}

	recipientKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&recipientKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	document := func(pcrs map[int][]byte) []byte {
		t.Helper()
		sim, err := nsmsim.New(ca, nsmsim.Options{PCRs: pcrs})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	with := func(changes map[int][]byte) map[int][]byte {
		pcrs := map[int][]byte{}
		for i, v := range measured {
			pcrs[i] = v
		}
		for i, v := range changes {
			pcrs[i] = v
		}
		return pcrs
	}
	offByOneBit := func(i int) []byte {
		v := bytes.Clone(measured[i])
		v[len(v)-1] ^= 1
		return v
	}

	tests := []struct {
		name  string
		pcrs  map[int][]byte // nil: no Recipient at all
		allow bool
	}{
		{name: "measured image", pcrs: with(nil), allow: true},
		{name: "measured image on another instance (PCR3, PCR4 differ)", pcrs: with(map[int][]byte{3: randomPCR(t), 4: randomPCR(t)}), allow: true},
		{name: "PCR0 one bit off", pcrs: with(map[int][]byte{0: offByOneBit(0)})},
		{name: "PCR1 one bit off", pcrs: with(map[int][]byte{1: offByOneBit(1)})},
		{name: "PCR2 one bit off", pcrs: with(map[int][]byte{2: offByOneBit(2)})},
		{name: "debug mode (all zero)", pcrs: map[int][]byte{}},
		{name: "no attestation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}
			if tt.pcrs != nil {
				in.Recipient = &types.RecipientInfo{
					AttestationDocument:    document(tt.pcrs),
					KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
				}
			}
			out, err := role.Decrypt(ctx, in)
			if !tt.allow {
				var apiErr smithy.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException" {
					t.Fatalf("Decrypt = %v, want AccessDeniedException", err)
				}
				if !strings.Contains(apiErr.ErrorMessage(), "explicit deny") {
					t.Errorf("refused by %q, want the generated policy's explicit deny", apiErr.ErrorMessage())
				}
				return
			}
			if err != nil {
				t.Fatalf("Decrypt with the measured image's document: %v", err)
			}
			if out.Plaintext != nil {
				t.Errorf("KMS returned Plaintext beside CiphertextForRecipient")
			}
			got, err := cms.Decrypt(out.CiphertextForRecipient, recipientKey)
			if err != nil {
				t.Fatalf("failed to open CiphertextForRecipient: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Errorf("plaintext = %q, want %q", got, secret)
			}
		})
	}

	// The other attested operations follow the same statements.
	if _, err := role.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256,
		Recipient: &types.RecipientInfo{AttestationDocument: document(with(nil)), KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}}); err != nil {
		t.Errorf("GenerateDataKey with the measured image: %v", err)
	}
	if _, err := role.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256}); err == nil {
		t.Error("GenerateDataKey without attestation was allowed")
	}

	// policy check tells the same story from the same policy.
	pfile := filepath.Join(dir, "key-policy.json")
	if err := os.WriteFile(pfile, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	off := filepath.Join(dir, "off.json")
	if err := os.WriteFile(off, []byte(measurementsJSON(with(map[int][]byte{2: offByOneBit(2)}))), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		file string
		want int
	}{{mfile, 0}, {off, 1}} {
		code, out, _ := runCLI(t, "", "policy", "check", "--key-policy", pfile, "--measurements", c.file,
			"--principal", testSessionARN, "--action", "kms:Decrypt", "--key-arn", kmsd.KeyARN(keyID))
		if code != c.want {
			t.Errorf("policy check with %s: status %d, want %d:\n%s", filepath.Base(c.file), code, c.want, out)
		}
	}
	if !strings.Contains(policy, hex.EncodeToString(measured[0])) {
		t.Errorf("the policy does not name the image's PCR0")
	}
}
