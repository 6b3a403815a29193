package proxy_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

// ownerAccount is the account the tests' policies pin. enclavetest's devkms
// runs as enclavetest.Account: the account the parent instance's
// credentials lead to.
const ownerAccount = "444455556666"

// pinnedPolicy pins account (and the region) on a policy that otherwise
// lets both listeners do everything, as the shipped image's local listener
// may.
func pinnedPolicy(t testing.TB, account string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(`kms:
  accounts: ["`+account+`"]
  regions: [`+enclavetest.Region+`]
listeners:
  parent:
    operations: ["*"]
    plaintext: true
    control: ["*"]
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
`), "pinned.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// attackKeys are keys in the account the parent chose, each with an alias,
// as the parent's owner would create them to match the names an enclave
// app uses.
type attackKeys struct {
	sym, sign, mac, agree string // key ids
}

func createAttackKeys(t testing.TB, e *enclavetest.Env) attackKeys {
	t.Helper()
	return attackKeys{
		sym:   e.KeyID, // aliased alias/app-data by enclavetest
		sign:  e.CreateKey(t, devkms.SeedKey{KeySpec: "RSA_2048", KeyUsage: "SIGN_VERIFY", Aliases: []string{"alias/app-sign"}}),
		mac:   e.CreateKey(t, devkms.SeedKey{KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC", Aliases: []string{"alias/app-mac"}}),
		agree: e.CreateKey(t, devkms.SeedKey{KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT", Aliases: []string{"alias/app-agree"}}),
	}
}

// keyForms names one key the four ways KMS accepts (KMS API reference,
// KeyId): alias name, alias ARN, bare key id, key ARN.
func keyForms(e *enclavetest.Env, id, alias string) map[string]string {
	return map[string]string{
		"alias":     alias,
		"alias ARN": "arn:aws:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":" + alias,
		"key id":    id,
		"key ARN":   e.DevKMS.KeyARN(id),
	}
}

// keyedCall is one KMS operation that names a key, made through kmsproxyd.
type keyedCall struct {
	op   string
	call func(c *kms.Client, key string) error
}

// keyedCalls returns a call of every operation but GenerateRandom, with
// inputs made in the parent's account (ciphertexts, signatures, MACs) so
// that KMS would answer each one.
func keyedCalls(t testing.TB, e *enclavetest.Env, k attackKeys) (calls []keyedCall, keyOf map[string]string) {
	t.Helper()
	op := e.Operator(t)
	enc, err := op.Encrypt(ctx, &kms.EncryptInput{KeyId: &k.sym, Plaintext: []byte("the parent's chosen plaintext")})
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("a message the parent wants vouched for")
	sig, err := op.Sign(ctx, &kms.SignInput{KeyId: &k.sign, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
	if err != nil {
		t.Fatal(err)
	}
	mac, err := op.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &k.mac, Message: msg, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	if err != nil {
		t.Fatal(err)
	}
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	peerDER, _ := x509.MarshalPKIXPublicKey(peer.PublicKey())
	keyOf = map[string]string{
		"Encrypt": "sym", "Decrypt": "sym", "ReEncrypt": "sym", "GenerateDataKey": "sym", "GenerateDataKeyWithoutPlaintext": "sym",
		"GenerateDataKeyPair": "sym", "GenerateDataKeyPairWithoutPlaintext": "sym", "DescribeKey": "sym",
		"GetPublicKey": "sign", "Sign": "sign", "Verify": "sign", "GenerateMac": "mac", "VerifyMac": "mac", "DeriveSharedSecret": "agree",
	}
	return []keyedCall{
		{"Encrypt", func(c *kms.Client, key string) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &key, Plaintext: []byte("an enclave secret")})
			return err
		}},
		{"Decrypt", func(c *kms.Client, key string) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: &key, CiphertextBlob: enc.CiphertextBlob})
			return err
		}},
		{"ReEncrypt", func(c *kms.Client, key string) error {
			_, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{SourceKeyId: &key, DestinationKeyId: &key, CiphertextBlob: enc.CiphertextBlob})
			return err
		}},
		{"GenerateDataKey", func(c *kms.Client, key string) error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &key, KeySpec: types.DataKeySpecAes256})
			return err
		}},
		{"GenerateDataKeyWithoutPlaintext", func(c *kms.Client, key string) error {
			_, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: &key, KeySpec: types.DataKeySpecAes256})
			return err
		}},
		{"GenerateDataKeyPair", func(c *kms.Client, key string) error {
			_, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: &key, KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			return err
		}},
		{"GenerateDataKeyPairWithoutPlaintext", func(c *kms.Client, key string) error {
			_, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: &key, KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			return err
		}},
		{"DescribeKey", func(c *kms.Client, key string) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &key})
			return err
		}},
		{"GetPublicKey", func(c *kms.Client, key string) error {
			_, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &key})
			return err
		}},
		{"Sign", func(c *kms.Client, key string) error {
			_, err := c.Sign(ctx, &kms.SignInput{KeyId: &key, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
			return err
		}},
		{"Verify", func(c *kms.Client, key string) error {
			_, err := c.Verify(ctx, &kms.VerifyInput{KeyId: &key, Message: msg, Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
			return err
		}},
		{"GenerateMac", func(c *kms.Client, key string) error {
			_, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &key, Message: msg, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
			return err
		}},
		{"VerifyMac", func(c *kms.Client, key string) error {
			_, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &key, Message: msg, Mac: mac.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
			return err
		}},
		{"DeriveSharedSecret", func(c *kms.Client, key string) error {
			_, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &key, KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: peerDER})
			return err
		}},
	}, keyOf
}

