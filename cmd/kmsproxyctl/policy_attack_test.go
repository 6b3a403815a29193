package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// The principals of the attack tests. The parent's role and an
// administrator both hold IAM policies that allow kms:* on every resource
// (the levers the attacks pull); mallory, the attacker's second identity,
// holds none.
const (
	attackAdminRole    = "arn:aws:iam::" + testAccount + ":role/admin"
	attackAdminSession = "arn:aws:sts::" + testAccount + ":assumed-role/admin/alice"
	attackMallory      = "arn:aws:iam::" + testAccount + ":user/mallory"
	attackOperatorKey  = "AKIAOPERATOR00000001"
	attackMalloryKey   = "AKIAMALLORY000000001"
)

// oldGeneratedPolicy is the key policy `policy generate` wrote before it
// was made least privilege: the account root with kms:* (so every principal
// whose IAM policy allows an action may do it), the role allowed the
// attested operations with matching PCRs, and Deny statements for the role
// alone, on the attested operations and ReEncrypt. The attack tests run
// against it to show that each attack is real.
func oldGeneratedPolicy(pcrs map[int][]byte) string {
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	allow := map[string]string{"kms:RecipientAttestation:ImageSha384": fmt.Sprintf("%x", pcrs[0])}
	for _, i := range idx {
		allow[fmt.Sprintf("kms:RecipientAttestation:PCR%d", i)] = fmt.Sprintf("%x", pcrs[i])
	}
	attested := []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair", "kms:GenerateRandom", "kms:DeriveSharedSecret"}
	statements := []map[string]any{
		{"Sid": "AllowKeyAdministrationByTheAccount", "Effect": "Allow", "Principal": map[string]string{"AWS": "arn:aws:iam::" + testAccount + ":root"}, "Action": "kms:*", "Resource": "*"},
		{"Sid": "AllowAttestedEnclaveUse", "Effect": "Allow", "Principal": map[string]string{"AWS": testRoleARN}, "Action": attested, "Resource": "*",
			"Condition": map[string]any{"StringEqualsIgnoreCase": allow}},
	}
	denyKeys := []string{"kms:RecipientAttestation:ImageSha384"}
	for _, i := range idx {
		if i != 0 {
			denyKeys = append(denyKeys, fmt.Sprintf("kms:RecipientAttestation:PCR%d", i))
		}
	}
	for _, k := range denyKeys {
		statements = append(statements, map[string]any{
			"Sid": "DenyRoleUnless" + strings.TrimPrefix(k, "kms:RecipientAttestation:") + "Matches", "Effect": "Deny",
			"Principal": map[string]string{"AWS": testRoleARN}, "Action": append(append([]string(nil), attested...), "kms:ReEncrypt*"),
			"Resource": "*", "Condition": map[string]any{"StringNotEqualsIgnoreCase": map[string]string{k: allow[k]}},
		})
	}
	b, err := json.Marshal(map[string]any{"Version": "2012-10-17", "Id": "kmsproxy-enclave-key-policy", "Statement": statements})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// attackWorld is a devkms with the enclave's key (policy under test) aliased
// alias/app, a key the attacker controls, a secret encrypted to the
// enclave's key, and clients for every principal.
type attackWorld struct {
	t                             *testing.T
	kmsd                          *devkmstest.Instance
	key, attackerKey              string
	secret, secretBlob            []byte
	role, operator, mallory, root *kms.Client
	ca                            *nsmsim.CA
	measured                      map[int][]byte
	// kind is the attestation the key is bound to: an enclave's (the zero
	// value means it too) or an instance's NitroTPM's.
	kind attestation.Kind
}

func newAttackWorld(t *testing.T, policy string, measured map[int][]byte, beforePolicy func(w *attackWorld)) *attackWorld {
	t.Helper()
	return newAttackWorldOf(t, attestation.KindEnclave, policy, measured, beforePolicy)
}

func newAttackWorldOf(t *testing.T, kind attestation.Kind, policy string, measured map[int][]byte, beforePolicy func(w *attackWorld)) *attackWorld {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	allowKMS := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.AccountID = testAccount
			c.IAMPolicies = map[string][]devkms.IAMPolicy{
				testRoleARN:     {{Name: "BroadKMS", Policy: allowKMS}},
				attackAdminRole: {{Name: "KMSAdministrator", Policy: allowKMS}},
			}
		}),
		devkmstest.WithCredentials(
			devkms.Credential{AccessKeyID: testRoleKeyID, SecretAccessKey: testRoleSecret, Principal: testSessionARN},
			devkms.Credential{AccessKeyID: attackOperatorKey, SecretAccessKey: "operator-secret", Principal: attackAdminSession},
			devkms.Credential{AccessKeyID: attackMalloryKey, SecretAccessKey: "mallory-secret", Principal: attackMallory},
			devkms.Credential{AccessKeyID: testAdminKeyID, SecretAccessKey: testAdminSecret, Principal: "arn:aws:iam::" + testAccount + ":root"},
		))
	w := &attackWorld{
		t: t, kmsd: kmsd, ca: ca, measured: measured, kind: kind,
		role: kmsd.ClientFor(t, testRoleKeyID), operator: kmsd.ClientFor(t, attackOperatorKey),
		mallory: kmsd.ClientFor(t, attackMalloryKey), root: kmsd.ClientFor(t, testAdminKeyID),
		secret: []byte("the enclave's database password"),
	}
	// The key starts with the default policy, so that setup steps (and
	// beforePolicy, e.g. a grant made in the past) can run, then gets the
	// policy under test through the seed, as an operator would install it.
	w.key = kmsd.CreateKeyWith(t, devkms.SeedKey{Aliases: []string{"alias/app"}})
	w.attackerKey = kmsd.CreateKey(t, "")
	enc, err := w.root.Encrypt(ctx, &kms.EncryptInput{KeyId: &w.key, Plaintext: w.secret})
	if err != nil {
		t.Fatalf("encrypting the secret: %v", err)
	}
	w.secretBlob = enc.CiphertextBlob
	if beforePolicy != nil {
		beforePolicy(w)
	}
	if err := kmsd.Server.ApplySeed(devkms.Seed{Keys: []devkms.SeedKey{{ID: w.key, Policy: policy, Aliases: []string{"alias/app"}}}}); err != nil {
		t.Fatalf("installing the policy under test: %v", err)
	}
	return w
}

