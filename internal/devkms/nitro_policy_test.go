package devkms_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

// examplePolicy returns the key policy from AWS's Nitro Enclaves
// documentation with its EXAMPLE placeholders replaced by the hex of pcrs
// (ImageSha384 is PCR0). The values are written in upper case: the policy
// compares them with StringEqualsIgnoreCase, while KMS (and devkms) put
// lower-case hex in the request context.
func examplePolicy(t testing.TB, pcrs map[int][]byte) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "keypolicy", "testdata", "aws-docs", "nitro-enclaves-example-key-policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("example policy: %v", err)
	}
	stmt := doc["Statement"].([]any)[0].(map[string]any)
	cond := stmt["Condition"].(map[string]any)["StringEqualsIgnoreCase"].(map[string]any)
	replaced := 0
	for k, v := range cond {
		if !strings.Contains(v.(string), "EXAMPLE") {
			t.Fatalf("example policy value of %s is not a placeholder: %v", k, v)
		}
		idx := 0
		if n, ok := strings.CutPrefix(k, "kms:RecipientAttestation:PCR"); ok {
			var err error
			if idx, err = strconv.Atoi(n); err != nil {
				t.Fatalf("example policy key %s", k)
			}
		} else if k != "kms:RecipientAttestation:ImageSha384" {
			t.Fatalf("unexpected condition key %s", k)
		}
		cond[k] = strings.ToUpper(hex.EncodeToString(pcrs[idx]))
		replaced++
	}
	if replaced != 6 {
		t.Fatalf("replaced %d placeholders, want 6 (ImageSha384, PCR0-PCR4)", replaced)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Principals of the test: the enclave's role session (the role the example
// policy names) and another user of the same account.
var (
	enclaveRole = devkms.Credential{
		AccessKeyID:     "ASIAENCLAVEROLE00001",
		SecretAccessKey: "enclave-role-secret",
		SessionToken:    "enclave-role-session-token",
		Principal:       "arn:aws:sts::123456789012:assumed-role/data-processing/i-0123456789abcdef0",
	}
	otherUser = devkms.Credential{
		AccessKeyID:     "AKIAOTHERUSER0000001",
		SecretAccessKey: "other-user-secret",
		Principal:       "arn:aws:iam::123456789012:user/bob",
	}
)

func TestNitroEnclavesExampleKeyPolicy(t *testing.T) {
	ca := sharedCA(t)
	pcrs := randomPCRs(t)
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithCredentials(enclaveRole, otherUser),
		devkmstest.WithConfig(func(c *devkms.Config) { c.AccountID = "123456789012" }),
	)
	keyID := kmsd.CreateKey(t, examplePolicy(t, pcrs))
	enclave := kmsd.ClientFor(t, enclaveRole.AccessKeyID)
	good, priv := recipient(t, ca, pcrs)

	// GenerateDataKey with the enclave's attestation: no plaintext, a
	// ciphertext blob, and the data key in CiphertextForRecipient.
	gdk, err := enclave.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256, Recipient: good})
	if err != nil {
		t.Fatalf("GenerateDataKey with matching attestation: %v", err)
	}
	if gdk.Plaintext != nil || len(gdk.CiphertextBlob) == 0 || len(gdk.CiphertextForRecipient) == 0 {
		t.Fatalf("GenerateDataKey: Plaintext %d bytes, CiphertextBlob %d, CiphertextForRecipient %d; want 0, >0, >0",
			len(gdk.Plaintext), len(gdk.CiphertextBlob), len(gdk.CiphertextForRecipient))
	}
	dataKey, err := cms.Decrypt(gdk.CiphertextForRecipient, priv)
	if err != nil {
		t.Fatalf("cms.Decrypt(GenerateDataKey envelope): %v", err)
	}
	if len(dataKey) != 32 {
		t.Fatalf("data key is %d bytes, want 32", len(dataKey))
	}

	// Decrypt of that blob with the same attestation returns the data key,
	// again only inside the envelope.
	dec, err := enclave.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, Recipient: good})
	if err != nil {
		t.Fatalf("Decrypt with matching attestation: %v", err)
	}
	if dec.Plaintext != nil || aws.ToString(dec.KeyId) != kmsd.KeyARN(keyID) {
		t.Fatalf("Decrypt: Plaintext %d bytes, KeyId %s; want none and %s", len(dec.Plaintext), aws.ToString(dec.KeyId), kmsd.KeyARN(keyID))
	}
	got, err := cms.Decrypt(dec.CiphertextForRecipient, priv)
	if err != nil {
		t.Fatalf("cms.Decrypt(Decrypt envelope): %v", err)
	}
	if !bytes.Equal(got, dataKey) {
		t.Fatalf("Decrypt envelope holds another plaintext than the data key")
	}
	t.Run("openssl", func(t *testing.T) {
		got := opensslDecrypt(t, dec.CiphertextForRecipient, priv)
		if !bytes.Equal(got, dataKey) {
			t.Fatalf("openssl cms -decrypt gave %d bytes that differ from the data key", len(got))
		}
	})

	// GenerateRandom has no key: the attestation is verified, nothing else.
	rnd, err := enclave.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(64), Recipient: good})
	if err != nil {
		t.Fatalf("GenerateRandom with attestation: %v", err)
	}
	if b, err := cms.Decrypt(rnd.CiphertextForRecipient, priv); err != nil || len(b) != 64 || rnd.Plaintext != nil {
		t.Fatalf("GenerateRandom envelope: %d bytes, %v, plaintext %d bytes; want 64 bytes in the envelope only", len(b), err, len(rnd.Plaintext))
	}

	otherPCRs := map[int][]byte{}
	for i, v := range pcrs {
		otherPCRs[i] = v
	}
	otherPCRs[3] = bytes.Repeat([]byte{0x33}, 48)
	wrongPCR, _ := recipient(t, ca, otherPCRs)

	denied := "is not authorized to perform: kms:Decrypt on resource: " + kmsd.KeyARN(keyID) + " because no resource-based policy allows the kms:Decrypt action"
	tests := []struct {
		name   string
		client *kms.Client
		in     *kms.DecryptInput
		want   string
	}{
		{"one PCR different", enclave, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, Recipient: wrongPCR}, enclaveRole.Principal + " " + denied},
		{"no Recipient", enclave, &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob}, enclaveRole.Principal + " " + denied},
		{"another principal", kmsd.ClientFor(t, otherUser.AccessKeyID), &kms.DecryptInput{CiphertextBlob: gdk.CiphertextBlob, Recipient: good}, otherUser.Principal + " " + denied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.client.Decrypt(ctx, tt.in)
			if err == nil {
				t.Fatalf("Decrypt succeeded (%d bytes of envelope), want AccessDeniedException", len(out.CiphertextForRecipient))
			}
			wantAPIError(t, err, "AccessDeniedException", "User: "+tt.want)
		})
	}
	t.Run("GenerateDataKey without Recipient", func(t *testing.T) {
		_, err := enclave.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, NumberOfBytes: aws.Int32(32)})
		wantAPIError(t, err, "AccessDeniedException", "kms:GenerateDataKey")
	})
}

// opensslDecrypt opens a CiphertextForRecipient with `openssl cms -decrypt`.
func opensslDecrypt(t *testing.T, envelope []byte, priv *rsa.PrivateKey) []byte {
	t.Helper()
	openssl := requireTool(t, "openssl")
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, envPath, outPath := filepath.Join(dir, "key.pem"), filepath.Join(dir, "env.der"), filepath.Join(dir, "out.bin")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(envPath, envelope, 0o600); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(tctx, openssl, "cms", "-decrypt", "-inform", "DER", "-in", envPath, "-inkey", keyPath, "-out", outPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -decrypt: %v\n%s", err, out)
	}
	got, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