// TestAnswerFromAnotherAccount is the attack of a parent instance that
// hands kmsproxyd credentials of an account it controls, where it has
// created keys under the names the enclave's apps use: every operation that
// names a key, by every form of key identifier, on both listeners, is
// answered by KMS with a key of that account, and kmsproxyd must refuse
// each answer whole, naming the rule and nothing of the answer.
func TestAnswerFromAnotherAccount(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{Policy: pinnedPolicy(t, ownerAccount)})
	k := createAttackKeys(t, e)
	calls, keyOf := keyedCalls(t, e, k)
	forms := map[string]map[string]string{
		"sym":   keyForms(e, k.sym, "alias/app-data"),
		"sign":  keyForms(e, k.sign, "alias/app-sign"),
		"mac":   keyForms(e, k.mac, "alias/app-mac"),
		"agree": keyForms(e, k.agree, "alias/app-agree"),
	}
	refused := 0
	for _, l := range []struct{ name, addr string }{{"parent", e.ParentAddr}, {"local", e.LocalAddr}} {
		c := e.Client(t, l.addr)
		for _, kc := range calls {
			for form, key := range forms[keyOf[kc.op]] {
				t.Run(l.name+"/"+kc.op+"/"+form, func(t *testing.T) {
					err := kc.call(c, key)
					if code := apiErrorCode(err); code != "AccessDeniedException" {
						t.Fatalf("%s by %s: %v, want AccessDeniedException from kms.accounts", kc.op, form, err)
					}
					refused++
					msg := err.Error()
					if !strings.Contains(msg, "(policy: kms.accounts)") {
						t.Errorf("refusal %q does not name kms.accounts", msg)
					}
					if strings.Contains(msg, enclavetest.Account) || strings.Contains(msg, k.sym) || strings.Contains(msg, k.sign) {
						t.Errorf("refusal %q repeats part of KMS's answer", msg)
					}
				})
			}
		}
	}
	if refused == 0 {
		t.Fatal("nothing was refused")
	}
	hc, _ := e.HTTPClient(e.LocalAddr)
	resp, err := hc.Get("http://kmsproxy.enclave/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`kmsproxy_answers_refused_total{listener="local",operation="GenerateDataKey",rule="kms.accounts"} 4`,
		`kmsproxy_answers_refused_total{listener="local",operation="ReEncrypt",rule="kms.accounts"} 4`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if logs := e.Logs.String(); !strings.Contains(logs, "KMS answer refused") || !strings.Contains(logs, `"answered_key":"`+e.DevKMS.KeyARN(k.sym)+`"`) {
		t.Error("the refusals are not logged with the key KMS answered with")
	}
}

