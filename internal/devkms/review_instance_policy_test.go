package devkms_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

// instanceKeyPolicy returns the NitroTPM key policy docs/deployment.md
// tells operators to write by hand ("The instance role and the key
// policy"), with its placeholders filled in.
func instanceKeyPolicy(t *testing.T, account string, pcr4, pcr12 []byte) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "deployment.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	at := strings.Index(doc, `"Id": "kmsproxy-instance-key-policy"`)
	if at < 0 {
		t.Fatal("docs/deployment.md has no kmsproxy-instance-key-policy")
	}
	start := strings.LastIndex(doc[:at], "```json\n") + len("```json\n")
	end := at + strings.Index(doc[at:], "```")
	p := doc[start:end]
	p = strings.ReplaceAll(p, "ACCOUNT", account)
	p = strings.ReplaceAll(p, `: "PCR4"`, `: "`+hex.EncodeToString(pcr4)+`"`)
	p = strings.ReplaceAll(p, `: "PCR12"`, `: "`+hex.EncodeToString(pcr12)+`"`)
	return p
}

// TestReviewDeploymentInstanceKeyPolicy checks the claim docs/deployment.md
// makes for its NitroTPM key policy: "no IAM policy and no process holding
// the role's credentials without the TPM can use the key". Its first
// statement allows the account kms:*, which hands every action to the
// account's IAM policies, and its Deny statements name only the instance
// role. So an administrator whose IAM policy allows kms:* (or just
// kms:Decrypt) decrypts without any attestation, and can equally
// ReEncrypt to a key of their own or CreateGrant to anyone: the paths the
// enclave's generated key policy closes with Deny statements for every
// principal (DenyEveryoneUnless<Value>Matches, DenyEveryonePathsAroundTheEnclave).
func TestReviewDeploymentInstanceKeyPolicy(t *testing.T) {
	const account = "123456789012"
	admin := devkms.Credential{AccessKeyID: "AKIAADMINISTRATOR001", SecretAccessKey: "admin-secret", Principal: "arn:aws:iam::" + account + ":user/admin"}
	kmsd := devkmstest.Start(t,
		devkmstest.WithCredentials(admin),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.AccountID = account
			c.IAMPolicies = map[string][]devkms.IAMPolicy{
				admin.Principal: {{Name: "KMSAdministrator", Policy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`}},
			}
		}),
	)
	keyID := kmsd.CreateKey(t, instanceKeyPolicy(t, account, bytes.Repeat([]byte{4}, 48), bytes.Repeat([]byte{12}, 48)))
	c := kmsd.ClientFor(t, admin.AccessKeyID)
	secret := []byte("a secret only the attested instance may read")
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: secret})
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err == nil {
		t.Fatalf("an administrator decrypted %q without any NitroTPM document under the key policy docs/deployment.md gives", out.Plaintext)
	}
	wantAPIError(t, err, "AccessDeniedException", "kms:Decrypt")
}
