package devkms_test

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

// The principals of the layered authorization tests, one access key each.
const (
	layersAccount = "111122223333"
	adminARN      = "arn:aws:iam::111122223333:role/admin"
	adminSession  = "arn:aws:sts::111122223333:assumed-role/admin/alice"
	bobARN        = "arn:aws:iam::111122223333:user/bob"
	carolARN      = "arn:aws:iam::111122223333:user/carol"
	rootARN       = "arn:aws:iam::111122223333:root"
)

// Access keys (16+ characters, as IAM's) of the principals above.
const (
	adminKeyID = "AKIALAYERSADMIN00001"
	bobKeyID   = "AKIALAYERSBOB0000001"
	carolKeyID = "AKIALAYERSCAROL00001"
	rootKeyID  = "AKIALAYERSROOT000001"
)

// allowKMS is an identity-based policy allowing kms:* on every resource.
const allowKMS = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`

// syncBuffer is a log sink tests can read while devkms writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// layeredKMS starts devkms with the four principals, IAM policies (the
// admin role may do kms:*, bob and carol have none) and info-level logs in
// the returned buffer.
func layeredKMS(t *testing.T, opts ...devkmstest.Option) (*devkmstest.Instance, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	base := []devkmstest.Option{
		devkmstest.WithCredentials(
			devkms.Credential{AccessKeyID: adminKeyID, SecretAccessKey: "admin-secret", Principal: adminSession},
			devkms.Credential{AccessKeyID: bobKeyID, SecretAccessKey: "bob-secret", Principal: bobARN},
			devkms.Credential{AccessKeyID: carolKeyID, SecretAccessKey: "carol-secret", Principal: carolARN},
			devkms.Credential{AccessKeyID: rootKeyID, SecretAccessKey: "root-secret", Principal: rootARN},
		),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.IAMPolicies = map[string][]devkms.IAMPolicy{
				adminARN: {{Name: "KMSAdministrator", Policy: allowKMS}},
				bobARN:   {},
			}
			c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}),
	}
	return devkmstest.Start(t, append(base, opts...)...), logs
}

// TestIAMPoliciesAndKeyPolicy: a key policy statement for the account lets
// through only the principals whose IAM policies allow the action; one that
// names a principal allows it directly; an IAM deny beats both.
func TestIAMPoliciesAndKeyPolicy(t *testing.T) {
	kmsd, logs := layeredKMS(t, devkmstest.WithConfig(func(c *devkms.Config) {
		c.IAMPolicies[carolARN] = []devkms.IAMPolicy{{Name: "NoDecrypt", Policy: `{"Version":"2012-10-17","Statement":[{"Sid":"NoDecrypt","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}`}}
	}))
	keyID := kmsd.CreateKey(t, `{"Version":"2012-10-17","Statement":[
		{"Sid":"Account","Effect":"Allow","Principal":{"AWS":"`+rootARN+`"},"Action":"kms:*","Resource":"*"},
		{"Sid":"Carol","Effect":"Allow","Principal":{"AWS":"`+carolARN+`"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}`)
	admin, bob, carol := kmsd.ClientFor(t, adminKeyID), kmsd.ClientFor(t, bobKeyID), kmsd.ClientFor(t, carolKeyID)

	enc, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s")})
	if err != nil {
		t.Fatalf("admin (account statement + IAM kms:*): %v", err)
	}
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s")})
	wantAPIError(t, err, "AccessDeniedException", "User: "+bobARN+" is not authorized to perform: kms:Encrypt on resource: "+kmsd.KeyARN(keyID)+" because no identity-based policy allows the kms:Encrypt action")
	if _, err := carol.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s")}); err != nil {
		t.Fatalf("carol, named by the key policy: %v", err)
	}
	_, err = carol.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	wantAPIError(t, err, "AccessDeniedException", "with an explicit deny in an identity-based policy")

	// The log says which layer and statement decided, at info level.
	for _, want := range []string{
		`deny_reason="statement 0 (Sid \"Account\") of the key policy delegates to IAM, and no identity-based policy of the caller allows it"`,
		`deny_reason="statement 0 (Sid \"NoDecrypt\") of the identity-based policy \"NoDecrypt (arn:aws:iam::111122223333:user/carol)\" denies it"`,
		`principal=` + bobARN,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

// TestGrants: a grant gives its grantee the operations it lists, within its
// constraints, with no key policy or IAM Allow; it can be listed, used by
// token, retired and revoked; a key policy Deny beats it.
func TestGrants(t *testing.T) {
	kmsd, _ := layeredKMS(t)
	keyID := kmsd.CreateKey(t, "") // the default key policy: the account, through IAM
	admin, bob := kmsd.ClientFor(t, adminKeyID), kmsd.ClientFor(t, bobKeyID)
	enc, err := admin.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s"), EncryptionContext: map[string]string{"tenant": "acme"}})
	if err != nil {
		t.Fatal(err)
	}
	decrypt := func(ec map[string]string, tokens ...string) error {
		_, err := bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, GrantTokens: tokens})
		return err
	}
	wantAPIError(t, decrypt(map[string]string{"tenant": "acme"}), "AccessDeniedException", "because no identity-based policy allows the kms:Decrypt action")

	g, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId: &keyID, GranteePrincipal: aws.String(bobARN), RetiringPrincipal: aws.String(carolARN), Name: aws.String("bob-decrypts"),
		Operations:  []types.GrantOperation{types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"Tenant": "acme"}},
	})
	if err != nil {
		t.Fatalf("CreateGrant: %v", err)
	}
	if len(aws.ToString(g.GrantId)) != 64 || aws.ToString(g.GrantToken) == "" {
		t.Fatalf("CreateGrant = %+v", g)
	}
	if err := decrypt(map[string]string{"tenant": "acme"}, aws.ToString(g.GrantToken)); err != nil {
		t.Fatalf("Decrypt with the grant (and its token): %v", err)
	}
	if err := decrypt(map[string]string{"tenant": "acme"}); err != nil {
		t.Fatalf("Decrypt with the grant, no token: %v", err)
	}
	// The constraint: the context must hold tenant=acme (value case counts).
	wantAPIError(t, decrypt(map[string]string{"tenant": "ACME"}), "AccessDeniedException", "kms:Decrypt")
	_, err = bob.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	wantAPIError(t, err, "AccessDeniedException", "kms:Decrypt")
	// Encrypt is not in the grant.
	_, err = bob.Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s")})
	wantAPIError(t, err, "AccessDeniedException", "kms:Encrypt")
	// A token devkms never issued.
	wantAPIError(t, decrypt(map[string]string{"tenant": "acme"}, "bm90LWEtdG9rZW4"), "InvalidGrantTokenException", "The request was rejected because the specified grant token is not valid.")

	// Same name and parameters: the same grant, a new token.
	again, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{
		KeyId: &keyID, GranteePrincipal: aws.String(bobARN), RetiringPrincipal: aws.String(carolARN), Name: aws.String("bob-decrypts"),
		Operations:  []types.GrantOperation{types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextSubset: map[string]string{"Tenant": "acme"}},
	})
	if err != nil || aws.ToString(again.GrantId) != aws.ToString(g.GrantId) || aws.ToString(again.GrantToken) == aws.ToString(g.GrantToken) {
		t.Fatalf("CreateGrant again = %+v, %v; want the same grant ID with a new token", again, err)
	}

	list, err := admin.ListGrants(ctx, &kms.ListGrantsInput{KeyId: &keyID})
	if err != nil || len(list.Grants) != 1 {
		t.Fatalf("ListGrants = %+v, %v", list, err)
	}
	e := list.Grants[0]
	if aws.ToString(e.GranteePrincipal) != bobARN || aws.ToString(e.RetiringPrincipal) != carolARN || aws.ToString(e.Name) != "bob-decrypts" ||
		aws.ToString(e.IssuingAccount) != rootARN || e.Constraints.EncryptionContextSubset["Tenant"] != "acme" {
		t.Errorf("ListGrants entry = %+v", e)
	}
	_, err = bob.ListGrants(ctx, &kms.ListGrantsInput{KeyId: &keyID})
	wantAPIError(t, err, "AccessDeniedException", "kms:ListGrants")
	carol := kmsd.ClientFor(t, carolKeyID)
	retirable, err := carol.ListRetirableGrants(ctx, &kms.ListRetirableGrantsInput{RetiringPrincipal: aws.String(carolARN)})
	if err == nil {
		t.Fatalf("carol, without IAM policies, listed retirable grants: %+v", retirable)
	}
	wantAPIError(t, err, "AccessDeniedException", "kms:ListRetirableGrants")

	// Bob may not retire it (RetireGrant is not among its operations);
	// carol, the retiring principal, may.
	_, err = bob.RetireGrant(ctx, &kms.RetireGrantInput{GrantToken: g.GrantToken})
	wantAPIError(t, err, "AccessDeniedException", "kms:RetireGrant")
	if _, err := carol.RetireGrant(ctx, &kms.RetireGrantInput{KeyId: aws.String(kmsd.KeyARN(keyID)), GrantId: g.GrantId}); err != nil {
		t.Fatalf("RetireGrant by the retiring principal: %v", err)
	}
	wantAPIError(t, decrypt(map[string]string{"tenant": "acme"}), "AccessDeniedException", "kms:Decrypt")
	wantAPIError(t, decrypt(map[string]string{"tenant": "acme"}, aws.ToString(g.GrantToken)), "InvalidGrantTokenException", "")
	_, err = admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: &keyID, GrantId: g.GrantId})
	wantAPIError(t, err, "NotFoundException", "The request was rejected because the specified entity or resource could not be found.")
	_, err = admin.RevokeGrant(ctx, &kms.RevokeGrantInput{KeyId: &keyID, GrantId: aws.String("not-a-grant-id")})
	wantAPIError(t, err, "InvalidGrantIdException", "The request was rejected because the specified GrantId is not valid.")
}