// TestAnswerFromAnotherAccountRaw looks at the bytes a caller gets: a
// KMS-shaped AccessDeniedException and nothing else of KMS's answer (no
// plaintext, ciphertext or key id), also for a request that carries its
// own Recipient.
func TestAnswerFromAnotherAccountRaw(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{Policy: pinnedPolicy(t, ownerAccount)})
	own, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&own.PublicKey)
	sim, err := nsmsim.New(e.CA, nsmsim.Options{PCRs: e.PCRs})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		t.Fatal(err)
	}
	blob := encryptAsOperator(t, e, []byte("chosen by the parent"), nil)
	for _, tt := range []struct {
		name, op string
		body     map[string]any
	}{
		{"GenerateDataKey by alias", "GenerateDataKey", map[string]any{"KeyId": "alias/app-data", "KeySpec": "AES_256"}},
		{"Decrypt without KeyId", "Decrypt", map[string]any{"CiphertextBlob": blob}},
		{"Encrypt by bare key id", "Encrypt", map[string]any{"KeyId": e.KeyID, "Plaintext": []byte("an enclave secret")}},
		{"Decrypt with the caller's Recipient", "Decrypt", map[string]any{"CiphertextBlob": blob,
			"Recipient": map[string]any{"AttestationDocument": doc, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}}},
	} {
		for _, addr := range []string{e.ParentAddr, e.LocalAddr} {
			t.Run(tt.name, func(t *testing.T) {
				status, raw := rawPost(t, e, addr, tt.op, tt.body)
				var m map[string]string
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatalf("answer %s is not a KMS error: %v", raw, err)
				}
				if status != http.StatusBadRequest || m["__type"] != "AccessDeniedException" || len(m) != 2 {
					t.Fatalf("got %d %s, want 400 with only __type AccessDeniedException and message", status, raw)
				}
				for _, leak := range []string{"CiphertextBlob", "Plaintext", "CiphertextForRecipient", "KeyId", enclavetest.Account, e.KeyID} {
					if strings.Contains(string(raw), leak) {
						t.Errorf("the refusal carries %q: %s", leak, raw)
					}
				}
			})
		}
	}
}

// rawPost sends one KMS request to addr and returns the status and body.
func rawPost(t testing.TB, e *enclavetest.Env, addr, op string, body map[string]any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	hc, _ := e.HTTPClient(addr)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://kmsproxy.enclave/", strings.NewReader(string(b)))
	req.Header.Set("X-Amz-Target", "TrentService."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// TestAnswerFromThePinnedAccount: with the account KMS answers from pinned,
// every operation works on both listeners, by every form of identifier.
func TestAnswerFromThePinnedAccount(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{Policy: pinnedPolicy(t, enclavetest.Account)})
	k := createAttackKeys(t, e)
	calls, keyOf := keyedCalls(t, e, k)
	for _, l := range []struct{ name, addr string }{{"parent", e.ParentAddr}, {"local", e.LocalAddr}} {
		c := e.Client(t, l.addr)
		for _, kc := range calls {
			ids := keyForms(e, map[string]string{"sym": k.sym, "sign": k.sign, "mac": k.mac, "agree": k.agree}[keyOf[kc.op]], "")
			for _, form := range []string{"key id", "key ARN"} {
				if err := kc.call(c, ids[form]); err != nil {
					t.Errorf("%s: %s by %s: %v", l.name, kc.op, form, err)
				}
			}
		}
		if _, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-data"), KeySpec: types.DataKeySpecAes256}); err != nil {
			t.Errorf("%s: GenerateDataKey by alias: %v", l.name, err)
		}
	}
}