// decryptWith returns what c gets from decrypting blob without attestation.
func decryptWith(c *kms.Client, blob []byte, tokens ...string) ([]byte, error) {
	out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, GrantTokens: tokens})
	if err != nil {
		return nil, err
	}
	return out.Plaintext, nil
}

// The attacker's steps. Each returns the plaintext it obtained without the
// enclave, or the error that stopped it.
type attack struct {
	name string
	// steps runs the attack as the principal c (the role or the
	// administrator).
	steps func(w *attackWorld, c *kms.Client) ([]byte, error)
}

var attacks = []attack{
	{"Decrypt without attestation", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		return decryptWith(c, w.secretBlob)
	}},
	{"PutKeyPolicy (the default policy), then Decrypt", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		if _, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &w.key, Policy: aws.String(
			`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::` + testAccount + `:root"},"Action":"kms:*","Resource":"*"}]}`)}); err != nil {
			return nil, err
		}
		return decryptWith(c, w.secretBlob)
	}},
	{"CreateGrant for mallory, then mallory decrypts with the grant token", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		g, err := c.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &w.key, GranteePrincipal: aws.String(attackMallory),
			Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
		if err != nil {
			return nil, err
		}
		return decryptWith(w.mallory, w.secretBlob, aws.ToString(g.GrantToken))
	}},
	{"UpdateAlias alias/app to the attacker's key, then decrypt what the app encrypts next", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: &w.attackerKey}); err != nil {
			return nil, err
		}
		return w.appEncryptsThenDecrypt(c)
	}},
	{"DeleteAlias and CreateAlias alias/app on the attacker's key, then decrypt what the app encrypts next", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		if _, err := c.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/app")}); err != nil {
			return nil, err
		}
		if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: &w.attackerKey}); err != nil {
			return nil, err
		}
		return w.appEncryptsThenDecrypt(c)
	}},
	{"ReEncrypt to the attacker's key, then Decrypt there", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: w.secretBlob, DestinationKeyId: &w.attackerKey})
		if err != nil {
			return nil, err
		}
		return decryptWith(c, re.CiphertextBlob)
	}},
	{"GenerateDataKey without attestation", func(w *attackWorld, c *kms.Client) ([]byte, error) {
		out, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &w.key, KeySpec: types.DataKeySpecAes256})
		if err != nil {
			return nil, err
		}
		if len(out.Plaintext) == 0 {
			return nil, errors.New("no plaintext data key")
		}
		// A plaintext data key of the enclave's key, outside the enclave:
		// as bad as the secret itself.
		return w.secret, nil
	}},
}

// appEncryptsThenDecrypt is the second half of an alias attack: the app
// (here the root user, whom every policy lets encrypt) encrypts a new
// secret under alias/app, and the attacker decrypts the result.
func (w *attackWorld) appEncryptsThenDecrypt(c *kms.Client) ([]byte, error) {
	enc, err := w.root.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/app"), Plaintext: w.secret})
	if err != nil {
		return nil, fmt.Errorf("the app's Encrypt through alias/app: %w", err)
	}
	return decryptWith(c, enc.CiphertextBlob)
}