// TestGrantRules: what CreateGrant refuses, and what a grantee with
// CreateGrant may pass on.
func TestGrantRules(t *testing.T) {
	kmsd, _ := layeredKMS(t)
	keyID := kmsd.CreateKey(t, "")
	signer := kmsd.CreateKeyWith(t, devkms.SeedKey{KeySpec: "ECC_NIST_P256", KeyUsage: "SIGN_VERIFY"})
	admin, bob := kmsd.ClientFor(t, adminKeyID), kmsd.ClientFor(t, bobKeyID)

	_, err := admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(bobARN), Operations: []types.GrantOperation{types.GrantOperationSign}})
	wantAPIError(t, err, "ValidationException", "Grant operation Sign is not supported on a KMS key with key spec SYMMETRIC_DEFAULT")
	_, err = admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &signer, GranteePrincipal: aws.String(bobARN), Operations: []types.GrantOperation{types.GrantOperationSign},
		Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"a": "b"}}})
	wantAPIError(t, err, "ValidationException", "supported only on symmetric encryption KMS keys")
	_, err = admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String("bob"), Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
	wantAPIError(t, err, "ValidationException", "Invalid principal")
	_, err = admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(bobARN), Operations: []types.GrantOperation{types.GrantOperationDecrypt}, DryRun: aws.Bool(true)})
	wantAPIError(t, err, "DryRunOperationException", "")
	_, err = admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: aws.String("alias/x"), GranteePrincipal: aws.String(bobARN), Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
	wantAPIError(t, err, "NotFoundException", "")

	// Bob holds CreateGrant and Encrypt under a constraint: he may pass on
	// Encrypt under the same constraint, nothing more.
	_, err = admin.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(bobARN),
		Operations:  []types.GrantOperation{types.GrantOperationCreateGrant, types.GrantOperationEncrypt},
		Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"tenant": "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bob.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(carolARN), Operations: []types.GrantOperation{types.GrantOperationDecrypt},
		Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"tenant": "acme"}}})
	wantAPIError(t, err, "AccessDeniedException", "does not allow Decrypt")
	_, err = bob.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(carolARN), Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	wantAPIError(t, err, "AccessDeniedException", "would loosen")
	if _, err := bob.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(carolARN), Operations: []types.GrantOperation{types.GrantOperationEncrypt},
		Constraints: &types.GrantConstraints{EncryptionContextEquals: map[string]string{"tenant": "acme"}}}); err != nil {
		t.Fatalf("passing on the same grant: %v", err)
	}
}

