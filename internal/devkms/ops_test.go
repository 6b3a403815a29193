package devkms_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

// createKey creates a key over the API and returns its ID.
func createKey(t testing.TB, c *kms.Client, spec types.KeySpec, usage types.KeyUsageType) string {
	t.Helper()
	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: spec, KeyUsage: usage, Description: aws.String(string(spec) + " " + string(usage))})
	if err != nil {
		t.Fatalf("CreateKey %s %s: %v", spec, usage, err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

func TestCreateAndDescribeKey(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	rsaSigning := []types.SigningAlgorithmSpec{"RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
		"RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"}
	tests := []struct {
		name  string
		spec  types.KeySpec
		usage types.KeyUsageType
		want  types.KeyMetadata // algorithm lists and usage only
	}{
		{"symmetric default usage", types.KeySpecSymmetricDefault, "", types.KeyMetadata{KeyUsage: "ENCRYPT_DECRYPT", EncryptionAlgorithms: []types.EncryptionAlgorithmSpec{"SYMMETRIC_DEFAULT"}}},
		{"RSA_2048 encryption", types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt, types.KeyMetadata{KeyUsage: "ENCRYPT_DECRYPT", EncryptionAlgorithms: []types.EncryptionAlgorithmSpec{"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"}}},
		{"RSA_3072 signing", types.KeySpecRsa3072, types.KeyUsageTypeSignVerify, types.KeyMetadata{KeyUsage: "SIGN_VERIFY", SigningAlgorithms: rsaSigning}},
		{"RSA_4096 signing", types.KeySpecRsa4096, types.KeyUsageTypeSignVerify, types.KeyMetadata{KeyUsage: "SIGN_VERIFY", SigningAlgorithms: rsaSigning}},
		{"P-256 signing", types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify, types.KeyMetadata{KeyUsage: "SIGN_VERIFY", SigningAlgorithms: []types.SigningAlgorithmSpec{"ECDSA_SHA_256"}}},
		{"P-384 signing", types.KeySpecEccNistP384, types.KeyUsageTypeSignVerify, types.KeyMetadata{KeyUsage: "SIGN_VERIFY", SigningAlgorithms: []types.SigningAlgorithmSpec{"ECDSA_SHA_384"}}},
		{"P-521 signing", types.KeySpecEccNistP521, types.KeyUsageTypeSignVerify, types.KeyMetadata{KeyUsage: "SIGN_VERIFY", SigningAlgorithms: []types.SigningAlgorithmSpec{"ECDSA_SHA_512"}}},
		{"P-256 key agreement", types.KeySpecEccNistP256, types.KeyUsageTypeKeyAgreement, types.KeyMetadata{KeyUsage: "KEY_AGREEMENT", KeyAgreementAlgorithms: []types.KeyAgreementAlgorithmSpec{"ECDH"}}},
		{"HMAC_224", types.KeySpecHmac224, types.KeyUsageTypeGenerateVerifyMac, types.KeyMetadata{KeyUsage: "GENERATE_VERIFY_MAC", MacAlgorithms: []types.MacAlgorithmSpec{"HMAC_SHA_224"}}},
		{"HMAC_512", types.KeySpecHmac512, types.KeyUsageTypeGenerateVerifyMac, types.KeyMetadata{KeyUsage: "GENERATE_VERIFY_MAC", MacAlgorithms: []types.MacAlgorithmSpec{"HMAC_SHA_512"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := time.Now().Add(-time.Second)
			created, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: tt.spec, KeyUsage: tt.usage, Description: aws.String(tt.name)})
			if err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			id := aws.ToString(created.KeyMetadata.KeyId)
			for _, ref := range []string{id, kmsd.KeyARN(id)} {
				got, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &ref})
				if err != nil {
					t.Fatalf("DescribeKey %s: %v", ref, err)
				}
				md := *got.KeyMetadata
				if md.CreationDate == nil || md.CreationDate.Before(before) {
					t.Errorf("CreationDate = %v, want a time after %v", md.CreationDate, before)
				}
				want := tt.want
				want.KeyId = &id
				want.Arn = aws.String(kmsd.KeyARN(id))
				want.AWSAccountId = aws.String(devkms.DefaultAccountID)
				want.KeySpec = tt.spec
				//lint:ignore SA1019 KMS still returns the deprecated member, equal to KeySpec.
				want.CustomerMasterKeySpec = types.CustomerMasterKeySpec(tt.spec)
				want.Description = aws.String(tt.name)
				want.Enabled = true
				want.KeyState = types.KeyStateEnabled
				want.KeyManager = types.KeyManagerTypeCustomer
				want.Origin = types.OriginTypeAwsKms
				want.MultiRegion = aws.Bool(false)
				want.CreationDate = md.CreationDate
				want.CurrentKeyMaterialId = md.CurrentKeyMaterialId
				if tt.spec == types.KeySpecSymmetricDefault && len(aws.ToString(md.CurrentKeyMaterialId)) != 64 {
					t.Errorf("CurrentKeyMaterialId = %q, want 64 hex digits", aws.ToString(md.CurrentKeyMaterialId))
				}
				if diff := cmp.Diff(want, md, cmpopts.IgnoreUnexported(types.KeyMetadata{})); diff != "" {
					t.Errorf("DescribeKey(%s) mismatch (-want +got):\n%s", ref, diff)
				}
				if diff := cmp.Diff(created.KeyMetadata, got.KeyMetadata, cmpopts.IgnoreUnexported(types.KeyMetadata{})); diff != "" {
					t.Errorf("CreateKey and DescribeKey metadata differ (-create +describe):\n%s", diff)
				}
			}
		})
	}
}