// attestedDecrypt is the enclave's own path (or the attested instance's):
// Decrypt with a Recipient of the measured image (or boot), answered with
// CiphertextForRecipient only the enclave's (instance's) key opens.
func (w *attackWorld) attestedDecrypt() error {
	w.t.Helper()
	priv := sharedKey()
	opts := nsmsim.Options{PCRs: w.measured}
	if w.kind == attestation.KindNitroTPM {
		opts = nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: nitrotpmsim.DefaultPCRs(w.measured)}
	}
	sim, err := nsmsim.New(w.ca, opts)
	if err != nil {
		return err
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spkiOf(w.t, &priv.PublicKey)})
	if err != nil {
		return err
	}
	rcpt := &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}
	out, err := w.role.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: w.secretBlob, Recipient: rcpt})
	if err != nil {
		return fmt.Errorf("Decrypt: %w", err)
	}
	got, err := cms.Decrypt(out.CiphertextForRecipient, priv)
	if err != nil {
		return fmt.Errorf("opening CiphertextForRecipient: %w", err)
	}
	if !bytes.Equal(got, w.secret) || out.Plaintext != nil {
		return errors.New("the attested Decrypt did not return the secret to the enclave alone")
	}
	if _, err := w.role.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app"), KeySpec: types.DataKeySpecAes256, Recipient: rcpt}); err != nil {
		return fmt.Errorf("GenerateDataKey through alias/app: %w", err)
	}
	return nil
}

// TestGeneratedPolicyAttacks runs the attacker's steps, as the parent's role
// and as an administrator (both with IAM policies allowing kms:*), against
// the old generated policy, the generated policy and the generated policy
// with --lock, in devkms with IAM policies and grants evaluated as KMS does.
// Against the old policy the attacks marked so expose the secret; against
// the generated ones everything that would expose it without the enclave is
// refused, except that an administrator may still replace an unlocked
// policy (the trust the docs describe), and the attested enclave keeps
// working.
func TestGeneratedPolicyAttacks(t *testing.T) {
	measured := map[int][]byte{0: randomPCR(t), 1: randomPCR(t), 2: randomPCR(t)}
	mfile := filepath.Join(t.TempDir(), "measurements.json")
	if err := os.WriteFile(mfile, []byte(measurementsJSON(measured)), 0o644); err != nil {
		t.Fatal(err)
	}
	generate := func(extra ...string) string {
		t.Helper()
		code, out, stderr := runCLI(t, "", append([]string{"policy", "generate", "--measurements", mfile, "--role", testRoleARN}, extra...)...)
		if code != 0 {
			t.Fatalf("policy generate: status %d: %s", code, stderr)
		}
		return out
	}
	runPolicyAttacks(t, attestation.KindEnclave, measured, []attackedPolicy{
		{"old generated policy", oldGeneratedPolicy(measured), attacksOnAnAccountWidePolicy, true},
		{"generated policy", generate(), map[string]bool{
			// The administrators can replace an unlocked policy: the trust
			// docs/security.md describes, closed by --lock.
			"admin/PutKeyPolicy (the default policy), then Decrypt": true,
		}, false},
		{"generated policy with --lock", generate("--lock"), nil, false},
	})
}

// attacksOnAnAccountWidePolicy are the attacks that expose the secret
// under a key policy that gives the account root kms:* and denies only the
// role: the old generated policy, and the hand-written instance policy the
// deployment guide once showed.
var attacksOnAnAccountWidePolicy = map[string]bool{
	"role/PutKeyPolicy (the default policy), then Decrypt":                                                       true,
	"role/CreateGrant for mallory, then mallory decrypts with the grant token":                                   true,
	"role/UpdateAlias alias/app to the attacker's key, then decrypt what the app encrypts next":                  true,
	"role/DeleteAlias and CreateAlias alias/app on the attacker's key, then decrypt what the app encrypts next":  true,
	"admin/Decrypt without attestation":                                                                          true,
	"admin/PutKeyPolicy (the default policy), then Decrypt":                                                      true,
	"admin/CreateGrant for mallory, then mallory decrypts with the grant token":                                  true,
	"admin/UpdateAlias alias/app to the attacker's key, then decrypt what the app encrypts next":                 true,
	"admin/DeleteAlias and CreateAlias alias/app on the attacker's key, then decrypt what the app encrypts next": true,
	"admin/ReEncrypt to the attacker's key, then Decrypt there":                                                  true,
	"admin/GenerateDataKey without attestation":                                                                  true,
}

