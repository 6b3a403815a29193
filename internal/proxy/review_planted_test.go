package proxy_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

// TestReviewPlantedCiphertextUnderTheParentsOwnKey runs the image's own
// policy (enclave/policy.yaml, whose placeholder account is enclavetest's)
// against a parent that holds the instance role's credentials, as it always
// does (IMDS), with the IAM permissions docs/security.md's threat table
// assumes (kms:*).
//
// The parent creates a key of its own in the pinned account, encrypts a
// plaintext it chose and plants the ciphertext where an enclave app reads
// its input. The app decrypts it through the local listener without
// KeyId, as KMS allows for symmetric ciphertexts and as the image's local
// listener allows (it lists no keys). kms.accounts passes: the key is in the
// pinned account. The app takes the parent's plaintext for data encrypted
// under the enclave's key, which docs/security.md says only --role-encrypt
// would let a compromised parent make. It is the "Decrypt of a ciphertext
// the parent planted" that kms.accounts was added to stop, one account
// over. A Decrypt answered with a key the policy does not name must be
// refused.
func TestReviewPlantedCiphertextUnderTheParentsOwnKey(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "enclave", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(raw, "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.KMS().Accounts; len(got) != 1 || got[0] != enclavetest.Account {
		t.Fatalf("enclave/policy.yaml pins %v; the test expects the placeholder %s", got, enclavetest.Account)
	}
	e := enclavetest.Start(t, enclavetest.Options{Policy: p})

	parent := e.Role(t) // the instance role's credentials, straight from IMDS
	own, err := parent.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(`{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"` + enclavetest.RoleARN + `"},"Action":"kms:*","Resource":"*"}]}`)})
	if err != nil {
		t.Fatalf("the role creates a key: %v", err)
	}
	chosen := []byte(`{"pay":"1000","to":"the parent's owner"}`)
	planted, err := parent.Encrypt(ctx, &kms.EncryptInput{KeyId: own.KeyMetadata.KeyId, Plaintext: chosen})
	if err != nil {
		t.Fatal(err)
	}

	app := e.Client(t, e.LocalAddr)
	out, err := app.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: planted.CiphertextBlob})
	if err == nil {
		t.Fatalf("the enclave app decrypted %q under %s, a key the parent created for itself", out.Plaintext, aws.ToString(out.KeyId))
	}
	wantCode(t, err, "AccessDeniedException")
}
