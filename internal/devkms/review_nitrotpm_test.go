package devkms_test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// TestReviewNitroTPMConditionKeys: KMS evaluates a NitroTPM document's
// nitrotpm_pcrs under kms:RecipientAttestation:NitroTPMPCR<n> (KMS
// Developer Guide, "Condition keys for NitroTPM"). A key policy that lets
// the instance role decrypt only when NitroTPMPCR4 and NitroTPMPCR12 match
// must then allow a Recipient carrying a NitroTPM document of exactly that
// boot, and refuse one of another boot. devkms builds the request context
// with keypolicy.AttestationContext(doc.PCRs) only, which is empty for a
// NitroTPM document, so both cases are refused alike: no test of
// kmsproxyd --attestation nitrotpm against devkms can tell a bound key
// policy from one that admits nothing.
func TestReviewNitroTPMConditionKeys(t *testing.T) {
	ca := sharedCA(t)
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithCredentials(enclaveRole),
		devkmstest.WithConfig(func(c *devkms.Config) { c.AccountID = "123456789012" }),
	)
	pcrs := map[int][]byte{4: bytes.Repeat([]byte{0x44}, 48), 12: bytes.Repeat([]byte{0x12}, 48)}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[
	  {"Sid":"root","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["kms:DescribeKey","kms:PutKeyPolicy"],"Resource":"*"},
	  {"Sid":"instance","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/data-processing"},
	   "Action":["kms:Decrypt","kms:GenerateDataKey"],"Resource":"*",
	   "Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:NitroTPMPCR4":"%s","kms:RecipientAttestation:NitroTPMPCR12":"%s"}}}]}`,
		hex.EncodeToString(pcrs[4]), hex.EncodeToString(pcrs[12]))
	keyID := kmsd.CreateKey(t, policy)
	instance := kmsd.ClientFor(t, enclaveRole.AccessKeyID)
	priv := sharedRecipientKey(t)
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	tpmDoc := func(pcrs map[int][]byte) []byte {
		sim, err := nsmsim.New(ca, nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: pcrs})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	other := map[int][]byte{4: bytes.Repeat([]byte{0x45}, 48), 12: pcrs[12]}

	t.Run("the bound boot", func(t *testing.T) {
		out, err := instance.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256,
			Recipient: &types.RecipientInfo{AttestationDocument: tpmDoc(pcrs), KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}})
		if err != nil {
			t.Fatalf("GenerateDataKey with a NitroTPM document whose NitroTPMPCR4 and NitroTPMPCR12 match the key policy: %v; KMS allows it", err)
		}
		if _, err := cms.Decrypt(out.CiphertextForRecipient, priv); err != nil {
			t.Fatalf("envelope: %v", err)
		}
	})
	t.Run("another boot", func(t *testing.T) {
		_, err := instance.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &keyID, KeySpec: types.DataKeySpecAes256,
			Recipient: &types.RecipientInfo{AttestationDocument: tpmDoc(other), KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}})
		wantAPIError(t, err, "AccessDeniedException", "kms:GenerateDataKey")
	})
}