func TestAliasesAndLists(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	var ids []string
	for range 5 {
		ids = append(ids, createKey(t, c, types.KeySpecSymmetricDefault, ""))
	}
	// ListKeys, two at a time, returns every key once in creation order.
	var listed []string
	var marker *string
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("ListKeys does not end")
		}
		out, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(2), Marker: marker})
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		for _, k := range out.Keys {
			listed = append(listed, aws.ToString(k.KeyId))
			if aws.ToString(k.KeyArn) != kmsd.KeyARN(aws.ToString(k.KeyId)) {
				t.Errorf("KeyArn %s does not match KeyId", aws.ToString(k.KeyArn))
			}
		}
		if !out.Truncated {
			break
		}
		marker = out.NextMarker
	}
	if diff := cmp.Diff(ids, listed); diff != "" {
		t.Errorf("ListKeys (-want +got):\n%s", diff)
	}

	for i, name := range []string{"alias/b", "alias/a", "alias/app/c"} {
		if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(ids[i%2])}); err != nil {
			t.Fatalf("CreateAlias %s: %v", name, err)
		}
	}
	all, err := c.ListAliases(ctx, &kms.ListAliasesInput{})
	if err != nil {
		t.Fatalf("ListAliases: %v", err)
	}
	var got []string
	for _, a := range all.Aliases {
		got = append(got, aws.ToString(a.AliasName)+"->"+aws.ToString(a.TargetKeyId))
		if want := devkms.AliasARN(devkms.DefaultRegion, devkms.DefaultAccountID, aws.ToString(a.AliasName)); aws.ToString(a.AliasArn) != want {
			t.Errorf("AliasArn = %s, want %s", aws.ToString(a.AliasArn), want)
		}
	}
	want := []string{"alias/a->" + ids[1], "alias/app/c->" + ids[0], "alias/b->" + ids[0]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListAliases (-want +got):\n%s", diff)
	}
	page1, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(kmsd.KeyARN(ids[0])), Limit: aws.Int32(1)})
	if err != nil {
		t.Fatalf("ListAliases by key: %v", err)
	}
	page2, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(ids[0]), Limit: aws.Int32(1), Marker: page1.NextMarker})
	if err != nil {
		t.Fatalf("ListAliases by key, page 2: %v", err)
	}
	if len(page1.Aliases) != 1 || !page1.Truncated || len(page2.Aliases) != 1 || page2.Truncated ||
		aws.ToString(page1.Aliases[0].AliasName) != "alias/app/c" || aws.ToString(page2.Aliases[0].AliasName) != "alias/b" {
		t.Errorf("ListAliases by key pages: %+v / %+v", page1.Aliases, page2.Aliases)
	}

	// Every operation that takes an alias accepts its name and its ARN.
	for _, ref := range []string{"alias/a", devkms.AliasARN(devkms.DefaultRegion, devkms.DefaultAccountID, "alias/a")} {
		d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(ref)})
		if err != nil || aws.ToString(d.KeyMetadata.KeyId) != ids[1] {
			t.Errorf("DescribeKey(%s) = %v, %v; want key %s", ref, d, err, ids[1])
		}
		enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(ref), Plaintext: []byte("via alias")})
		if err != nil || aws.ToString(enc.KeyId) != kmsd.KeyARN(ids[1]) {
			t.Errorf("Encrypt(%s) = %v; want KeyId %s", ref, err, kmsd.KeyARN(ids[1]))
		}
	}
}