// TestAliasMovedToAnotherKeyOfThePinnedAccount is an administrator of the
// pinned account taking over the alias an enclave app names its key by.
//
// The operator binds the local listener to one key, listing the alias the
// app uses and the key it points to. The generated key policy denies
// UpdateAlias and DeleteAlias on that key, but when the key is deleted
// (ScheduleKeyDeletion's waiting period over) KMS deletes its aliases, and
// an administrator creates alias/app-ledger again for a key whose policy
// they wrote. devkms has no ScheduleKeyDeletion, so the test frees the
// alias with DeleteAlias under a permissive policy: the state KMS reaches
// after the deletion. The alias still matches the listener's alias
// pattern and the key is in the pinned account, but it is not the key the
// listener names by ARN: kmsproxyd must refuse the answer, so that the
// administrator cannot decrypt the data key the app stores.
func TestAliasMovedToAnotherKeyOfThePinnedAccount(t *testing.T) {
	const idA = "0a0a0a0a-1111-4222-8333-444455556666"
	arnA := "arn:aws:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":key/" + idA
	p, err := policy.Parse([]byte(`kms:
  accounts: ["`+enclavetest.Account+`"]
listeners:
  local:
    operations: ["*"]
    keys: ["alias/app-ledger", "`+arnA+`"]
    plaintext: true
`), "bound.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := enclavetest.Start(t, enclavetest.Options{Policy: p})
	permissive := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"` + enclavetest.OperatorARN + `"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"` + enclavetest.RoleARN + `"},"Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"*"}]}`
	keyA := e.CreateKey(t, devkms.SeedKey{ID: idA, Policy: permissive, Aliases: []string{"alias/app-ledger"}})
	app := e.Client(t, e.LocalAddr)
	if out, err := app.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-ledger"), KeySpec: types.DataKeySpecAes256}); err != nil {
		t.Fatalf("before the takeover: %v", err)
	} else if got := aws.ToString(out.KeyId); got != e.DevKMS.KeyARN(keyA) {
		t.Fatalf("before the takeover the alias names %s, want key A", got)
	}

	// The administrator's key B, and the alias freed and created again.
	op := e.Operator(t)
	keyB := e.CreateKey(t, devkms.SeedKey{Policy: permissive})
	if _, err := op.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/app-ledger")}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app-ledger"), TargetKeyId: &keyB}); err != nil {
		t.Fatal(err)
	}

	out, err := app.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-ledger"), KeySpec: types.DataKeySpecAes256})
	if err == nil {
		stolen, derr := op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob})
		if derr == nil && bytes.Equal(stolen.Plaintext, out.Plaintext) {
			t.Fatalf("the app got a data key under %s (not the key ARN the listener lists), and the administrator decrypts it with that key without any enclave", aws.ToString(out.KeyId))
		}
		t.Fatalf("GenerateDataKey by the moved alias answered with %s; want AccessDeniedException (listeners.local.keys)", aws.ToString(out.KeyId))
	}
	wantCode(t, err, "AccessDeniedException")
	if !strings.Contains(err.Error(), "(policy: listeners.local.keys)") || strings.Contains(err.Error(), keyB) {
		t.Errorf("refusal %q does not name listeners.local.keys, or names the answered key", err)
	}
	// Key A by its ARN still works.
	if _, err := app.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &arnA, KeySpec: types.DataKeySpecAes256}); err != nil {
		t.Errorf("GenerateDataKey by key A's ARN: %v", err)
	}
}

// TestPlantedCiphertextUnderTheParentsOwnKey runs the image's own policy
// (enclave/policy.yaml, whose placeholder account and key are enclavetest's
// account and a key created with the placeholder's id) against a parent
// that holds the instance role's credentials, as it always does (IMDS),
// with kms:CreateKey among its permissions.
//
// The parent creates a key of its own in the pinned account, encrypts a
// plaintext it chose and plants the ciphertext where an enclave app reads
// its input. The app decrypts it through the local listener without KeyId,
// as KMS allows for symmetric ciphertexts and as the image's local
// listener allows (it lists no keys). kms.accounts passes: the key is in
// the pinned account. kms.keys must refuse the answer, and the app's own
// key must keep working.
func TestPlantedCiphertextUnderTheParentsOwnKey(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "enclave", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(raw, "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const placeholderID = "1234abcd-12ab-34cd-56ef-1234567890ab"
	placeholder := "arn:aws:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":key/" + placeholderID
	if got := p.KMS(); len(got.Accounts) != 1 || got.Accounts[0] != enclavetest.Account || len(got.Keys) != 1 || got.Keys[0] != placeholder {
		t.Fatalf("enclave/policy.yaml pins %v and %v; the test expects the placeholders %s and %s", got.Accounts, got.Keys, enclavetest.Account, placeholder)
	}
	e := enclavetest.Start(t, enclavetest.Options{Policy: p})
	appKey := e.CreateKey(t, devkms.SeedKey{ID: placeholderID})

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
	if !strings.Contains(err.Error(), "(policy: kms.keys)") || strings.Contains(err.Error(), aws.ToString(own.KeyMetadata.KeyId)) {
		t.Errorf("refusal %q does not name kms.keys, or names the answered key", err)
	}

	// The app's own ciphertexts, under the pinned key, still decrypt.
	secret := []byte("the app's own data")
	enc, err := e.Operator(t).Encrypt(ctx, &kms.EncryptInput{KeyId: &appKey, Plaintext: secret})
	if err != nil {
		t.Fatal(err)
	}
	got, err := app.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || !bytes.Equal(got.Plaintext, secret) {
		t.Fatalf("Decrypt under the pinned key: %q, %v", got.Plaintext, err)
	}
}