// attackedPolicy is a key policy the attacks run against, and which of
// them reveal the secret under it, by attacker ("role" or "admin") and
// attack name.
type attackedPolicy struct {
	name    string
	policy  string
	exposed map[string]bool
	// oldGrantExposed: under this policy, a grant made before it was
	// installed still decrypts.
	oldGrantExposed bool
}

// runPolicyAttacks runs every attack, as the role and as an administrator,
// against each policy of a key bound to the measured values of kind, then
// the grant made before the policy, then the attested path itself.
func runPolicyAttacks(t *testing.T, kind attestation.Kind, measured map[int][]byte, policies []attackedPolicy) {
	t.Helper()
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			for _, who := range []string{"role", "admin"} {
				for _, a := range attacks {
					name := who + "/" + a.name
					t.Run(name, func(t *testing.T) {
						w := newAttackWorldOf(t, kind, p.policy, measured, nil)
						c := w.role
						if who == "admin" {
							c = w.operator
						}
						got, err := a.steps(w, c)
						exposed := err == nil && bytes.Equal(got, w.secret)
						switch {
						case p.exposed[name] && !exposed:
							t.Fatalf("the attack failed (%v); against this policy it should reveal the secret", err)
						case !p.exposed[name] && exposed:
							t.Fatalf("the attack revealed the secret without the enclave")
						case !p.exposed[name] && !isAccessDenied(err):
							t.Fatalf("the attack was stopped by %v, want AccessDeniedException", err)
						}
					})
				}
			}
			t.Run("a grant made before the policy was installed", func(t *testing.T) {
				var token string
				w := newAttackWorldOf(t, kind, p.policy, measured, func(w *attackWorld) {
					g, err := w.root.CreateGrant(ctx, &kms.CreateGrantInput{KeyId: &w.key, GranteePrincipal: aws.String(attackMallory),
						Operations: []types.GrantOperation{types.GrantOperationDecrypt}})
					if err != nil {
						t.Fatal(err)
					}
					token = aws.ToString(g.GrantToken)
				})
				got, err := decryptWith(w.mallory, w.secretBlob, token)
				exposed := err == nil && bytes.Equal(got, w.secret)
				if wantExposed := p.oldGrantExposed; exposed != wantExposed {
					t.Fatalf("mallory's Decrypt with an old grant: exposed = %v (%v), want %v", exposed, err, wantExposed)
				}
			})
			attested := "the attested enclave still works"
			if kind == attestation.KindNitroTPM {
				attested = "the attested instance still works"
			}
			t.Run(attested, func(t *testing.T) {
				w := newAttackWorldOf(t, kind, p.policy, measured, nil)
				if err := w.attestedDecrypt(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestLockedPolicyInstall: the --lock policy cannot be put without
// BypassPolicyLockoutSafetyCheck, and once put nobody can change it.
func TestLockedPolicyInstall(t *testing.T) {
	measured := map[int][]byte{0: randomPCR(t), 1: randomPCR(t), 2: randomPCR(t)}
	mfile := filepath.Join(t.TempDir(), "measurements.json")
	if err := os.WriteFile(mfile, []byte(measurementsJSON(measured)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, locked, stderr := runCLI(t, "", "policy", "generate", "--measurements", mfile, "--role", testRoleARN, "--lock")
	if code != 0 {
		t.Fatalf("policy generate --lock: %s", stderr)
	}
	w := newAttackWorld(t, "", measured, nil)
	for _, c := range []*kms.Client{w.root, w.operator} {
		_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &w.key, Policy: &locked})
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "MalformedPolicyDocumentException" || !strings.Contains(ae.ErrorMessage(), "will not allow you to update the key policy in the future") {
			t.Fatalf("PutKeyPolicy of the locked policy without the bypass = %v, want the lockout safety check's refusal", err)
		}
	}
	if _, err := w.operator.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &w.key, Policy: &locked, BypassPolicyLockoutSafetyCheck: true}); err != nil {
		t.Fatalf("PutKeyPolicy with the bypass: %v", err)
	}
	for name, c := range map[string]*kms.Client{"root user": w.root, "administrator": w.operator, "role": w.role} {
		_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &w.key, Policy: &locked, BypassPolicyLockoutSafetyCheck: true})
		if !isAccessDenied(err) {
			t.Errorf("%s changing the locked policy: %v, want AccessDeniedException", name, err)
		}
	}
	if err := w.attestedDecrypt(); err != nil {
		t.Fatalf("the enclave under the locked policy: %v", err)
	}
}

func isAccessDenied(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "AccessDeniedException"
}

var ctx = context.Background()

// sharedKey is one RSA key for the simulated enclave's Recipient, made once
// per run (generating it is the slow part).
var sharedKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func spkiOf(t testing.TB, pub *rsa.PublicKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