func TestKeyPolicyOperations(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	id := createKey(t, c, types.KeySpecSymmetricDefault, "")
	got, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: &id})
	if err != nil {
		t.Fatalf("GetKeyPolicy: %v", err)
	}
	for _, part := range []string{`"Id" : "key-default-1"`, `"Sid" : "Enable IAM User Permissions"`, `"AWS" : "arn:aws:iam::111122223333:root"`, `"Action" : "kms:*"`} {
		if !bytes.Contains([]byte(aws.ToString(got.Policy)), []byte(part)) {
			t.Errorf("default key policy lacks %s:\n%s", part, aws.ToString(got.Policy))
		}
	}
	if aws.ToString(got.PolicyName) != "default" {
		t.Errorf("PolicyName = %q, want default", aws.ToString(got.PolicyName))
	}
	// A policy that lets the root manage the key but denies Encrypt.
	policy := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"blocked"}}}]}`
	if _, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &id, Policy: &policy, PolicyName: aws.String("default")}); err != nil {
		t.Fatalf("PutKeyPolicy: %v", err)
	}
	got, err = c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(kmsd.KeyARN(id))})
	if err != nil || aws.ToString(got.Policy) != policy {
		t.Fatalf("GetKeyPolicy after PutKeyPolicy = %v, %v; want the new policy verbatim", got, err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "ok"}}); err != nil {
		t.Errorf("Encrypt allowed by the policy: %v", err)
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x"), EncryptionContext: map[string]string{"tenant": "blocked"}})
	wantAPIError(t, err, "AccessDeniedException", "User: arn:aws:iam::111122223333:root is not authorized to perform: kms:Encrypt on resource: "+kmsd.KeyARN(id)+" with an explicit deny in a resource-based policy")

	// Enable and disable.
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &id}); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	d, _ := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &id})
	if d.KeyMetadata.Enabled || d.KeyMetadata.KeyState != types.KeyStateDisabled {
		t.Errorf("after DisableKey: Enabled %v, KeyState %s", d.KeyMetadata.Enabled, d.KeyMetadata.KeyState)
	}
	_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x")})
	wantAPIError(t, err, "DisabledException", kmsd.KeyARN(id)+" is disabled.")
	if _, err := c.EnableKey(ctx, &kms.EnableKeyInput{KeyId: &id}); err != nil {
		t.Fatalf("EnableKey: %v", err)
	}
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x")}); err != nil {
		t.Errorf("Encrypt after EnableKey: %v", err)
	}
}

func TestSymmetricEncryption(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	id := createKey(t, c, types.KeySpecSymmetricDefault, "")
	other := createKey(t, c, types.KeySpecSymmetricDefault, "")
	ec := map[string]string{"tenant": "a", "purpose": "test"}
	for _, size := range []int{1, 100, devkms.MaxPlaintext} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			pt := make([]byte, size)
			rand.Read(pt)
			enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: pt, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("Encrypt: %v", err)
			}
			if enc.EncryptionAlgorithm != types.EncryptionAlgorithmSpecSymmetricDefault || aws.ToString(enc.KeyId) != kmsd.KeyARN(id) {
				t.Errorf("Encrypt: algorithm %s, KeyId %s", enc.EncryptionAlgorithm, aws.ToString(enc.KeyId))
			}
			if len(enc.CiphertextBlob) > devkms.MaxCiphertextBlob {
				t.Errorf("ciphertext of %d bytes exceeds KMS's %d", len(enc.CiphertextBlob), devkms.MaxCiphertextBlob)
			}
			// Without KeyId, with KeyId, with the key's ARN.
			for _, keyID := range []*string{nil, &id, aws.String(kmsd.KeyARN(id))} {
				dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec, KeyId: keyID})
				if err != nil {
					t.Fatalf("Decrypt (KeyId %v): %v", aws.ToString(keyID), err)
				}
				if !bytes.Equal(dec.Plaintext, pt) || aws.ToString(dec.KeyId) != kmsd.KeyARN(id) || len(aws.ToString(dec.KeyMaterialId)) != 64 {
					t.Fatalf("Decrypt: plaintext equal %v, KeyId %s, KeyMaterialId %q", bytes.Equal(dec.Plaintext, pt), aws.ToString(dec.KeyId), aws.ToString(dec.KeyMaterialId))
				}
			}
			re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, SourceEncryptionContext: ec,
				DestinationKeyId: &other, DestinationEncryptionContext: map[string]string{"moved": "yes"}})
			if err != nil {
				t.Fatalf("ReEncrypt: %v", err)
			}
			if aws.ToString(re.SourceKeyId) != kmsd.KeyARN(id) || aws.ToString(re.KeyId) != kmsd.KeyARN(other) ||
				re.SourceEncryptionAlgorithm != "SYMMETRIC_DEFAULT" || re.DestinationEncryptionAlgorithm != "SYMMETRIC_DEFAULT" {
				t.Errorf("ReEncrypt output: %+v", re)
			}
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: re.CiphertextBlob, EncryptionContext: map[string]string{"moved": "yes"}})
			if err != nil || !bytes.Equal(dec.Plaintext, pt) || aws.ToString(dec.KeyId) != kmsd.KeyARN(other) {
				t.Fatalf("Decrypt after ReEncrypt: %v", err)
			}
		})
	}
}

func TestGenerateDataKey(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	id := createKey(t, c, types.KeySpecSymmetricDefault, "")
	ec := map[string]string{"file": "a.txt"}
	tests := []struct {
		name string
		spec types.DataKeySpec
		n    *int32
		want int
	}{
		{"AES_256", types.DataKeySpecAes256, nil, 32},
		{"AES_128", types.DataKeySpecAes128, nil, 16},
		{"1 byte", "", aws.Int32(1), 1},
		{"1024 bytes", "", aws.Int32(devkms.MaxNumberOfBytes), devkms.MaxNumberOfBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &id, KeySpec: tt.spec, NumberOfBytes: tt.n, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("GenerateDataKey: %v", err)
			}
			if len(out.Plaintext) != tt.want || out.CiphertextForRecipient != nil {
				t.Fatalf("GenerateDataKey: %d bytes of plaintext, want %d", len(out.Plaintext), tt.want)
			}
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob, EncryptionContext: ec})
			if err != nil || !bytes.Equal(dec.Plaintext, out.Plaintext) {
				t.Fatalf("Decrypt of the data key: %v", err)
			}
			wo, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: &id, KeySpec: tt.spec, NumberOfBytes: tt.n, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
			}
			dec, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: wo.CiphertextBlob, EncryptionContext: ec})
			if err != nil || len(dec.Plaintext) != tt.want {
				t.Fatalf("Decrypt of the data key without plaintext: %v (%d bytes)", err, len(dec.Plaintext))
			}
		})
	}
}

func TestGenerateRandom(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	seen := map[string]bool{}
	for _, n := range []int32{1, 32, devkms.MaxNumberOfBytes} {
		out, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(n)})
		if err != nil {
			t.Fatalf("GenerateRandom(%d): %v", n, err)
		}
		if len(out.Plaintext) != int(n) {
			t.Fatalf("GenerateRandom(%d) returned %d bytes", n, len(out.Plaintext))
		}
		if n >= 32 && seen[string(out.Plaintext)] {
			t.Fatalf("GenerateRandom returned the same bytes twice")
		}
		seen[string(out.Plaintext)] = true
	}
}

func TestGenerateDataKeyPair(t *testing.T) {
	ca := sharedCA(t)
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
	c := kmsd.Client(t)
	id := createKey(t, c, types.KeySpecSymmetricDefault, "")
	rcpt, priv := recipient(t, ca, nil)
	ec := map[string]string{"pair": "yes"}
	for _, spec := range []types.DataKeyPairSpec{"RSA_2048", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"} {
		t.Run(string(spec), func(t *testing.T) {
			t.Parallel()
			out, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: &id, KeyPairSpec: spec, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("GenerateDataKeyPair: %v", err)
			}
			checkPair(t, spec, out.PrivateKeyPlaintext, out.PublicKey)
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.PrivateKeyCiphertextBlob, EncryptionContext: ec})
			if err != nil || !bytes.Equal(dec.Plaintext, out.PrivateKeyPlaintext) {
				t.Fatalf("Decrypt of PrivateKeyCiphertextBlob: %v", err)
			}
			wo, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: &id, KeyPairSpec: spec, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("GenerateDataKeyPairWithoutPlaintext: %v", err)
			}
			dec, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: wo.PrivateKeyCiphertextBlob, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("Decrypt of PrivateKeyCiphertextBlob without plaintext: %v", err)
			}
			checkPair(t, spec, dec.Plaintext, wo.PublicKey)
			if spec != "RSA_2048" && spec != "ECC_NIST_P256" {
				return
			}
			att, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: &id, KeyPairSpec: spec, EncryptionContext: ec, Recipient: rcpt})
			if err != nil {
				t.Fatalf("GenerateDataKeyPair with Recipient: %v", err)
			}
			if att.PrivateKeyPlaintext != nil {
				t.Fatal("GenerateDataKeyPair with Recipient returned PrivateKeyPlaintext")
			}
			privDER, err := cms.Decrypt(att.CiphertextForRecipient, priv)
			if err != nil {
				t.Fatalf("cms.Decrypt: %v", err)
			}
			checkPair(t, spec, privDER, att.PublicKey)
		})
	}
}

// checkPair checks a PKCS#8 private key and SubjectPublicKeyInfo belong
// together and to spec.
func checkPair(t *testing.T, spec types.DataKeyPairSpec, privDER, pubDER []byte) {
	t.Helper()
	priv, err := x509.ParsePKCS8PrivateKey(privDER)
	if err != nil {
		t.Fatalf("private key is not PKCS#8: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		t.Fatalf("public key is not SubjectPublicKeyInfo: %v", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if !pub.(equaler).Equal(priv.(crypto.Signer).Public()) {
		t.Fatal("public key does not belong to the private key")
	}
	var got string
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		got = fmt.Sprintf("RSA_%d", k.N.BitLen())
	case *ecdsa.PrivateKey:
		got = "ECC_NIST_P" + k.Curve.Params().Name[2:]
	}
	if got != string(spec) {
		t.Fatalf("key pair is %s, want %s", got, spec)
	}
}

func TestRSAEncryption(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	id := createKey(t, c, types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt)
	pubOut, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &id})
	if err != nil {
		t.Fatalf("GetPublicKey: %v", err)
	}
	pk, err := x509.ParsePKIXPublicKey(pubOut.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := pk.(*rsa.PublicKey)
	// KMS Developer Guide: RSA_2048 encrypts at most 214 bytes with
	// RSAES_OAEP_SHA_1 and 190 with RSAES_OAEP_SHA_256.
	for _, tt := range []struct {
		alg types.EncryptionAlgorithmSpec
		max int
	}{{"RSAES_OAEP_SHA_1", 214}, {"RSAES_OAEP_SHA_256", 190}} {
		t.Run(string(tt.alg), func(t *testing.T) {
			pt := bytes.Repeat([]byte{7}, tt.max)
			enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: pt, EncryptionAlgorithm: tt.alg})
			if err != nil {
				t.Fatalf("Encrypt of %d bytes: %v", tt.max, err)
			}
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: &id, CiphertextBlob: enc.CiphertextBlob, EncryptionAlgorithm: tt.alg})
			if err != nil || !bytes.Equal(dec.Plaintext, pt) {
				t.Fatalf("Decrypt: %v", err)
			}
			// The ciphertext is plain RSAES-OAEP, as KMS returns it: a
			// client can encrypt offline with the public key.
			h := sha256.New()
			if tt.alg == "RSAES_OAEP_SHA_1" {
				h = sha1.New()
			}
			offline, err := rsa.EncryptOAEP(h, rand.Reader, pub, []byte("offline"), nil)
			if err != nil {
				t.Fatal(err)
			}
			dec, err = c.Decrypt(ctx, &kms.DecryptInput{KeyId: &id, CiphertextBlob: offline, EncryptionAlgorithm: tt.alg})
			if err != nil || string(dec.Plaintext) != "offline" {
				t.Fatalf("Decrypt of an offline ciphertext: %v", err)
			}
			_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: append(pt, 7), EncryptionAlgorithm: tt.alg})
			wantAPIError(t, err, "ValidationException", fmt.Sprintf("at most %d bytes", tt.max))
		})
	}
}

func TestSignVerify(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	keys := map[types.KeySpec]string{}
	for _, spec := range []types.KeySpec{"RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"} {
		keys[spec] = createKey(t, c, spec, types.KeyUsageTypeSignVerify)
	}
	tests := []struct {
		spec types.KeySpec
		alg  types.SigningAlgorithmSpec
		hash crypto.Hash
	}{
		{"RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256", crypto.SHA256},
		{"RSA_2048", "RSASSA_PKCS1_V1_5_SHA_384", crypto.SHA384},
		{"RSA_2048", "RSASSA_PKCS1_V1_5_SHA_512", crypto.SHA512},
		{"RSA_2048", "RSASSA_PSS_SHA_256", crypto.SHA256},
		{"RSA_2048", "RSASSA_PSS_SHA_384", crypto.SHA384},
		{"RSA_2048", "RSASSA_PSS_SHA_512", crypto.SHA512},
		{"ECC_NIST_P256", "ECDSA_SHA_256", crypto.SHA256},
		{"ECC_NIST_P384", "ECDSA_SHA_384", crypto.SHA384},
		{"ECC_NIST_P521", "ECDSA_SHA_512", crypto.SHA512},
	}
	msg := []byte("message to sign")
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			id := keys[tt.spec]
			pubOut, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &id})
			if err != nil {
				t.Fatalf("GetPublicKey: %v", err)
			}
			if pubOut.KeySpec != tt.spec || pubOut.KeyUsage != "SIGN_VERIFY" {
				t.Errorf("GetPublicKey: KeySpec %s, KeyUsage %s", pubOut.KeySpec, pubOut.KeyUsage)
			}
			pub, err := x509.ParsePKIXPublicKey(pubOut.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			h := tt.hash.New()
			h.Write(msg)
			digest := h.Sum(nil)
			for _, mt := range []struct {
				typ types.MessageType
				msg []byte
			}{{"RAW", msg}, {"DIGEST", digest}, {"", msg}} {
				sig, err := c.Sign(ctx, &kms.SignInput{KeyId: &id, Message: mt.msg, MessageType: mt.typ, SigningAlgorithm: tt.alg})
				if err != nil {
					t.Fatalf("Sign %s: %v", mt.typ, err)
				}
				if !verifyLocally(pub, tt.alg, tt.hash, digest, sig.Signature) {
					t.Fatalf("signature (%s) does not verify with the public key", mt.typ)
				}
				v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: &id, Message: mt.msg, MessageType: mt.typ, Signature: sig.Signature, SigningAlgorithm: tt.alg})
				if err != nil || !v.SignatureValid {
					t.Fatalf("Verify %s: %v", mt.typ, err)
				}
			}
			bad, _ := c.Sign(ctx, &kms.SignInput{KeyId: &id, Message: []byte("other"), SigningAlgorithm: tt.alg})
			_, err = c.Verify(ctx, &kms.VerifyInput{KeyId: &id, Message: msg, Signature: bad.Signature, SigningAlgorithm: tt.alg})
			wantAPIError(t, err, "KMSInvalidSignatureException", "signature verification failed")
		})
	}
}

func verifyLocally(pub any, alg types.SigningAlgorithmSpec, h crypto.Hash, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case *rsa.PublicKey:
		if alg[:9] == "RSASSA_PS" {
			return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: h.Size()}) == nil
		}
		return rsa.VerifyPKCS1v15(k, h, digest, sig) == nil
	}
	return false
}

func TestDeriveSharedSecret(t *testing.T) {
	ca := sharedCA(t)
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
	c := kmsd.Client(t)
	rcpt, rcptKey := recipient(t, ca, nil)
	for _, tt := range []struct {
		spec  types.KeySpec
		curve elliptic.Curve
	}{{"ECC_NIST_P256", elliptic.P256()}, {"ECC_NIST_P384", elliptic.P384()}, {"ECC_NIST_P521", elliptic.P521()}} {
		t.Run(string(tt.spec), func(t *testing.T) {
			id := createKey(t, c, tt.spec, types.KeyUsageTypeKeyAgreement)
			peer, err := ecdsa.GenerateKey(tt.curve, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			peerDER, _ := x509.MarshalPKIXPublicKey(&peer.PublicKey)
			out, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &id, KeyAgreementAlgorithm: "ECDH", PublicKey: peerDER})
			if err != nil {
				t.Fatalf("DeriveSharedSecret: %v", err)
			}
			kmsPub, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &id})
			if err != nil {
				t.Fatal(err)
			}
			pk, _ := x509.ParsePKIXPublicKey(kmsPub.PublicKey)
			peerECDH, _ := peer.ECDH()
			kmsECDH, _ := pk.(*ecdsa.PublicKey).ECDH()
			want, err := peerECDH.ECDH(kmsECDH)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.SharedSecret, want) || out.KeyOrigin != "AWS_KMS" || out.KeyAgreementAlgorithm != "ECDH" {
				t.Fatalf("DeriveSharedSecret: secret equal %v, origin %s, algorithm %s", bytes.Equal(out.SharedSecret, want), out.KeyOrigin, out.KeyAgreementAlgorithm)
			}
			att, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &id, KeyAgreementAlgorithm: "ECDH", PublicKey: peerDER, Recipient: rcpt})
			if err != nil {
				t.Fatalf("DeriveSharedSecret with Recipient: %v", err)
			}
			got, err := cms.Decrypt(att.CiphertextForRecipient, rcptKey)
			if err != nil || !bytes.Equal(got, want) || att.SharedSecret != nil {
				t.Fatalf("DeriveSharedSecret envelope: %v", err)
			}
		})
	}
	t.Run("wrong curve", func(t *testing.T) {
		id := createKey(t, c, "ECC_NIST_P256", types.KeyUsageTypeKeyAgreement)
		x, _ := ecdh.X25519().GenerateKey(rand.Reader)
		der, _ := x509.MarshalPKIXPublicKey(x.PublicKey())
		_, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &id, KeyAgreementAlgorithm: "ECDH", PublicKey: der})
		wantAPIError(t, err, "ValidationException", "PublicKey must be an elliptic curve key on the curve")
	})
}

func TestMac(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	for _, tt := range []struct {
		spec types.KeySpec
		alg  types.MacAlgorithmSpec
		size int
	}{{"HMAC_224", "HMAC_SHA_224", sha256.Size224}, {"HMAC_256", "HMAC_SHA_256", sha256.Size}, {"HMAC_384", "HMAC_SHA_384", sha512.Size384}, {"HMAC_512", "HMAC_SHA_512", sha512.Size}} {
		t.Run(string(tt.spec), func(t *testing.T) {
			id := createKey(t, c, tt.spec, types.KeyUsageTypeGenerateVerifyMac)
			out, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &id, MacAlgorithm: tt.alg, Message: []byte("msg")})
			if err != nil {
				t.Fatalf("GenerateMac: %v", err)
			}
			if len(out.Mac) != tt.size || out.MacAlgorithm != tt.alg || aws.ToString(out.KeyId) != kmsd.KeyARN(id) {
				t.Fatalf("GenerateMac: %d bytes, %s, %s", len(out.Mac), out.MacAlgorithm, aws.ToString(out.KeyId))
			}
			again, _ := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &id, MacAlgorithm: tt.alg, Message: []byte("msg")})
			if !bytes.Equal(again.Mac, out.Mac) {
				t.Fatal("GenerateMac is not deterministic")
			}
			v, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &id, MacAlgorithm: tt.alg, Message: []byte("msg"), Mac: out.Mac})
			if err != nil || !v.MacValid {
				t.Fatalf("VerifyMac: %v", err)
			}
			_, err = c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &id, MacAlgorithm: tt.alg, Message: []byte("msh"), Mac: out.Mac})
			wantAPIError(t, err, "KMSInvalidMacException", "HMAC verification failed")
			other := types.MacAlgorithmSpecHmacSha256
			if tt.alg == other {
				other = types.MacAlgorithmSpecHmacSha512
			}
			_, err = c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &id, MacAlgorithm: other, Message: []byte("msg")})
			wantAPIError(t, err, "InvalidKeyUsageException", "is incompatible with key spec "+string(tt.spec))
		})
	}
}

func TestDryRun(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	id := createKey(t, c, types.KeySpecSymmetricDefault, "")
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Encrypt": func() error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x"), DryRun: aws.Bool(true)})
			return err
		},
		"Decrypt": func() error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, DryRun: aws.Bool(true)})
			return err
		},
		"GenerateDataKey": func() error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &id, NumberOfBytes: aws.Int32(8), DryRun: aws.Bool(true)})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			code, _, status := apiError(t, err)
			if code != "DryRunOperationException" || status != 412 {
				t.Fatalf("got %s (%d), want DryRunOperationException (412)", code, status)
			}
		})
	}
}