// TestGrantsPersist: grants are in the state file and survive a restart.
func TestGrantsPersist(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	withState := devkmstest.WithConfig(func(c *devkms.Config) { c.StatePath = state })
	kmsd, _ := layeredKMS(t, withState)
	keyID := kmsd.CreateKey(t, "")
	g, err := kmsd.ClientFor(t, adminKeyID).CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &keyID, GranteePrincipal: aws.String(bobARN), Operations: []types.GrantOperation{types.GrantOperationEncrypt}})
	if err != nil {
		t.Fatal(err)
	}
	if err := kmsd.Close(); err != nil {
		t.Fatal(err)
	}
	again, _ := layeredKMS(t, withState)
	if _, err := again.ClientFor(t, bobKeyID).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s"), GrantTokens: []string{aws.ToString(g.GrantToken)}}); err != nil {
		t.Fatalf("Encrypt with the grant after a restart: %v", err)
	}
}

// TestAliasPermissions: CreateAlias, UpdateAlias and DeleteAlias need the
// permission on the alias (IAM) and on every key they touch (key policy).
func TestAliasPermissions(t *testing.T) {
	kmsd, _ := layeredKMS(t)
	open := kmsd.CreateKey(t, "")
	// A key whose policy lets the admin role do everything but move its
	// aliases.
	pinned := kmsd.CreateKey(t, `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Principal":{"AWS":"`+rootARN+`"},"Action":"kms:*","Resource":"*"},
		{"Sid":"PinAliases","Effect":"Deny","Principal":"*","Action":["kms:UpdateAlias","kms:DeleteAlias"],"Resource":"*"}]}`)
	hmac := kmsd.CreateKeyWith(t, devkms.SeedKey{KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC"})
	admin, bob := kmsd.ClientFor(t, adminKeyID), kmsd.ClientFor(t, bobKeyID)

	if _, err := admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: &pinned}); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	if _, err := admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/free"), TargetKeyId: &open}); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	_, err := bob.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/bob"), TargetKeyId: &open})
	wantAPIError(t, err, "AccessDeniedException", "kms:CreateAlias on resource: arn:aws:kms:us-east-1:111122223333:alias/bob because no identity-based policy allows")

	_, err = admin.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: &open})
	wantAPIError(t, err, "AccessDeniedException", "kms:UpdateAlias on resource: "+kmsd.KeyARN(pinned)+" with an explicit deny in a resource-based policy")
	_, err = admin.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/app")})
	wantAPIError(t, err, "AccessDeniedException", "kms:DeleteAlias on resource: "+kmsd.KeyARN(pinned)+" with an explicit deny")
	// Onto the pinned key is refused too: the new key's policy counts.
	_, err = admin.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/free"), TargetKeyId: &pinned})
	wantAPIError(t, err, "AccessDeniedException", "kms:UpdateAlias on resource: "+kmsd.KeyARN(pinned))
	_, err = admin.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/free"), TargetKeyId: &hmac})
	wantAPIError(t, err, "ValidationException", "the new key must be of the same type and key usage")
	_, err = admin.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/none"), TargetKeyId: &open})
	wantAPIError(t, err, "NotFoundException", "Alias arn:aws:kms:us-east-1:111122223333:alias/none is not found.")

	other := kmsd.CreateKey(t, "")
	if _, err := admin.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/free"), TargetKeyId: &other}); err != nil {
		t.Fatalf("UpdateAlias: %v", err)
	}
	d, err := admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/free")})
	if err != nil || aws.ToString(d.KeyMetadata.KeyId) != other {
		t.Fatalf("alias/free after UpdateAlias: %v, %v", d, err)
	}
	if _, err := admin.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/free")}); err != nil {
		t.Fatalf("DeleteAlias: %v", err)
	}
	_, err = admin.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/free")})
	wantAPIError(t, err, "NotFoundException", "is not found")
}

// TestLockoutSafetyCheck: PutKeyPolicy refuses a policy that would lock the
// caller out, counting the caller's IAM policies, unless
// BypassPolicyLockoutSafetyCheck is set; the condition key
// kms:BypassPolicyLockoutSafetyCheck is in the request context.
func TestLockoutSafetyCheck(t *testing.T) {
	kmsd, _ := layeredKMS(t)
	keyID := kmsd.CreateKey(t, "")
	admin := kmsd.ClientFor(t, adminKeyID)
	locked := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + rootARN + `"},"Action":"kms:Describe*","Resource":"*"}]}`
	_, err := admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &keyID, Policy: &locked})
	wantAPIError(t, err, "MalformedPolicyDocumentException", "The new key policy will not allow you to update the key policy in the future.")
	// Allowing the account is not enough for bob, whose IAM allows nothing.
	bobKey := kmsd.CreateKey(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"`+bobARN+`"},"Action":"kms:*","Resource":"*"}]}`)
	_, err = kmsd.ClientFor(t, bobKeyID).PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &bobKey, Policy: aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + rootARN + `"},"Action":"kms:*","Resource":"*"}]}`)})
	wantAPIError(t, err, "MalformedPolicyDocumentException", "will not allow you to update the key policy")

	// A policy that denies the bypass: only a put that keeps the check.
	noBypass := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + rootARN + `"},"Action":"kms:*","Resource":"*"},
		{"Effect":"Deny","Principal":"*","Action":"kms:PutKeyPolicy","Resource":"*","Condition":{"Bool":{"kms:BypassPolicyLockoutSafetyCheck":"true"}}}]}`
	if _, err := admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &keyID, Policy: &noBypass}); err != nil {
		t.Fatalf("PutKeyPolicy: %v", err)
	}
	_, err = admin.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &keyID, Policy: &locked, BypassPolicyLockoutSafetyCheck: true})
	wantAPIError(t, err, "AccessDeniedException", "kms:PutKeyPolicy")
}

// TestIAMAssumedWithoutConfiguration: without IAM policies devkms takes
// every principal to have an IAM policy allowing kms:*, so the default key
// policy lets every principal of the account use the key.
func TestIAMAssumedWithoutConfiguration(t *testing.T) {
	kmsd := devkmstest.Start(t, devkmstest.WithCredentials(devkms.Credential{AccessKeyID: bobKeyID, SecretAccessKey: "bob-secret", Principal: bobARN}))
	keyID := kmsd.CreateKey(t, "")
	if _, err := kmsd.ClientFor(t, bobKeyID).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("s")}); err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
}
