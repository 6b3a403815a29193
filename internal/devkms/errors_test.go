package devkms_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/keypolicy"
)

// errorFixture is a devkms with one key of each kind the error cases need.
type errorFixture struct {
	kmsd                                       *devkmstest.Instance
	c                                          *kms.Client
	sym, sym2, rsaEnc, rsaSign, ecSign, ecdh   string
	hmac, disabled, denyAll                    string
	blob, rsaBlob                              []byte
	sig                                        []byte
	ec                                         map[string]string
	unknownKeyARN, aliasARN, missingAliasARN   string
	peerP256, peerP384                         []byte
	validPolicy, lockoutPolicy, oversizePolicy string
}

func newErrorFixture(t *testing.T) *errorFixture {
	t.Helper()
	f := &errorFixture{kmsd: devkmstest.Start(t)}
	f.c = f.kmsd.Client(t)
	c := f.c
	f.sym = createKey(t, c, types.KeySpecSymmetricDefault, "")
	f.sym2 = createKey(t, c, types.KeySpecSymmetricDefault, "")
	f.rsaEnc = createKey(t, c, types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt)
	f.rsaSign = createKey(t, c, types.KeySpecRsa2048, types.KeyUsageTypeSignVerify)
	f.ecSign = createKey(t, c, types.KeySpecEccNistP256, types.KeyUsageTypeSignVerify)
	f.ecdh = createKey(t, c, types.KeySpecEccNistP256, types.KeyUsageTypeKeyAgreement)
	f.hmac = createKey(t, c, types.KeySpecHmac256, types.KeyUsageTypeGenerateVerifyMac)
	f.disabled = createKey(t, c, types.KeySpecSymmetricDefault, "")
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &f.disabled}); err != nil {
		t.Fatal(err)
	}
	f.denyAll = f.kmsd.CreateKey(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"kms:*","Resource":"*"}]}`)
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/taken"), TargetKeyId: &f.sym}); err != nil {
		t.Fatal(err)
	}
	f.ec = map[string]string{"k": "v"}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.sym, Plaintext: []byte("secret"), EncryptionContext: f.ec})
	if err != nil {
		t.Fatal(err)
	}
	f.blob = enc.CiphertextBlob
	renc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.rsaEnc, Plaintext: []byte("secret"), EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	f.rsaBlob = renc.CiphertextBlob
	s, err := c.Sign(ctx, &kms.SignInput{KeyId: &f.ecSign, Message: []byte("m"), SigningAlgorithm: "ECDSA_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	f.sig = s.Signature
	f.unknownKeyARN = f.kmsd.KeyARN("00000000-0000-4000-8000-000000000000")
	f.aliasARN = devkms.AliasARN(devkms.DefaultRegion, devkms.DefaultAccountID, "alias/taken")
	f.missingAliasARN = devkms.AliasARN(devkms.DefaultRegion, devkms.DefaultAccountID, "alias/missing")
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		k, _ := ecdsa.GenerateKey(curve, rand.Reader)
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if curve == elliptic.P256() {
			f.peerP256 = der
		} else {
			f.peerP384 = der
		}
	}
	f.validPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`
	f.lockoutPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:Encrypt","Resource":"*"}]}`
	// A valid policy padded with spaces to exactly the size limit, and one
	// byte more.
	f.oversizePolicy = f.validPolicy + strings.Repeat(" ", keypolicy.MaxPolicySize+1-len(f.validPolicy))
	return f
}

// errorCase is one request and the KMS error it must get.
type errorCase struct {
	name   string
	call   func(f *errorFixture) error
	code   string
	status int
	msg    string // substring of the message; "" checks the message is empty
}

func runErrorCases(t *testing.T, f *errorFixture, cases []errorCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(f)
			code, msg, status := apiError(t, err)
			if code != tt.code || status != tt.status {
				t.Fatalf("got %s (%d): %q\nwant %s (%d)", code, status, msg, tt.code, tt.status)
			}
			if (tt.msg == "" && msg != "") || !strings.Contains(msg, tt.msg) {
				t.Fatalf("message %q, want one containing %q", msg, tt.msg)
			}
		})
	}
}

func TestKMSErrors(t *testing.T) {
	f := newErrorFixture(t)
	c := f.c
	keyARN := func(id string) string { return f.kmsd.KeyARN(id) }
	cases := []errorCase{
		// NotFoundException and InvalidArnException: identifiers.
		{"key does not exist", func(f *errorFixture) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("00000000-0000-4000-8000-000000000000")})
			return err
		}, "NotFoundException", 400, "Key '" + f.unknownKeyARN + "' does not exist"},
		{"key ARN does not exist", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.unknownKeyARN, Plaintext: []byte("x")})
			return err
		}, "NotFoundException", 400, "Key '" + f.unknownKeyARN + "' does not exist"},
		{"key of another account", func(f *errorFixture) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("arn:aws:kms:us-east-1:444455556666:key/" + f.sym)})
			return err
		}, "NotFoundException", 400, "Key 'arn:aws:kms:us-east-1:444455556666:key/" + f.sym + "' does not exist"},
		{"alias does not exist", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/missing"), Plaintext: []byte("x")})
			return err
		}, "NotFoundException", 400, "Alias " + f.missingAliasARN + " is not found."},
		{"alias ARN does not exist", func(f *errorFixture) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &f.missingAliasARN})
			return err
		}, "NotFoundException", 400, "Alias " + f.missingAliasARN + " is not found."},
		{"invalid key ID", func(f *errorFixture) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("not-a-key")})
			return err
		}, "NotFoundException", 400, "Invalid keyId not-a-key"},
		{"invalid ARN", func(f *errorFixture) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("arn:aws:s3:::bucket")})
			return err
		}, "NotFoundException", 400, "Invalid arn"},
		{"alias ARN where only keys are accepted", func(f *errorFixture) error {
			_, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: &f.aliasARN})
			return err
		}, "InvalidArnException", 400, "Key Aliases are not supported for this operation"},
		{"alias name where only keys are accepted", func(f *errorFixture) error {
			_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: aws.String("alias/taken"), Policy: &f.validPolicy})
			return err
		}, "NotFoundException", 400, "Invalid keyId alias/taken"},
		{"policy name not default", func(f *errorFixture) error {
			_, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: &f.sym, PolicyName: aws.String("other")})
			return err
		}, "NotFoundException", 400, "No such policy exists"},

		// Decryption failures.
		{"tampered ciphertext", func(f *errorFixture) error {
			b := bytes.Clone(f.blob)
			b[len(b)-1] ^= 1
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: b, EncryptionContext: f.ec})
			return err
		}, "InvalidCiphertextException", 400, ""},
		{"wrong encryption context", func(f *errorFixture) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: f.blob, EncryptionContext: map[string]string{"k": "other"}})
			return err
		}, "InvalidCiphertextException", 400, ""},
		{"missing encryption context", func(f *errorFixture) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: f.blob})
			return err
		}, "InvalidCiphertextException", 400, ""},
		{"not a ciphertext", func(f *errorFixture) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("garbage")})
			return err
		}, "InvalidCiphertextException", 400, ""},
		{"RSA ciphertext with the wrong algorithm", func(f *errorFixture) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: &f.rsaEnc, CiphertextBlob: f.rsaBlob, EncryptionAlgorithm: "RSAES_OAEP_SHA_1"})
			return err
		}, "InvalidCiphertextException", 400, ""},
		{"ciphertext of another key", func(f *errorFixture) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: &f.sym2, CiphertextBlob: f.blob, EncryptionContext: f.ec})
			return err
		}, "IncorrectKeyException", 400, "cannot decrypt the data"},
		{"ReEncrypt with the wrong source key", func(f *errorFixture) error {
			_, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: f.blob, SourceKeyId: &f.sym2, SourceEncryptionContext: f.ec, DestinationKeyId: &f.sym})
			return err
		}, "IncorrectKeyException", 400, "cannot decrypt the data"},
		{"ciphertext names an unknown key", func(f *errorFixture) error {
			b := bytes.Clone(f.blob)
			copy(b[5:41], "00000000-0000-4000-8000-000000000000")
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: b, EncryptionContext: f.ec})
			return err
		}, "AccessDeniedException", 400, "The ciphertext refers to a customer master key that does not exist"},

		// Authorization.
		{"key policy allows nothing to the caller", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.denyAll, Plaintext: []byte("x")})
			return err
		}, "AccessDeniedException", 400, "User: arn:aws:iam::111122223333:root is not authorized to perform: kms:Encrypt on resource: " + keyARN(f.denyAll) + " because no resource-based policy allows the kms:Encrypt action"},
		{"DescribeKey needs the key policy too", func(f *errorFixture) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &f.denyAll})
			return err
		}, "AccessDeniedException", 400, "kms:DescribeKey"},

		// Key state and usage.
		{"disabled key", func(f *errorFixture) error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &f.disabled, NumberOfBytes: aws.Int32(8)})
			return err
		}, "DisabledException", 400, keyARN(f.disabled) + " is disabled."},
		{"Encrypt with a signing key", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.rsaSign, Plaintext: []byte("x"), EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
			return err
		}, "InvalidKeyUsageException", 400, keyARN(f.rsaSign) + " key usage is SIGN_VERIFY which is not valid for Encrypt."},
		{"Sign with an encryption key", func(f *errorFixture) error {
			_, err := c.Sign(ctx, &kms.SignInput{KeyId: &f.rsaEnc, Message: []byte("m"), SigningAlgorithm: "RSASSA_PSS_SHA_256"})
			return err
		}, "InvalidKeyUsageException", 400, "key usage is ENCRYPT_DECRYPT which is not valid for Sign."},
		{"signing algorithm of another key type", func(f *errorFixture) error {
			_, err := c.Sign(ctx, &kms.SignInput{KeyId: &f.ecSign, Message: []byte("m"), SigningAlgorithm: "RSASSA_PSS_SHA_256"})
			return err
		}, "InvalidKeyUsageException", 400, "Algorithm RSASSA_PSS_SHA_256 is incompatible with key spec ECC_NIST_P256."},
		{"symmetric key with an RSA algorithm", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.sym, Plaintext: []byte("x"), EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
			return err
		}, "InvalidKeyUsageException", 400, "Algorithm RSAES_OAEP_SHA_256 is incompatible with key spec SYMMETRIC_DEFAULT."},
		{"RSA key without an algorithm", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.rsaEnc, Plaintext: []byte("x")})
			return err
		}, "InvalidKeyUsageException", 400, "Algorithm SYMMETRIC_DEFAULT is incompatible with key spec RSA_2048."},
		{"GenerateDataKey with an asymmetric key", func(f *errorFixture) error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &f.rsaEnc, NumberOfBytes: aws.Int32(8)})
			return err
		}, "InvalidKeyUsageException", 400, "KeySpec is RSA_2048 which is not valid for GenerateDataKey."},
		{"DeriveSharedSecret with a signing key", func(f *errorFixture) error {
			_, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &f.ecSign, KeyAgreementAlgorithm: "ECDH", PublicKey: f.peerP256})
			return err
		}, "InvalidKeyUsageException", 400, "key usage is SIGN_VERIFY which is not valid for DeriveSharedSecret."},
		{"GenerateMac with an encryption key", func(f *errorFixture) error {
			_, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &f.sym, MacAlgorithm: "HMAC_SHA_256", Message: []byte("m")})
			return err
		}, "InvalidKeyUsageException", 400, "which is not valid for GenerateMac."},

		// Validation.
		{"encryption context with an asymmetric key", func(f *errorFixture) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.rsaEnc, Plaintext: []byte("x"), EncryptionAlgorithm: "RSAES_OAEP_SHA_1", EncryptionContext: f.ec})
			return err
		}, "ValidationException", 400, "encryption context is supported only on operations with symmetric encryption KMS keys"},
		{"both KeySpec and NumberOfBytes", func(f *errorFixture) error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &f.sym, KeySpec: "AES_256", NumberOfBytes: aws.Int32(32)})
			return err
		}, "ValidationException", 400, "Please specify either number of bytes or key spec."},
		{"neither KeySpec nor NumberOfBytes", func(f *errorFixture) error {
			_, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: &f.sym})
			return err
		}, "ValidationException", 400, "Please specify either number of bytes or key spec."},
		{"unknown KeySpec value", func(f *errorFixture) error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &f.sym, KeySpec: "AES_512"})
			return err
		}, "ValidationException", 400, "Value 'AES_512' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"},
		{"digest of the wrong length", func(f *errorFixture) error {
			_, err := c.Sign(ctx, &kms.SignInput{KeyId: &f.ecSign, Message: []byte("short"), MessageType: "DIGEST", SigningAlgorithm: "ECDSA_SHA_256"})
			return err
		}, "ValidationException", 400, "Digest is invalid length for algorithm ECDSA_SHA_256."},
		{"peer public key on another curve", func(f *errorFixture) error {
			_, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &f.ecdh, KeyAgreementAlgorithm: "ECDH", PublicKey: f.peerP384})
			return err
		}, "ValidationException", 400, "PublicKey must be an elliptic curve key on the curve"},
		{"alias without prefix", func(f *errorFixture) error {
			_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("noprefix"), TargetKeyId: &f.sym})
			return err
		}, "ValidationException", 400, `Alias must start with the prefix "alias/".`},
		{"alias with a colon", func(f *errorFixture) error {
			_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/a:b"), TargetKeyId: &f.sym})
			return err
		}, "ValidationException", 400, "Member must satisfy regular expression pattern"},
		{"KeySpec and CustomerMasterKeySpec", func(f *errorFixture) error {
			//lint:ignore SA1019 KMS still accepts the deprecated member; the test sends both.
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "RSA_2048", CustomerMasterKeySpec: "RSA_2048", KeyUsage: "SIGN_VERIFY"})
			return err
		}, "ValidationException", 400, "You cannot specify KeySpec and CustomerMasterKeySpec in the same request."},
		{"asymmetric key without KeyUsage", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "ECC_NIST_P256"})
			return err
		}, "ValidationException", 400, "You must specify a KeyUsage value"},
		{"KeyUsage incompatible with KeySpec", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "ECC_NIST_P256", KeyUsage: "ENCRYPT_DECRYPT"})
			return err
		}, "ValidationException", 400, "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec ECC_NIST_P256"},
		{"HMAC key for encryption", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "HMAC_256", KeyUsage: "ENCRYPT_DECRYPT"})
			return err
		}, "ValidationException", 400, "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec HMAC_256"},
		{"unknown KeySpec in CreateKey", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "RSA_1024", KeyUsage: "SIGN_VERIFY"})
			return err
		}, "ValidationException", 400, "Value 'RSA_1024' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [RSA_2048,"},
		{"GenerateRandom without NumberOfBytes", func(f *errorFixture) error {
			_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{})
			return err
		}, "ValidationException", 400, "Value null at 'numberOfBytes' failed to satisfy constraint: Member must not be null"},

		// Unsupported.
		{"secp256k1 keys", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: "ECC_SECG_P256K1", KeyUsage: "SIGN_VERIFY"})
			return err
		}, "UnsupportedOperationException", 400, "no secp256k1 (ECC_SECG_P256K1) implementation"},
		{"secp256k1 data key pairs", func(f *errorFixture) error {
			_, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: &f.sym, KeyPairSpec: "ECC_SECG_P256K1"})
			return err
		}, "UnsupportedOperationException", 400, "KeyPairSpec ECC_SECG_P256K1 is not supported by devkms."},
		{"GetPublicKey of a symmetric key", func(f *errorFixture) error {
			_, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &f.sym})
			return err
		}, "UnsupportedOperationException", 400, "which has no public key"},
		{"an operation devkms does not implement", func(f *errorFixture) error {
			_, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: &f.sym})
			return err
		}, "UnsupportedOperationException", 400, "devkms does not implement the KMS operation ScheduleKeyDeletion"},
		{"external key material", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{Origin: "EXTERNAL"})
			return err
		}, "UnsupportedOperationException", 400, "Origin AWS_KMS"},

		// Signatures and MACs.
		{"signature of another message", func(f *errorFixture) error {
			_, err := c.Verify(ctx, &kms.VerifyInput{KeyId: &f.ecSign, Message: []byte("other"), Signature: f.sig, SigningAlgorithm: "ECDSA_SHA_256"})
			return err
		}, "KMSInvalidSignatureException", 400, "signature verification failed"},
		{"wrong MAC", func(f *errorFixture) error {
			_, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &f.hmac, MacAlgorithm: "HMAC_SHA_256", Message: []byte("m"), Mac: make([]byte, 32)})
			return err
		}, "KMSInvalidMacException", 400, "HMAC verification failed"},

		// Aliases and policies.
		{"alias exists", func(f *errorFixture) error {
			_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/taken"), TargetKeyId: &f.sym2})
			return err
		}, "AlreadyExistsException", 400, "An alias with the name " + f.aliasARN + " already exists"},
		{"reserved alias prefix", func(f *errorFixture) error {
			_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/aws/s3"), TargetKeyId: &f.sym})
			return err
		}, "InvalidAliasNameException", 400, "alias/aws/"},
		{"policy is not JSON", func(f *errorFixture) error {
			_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &f.sym, Policy: aws.String("{not json")})
			return err
		}, "MalformedPolicyDocumentException", 400, ""},
		{"policy that locks the caller out", func(f *errorFixture) error {
			_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &f.sym2, Policy: &f.lockoutPolicy})
			return err
		}, "MalformedPolicyDocumentException", 400, "The new key policy will not allow you to update the key policy in the future."},
		{"CreateKey with a policy that locks the caller out", func(f *errorFixture) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{Policy: &f.lockoutPolicy})
			return err
		}, "MalformedPolicyDocumentException", 400, "The new key policy will not allow you to update the key policy in the future."},
		{"policy larger than 32 KiB", func(f *errorFixture) error {
			_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &f.sym2, Policy: &f.oversizePolicy})
			return err
		}, "LimitExceededException", 400, ""},
		{"invalid list marker", func(f *errorFixture) error {
			_, err := c.ListKeys(ctx, &kms.ListKeysInput{Marker: aws.String("bm90IGEgbWFya2Vy")})
			return err
		}, "InvalidMarkerException", 400, "not valid"},
	}
	// Messages checked for emptiness use "" only where KMS sends none; the
	// policy parser's reasons are devkms's own words.
	for i := range cases {
		if cases[i].code == "MalformedPolicyDocumentException" && cases[i].msg == "" {
			cases[i].msg = "JSON"
		}
		if cases[i].code == "LimitExceededException" {
			cases[i].msg = "32768"
		}
	}
	runErrorCases(t, f, cases)

	t.Run("lockout check bypassed", func(t *testing.T) {
		if _, err := c.CreateKey(ctx, &kms.CreateKeyInput{Policy: &f.lockoutPolicy, BypassPolicyLockoutSafetyCheck: true}); err != nil {
			t.Fatalf("CreateKey with BypassPolicyLockoutSafetyCheck: %v", err)
		}
	})
}

// TestLimits sends every size-limited member at its limit (accepted by
// validation, though the request may fail later for other reasons) and one
// past it (ValidationException naming the member).
func TestLimits(t *testing.T) {
	f := newErrorFixture(t)
	c := f.c
	n := func(size int) []byte { return bytes.Repeat([]byte{'a'}, size) }
	s := func(size int) *string { return aws.String(strings.Repeat("a", size)) }
	tokens := func(count int) []string {
		out := make([]string, count)
		for i := range out {
			out[i] = "t"
		}
		return out
	}
	longAlias := func(size int) *string { return aws.String("alias/" + strings.Repeat("x", size-len("alias/"))) }
	type limit struct {
		name   string
		member string
		call   func(size int) error
		limit  int
		// atLimit is the error the request gets at the limit ("" for
		// success).
		atLimit string
	}
	limits := []limit{
		{"Encrypt Plaintext", "'plaintext'", func(size int) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.sym, Plaintext: n(size)})
			return err
		}, devkms.MaxPlaintext, ""},
		{"Decrypt CiphertextBlob", "'ciphertextBlob'", func(size int) error {
			_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: n(size)})
			return err
		}, devkms.MaxCiphertextBlob, "InvalidCiphertextException"},
		{"ReEncrypt CiphertextBlob", "'ciphertextBlob'", func(size int) error {
			_, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: n(size), DestinationKeyId: &f.sym})
			return err
		}, devkms.MaxCiphertextBlob, "InvalidCiphertextException"},
		{"GenerateDataKey NumberOfBytes", "'numberOfBytes'", func(size int) error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &f.sym, NumberOfBytes: aws.Int32(int32(size))})
			return err
		}, devkms.MaxNumberOfBytes, ""},
		{"GenerateRandom NumberOfBytes", "'numberOfBytes'", func(size int) error {
			_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(int32(size))})
			return err
		}, devkms.MaxNumberOfBytes, ""},
		{"Sign Message", "'message'", func(size int) error {
			_, err := c.Sign(ctx, &kms.SignInput{KeyId: &f.ecSign, Message: n(size), SigningAlgorithm: "ECDSA_SHA_256"})
			return err
		}, devkms.MaxMessage, ""},
		{"Verify Signature", "'signature'", func(size int) error {
			_, err := c.Verify(ctx, &kms.VerifyInput{KeyId: &f.ecSign, Message: []byte("m"), Signature: n(size), SigningAlgorithm: "ECDSA_SHA_256"})
			return err
		}, devkms.MaxSignature, "KMSInvalidSignatureException"},
		{"GenerateMac Message", "'message'", func(size int) error {
			_, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &f.hmac, Message: n(size), MacAlgorithm: "HMAC_SHA_256"})
			return err
		}, devkms.MaxMessage, ""},
		{"VerifyMac Mac", "'mac'", func(size int) error {
			_, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &f.hmac, Message: []byte("m"), Mac: n(size), MacAlgorithm: "HMAC_SHA_256"})
			return err
		}, devkms.MaxMac, "KMSInvalidMacException"},
		{"DeriveSharedSecret PublicKey", "'publicKey'", func(size int) error {
			_, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{KeyId: &f.ecdh, KeyAgreementAlgorithm: "ECDH", PublicKey: n(size)})
			return err
		}, devkms.MaxPeerPublicKey, "ValidationException"},
		{"KeyId", "'keyId'", func(size int) error {
			_, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: longAlias(size)})
			return err
		}, devkms.MaxKeyID, "NotFoundException"},
		{"CreateKey Description", "'description'", func(size int) error {
			_, err := c.CreateKey(ctx, &kms.CreateKeyInput{Description: s(size)})
			return err
		}, devkms.MaxDescription, ""},
		{"CreateAlias AliasName", "'aliasName'", func(size int) error {
			_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: longAlias(size), TargetKeyId: &f.sym})
			return err
		}, devkms.MaxAliasName, ""},
		{"GrantTokens", "'grantTokens'", func(size int) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.sym, Plaintext: []byte("x"), GrantTokens: tokens(size)})
			return err
		}, devkms.MaxGrantTokens, "InvalidGrantTokenException"}, // in range, but not tokens devkms issued
		{"GrantTokens member", "'grantTokens.1.member'", func(size int) error {
			_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.sym, Plaintext: []byte("x"), GrantTokens: []string{strings.Repeat("t", size)}})
			return err
		}, devkms.MaxGrantTokenLen, "InvalidGrantTokenException"},
		{"ListKeys Limit", "'limit'", func(size int) error {
			_, err := c.ListKeys(ctx, &kms.ListKeysInput{Limit: aws.Int32(int32(size))})
			return err
		}, devkms.MaxListKeysLimit, ""},
		{"ListAliases Limit", "'limit'", func(size int) error {
			_, err := c.ListAliases(ctx, &kms.ListAliasesInput{Limit: aws.Int32(int32(size))})
			return err
		}, devkms.MaxListAliasesLimit, ""},
		{"ListKeys Marker", "'marker'", func(size int) error {
			_, err := c.ListKeys(ctx, &kms.ListKeysInput{Marker: s(size)})
			return err
		}, devkms.MaxMarker, "InvalidMarkerException"},
		{"GetKeyPolicy PolicyName", "'policyName'", func(size int) error {
			_, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: &f.sym, PolicyName: s(size)})
			return err
		}, devkms.MaxPolicyName, "NotFoundException"},
		{"PutKeyPolicy Policy", "32768", func(size int) error {
			p := f.validPolicy + strings.Repeat(" ", size-len(f.validPolicy))
			_, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &f.sym2, Policy: &p})
			return err
		}, keypolicy.MaxPolicySize, ""},
	}
	for _, l := range limits {
		t.Run(l.name, func(t *testing.T) {
			err := l.call(l.limit)
			if l.atLimit == "" && err != nil {
				t.Fatalf("at the limit (%d): %v", l.limit, err)
			}
			if l.atLimit != "" {
				if code, msg, _ := apiError(t, err); code != l.atLimit || strings.Contains(msg, "failed to satisfy constraint") {
					t.Fatalf("at the limit (%d): got %s %q, want %s from past validation", l.limit, code, msg, l.atLimit)
				}
			}
			err = l.call(l.limit + 1)
			code, msg, status := apiError(t, err)
			wantCode := "ValidationException"
			if l.name == "PutKeyPolicy Policy" {
				wantCode = "LimitExceededException"
			}
			if code != wantCode || status != 400 || !strings.Contains(msg, l.member) {
				t.Fatalf("past the limit (%d): got %s (%d) %q, want %s naming %s", l.limit+1, code, status, msg, wantCode, l.member)
			}
		})
	}
	t.Run("zero", func(t *testing.T) {
		_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(0)})
		wantAPIError(t, err, "ValidationException", "Value '0' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1")
		_, err = c.Encrypt(ctx, &kms.EncryptInput{KeyId: &f.sym, Plaintext: []byte{}})
		wantAPIError(t, err, "ValidationException", "'plaintext'")
	})
}

// rawCall posts body to devkms with the given target and content type and
// returns the status and the decoded KMS error.
func rawCall(t *testing.T, kmsd *devkmstest.Instance, target, contentType string, body []byte) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, kmsd.URL+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := kmsd.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	if resp.StatusCode != 200 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("error body %q is not KMS JSON: %v", b, err)
		}
	}
	return resp.StatusCode, e.Type, e.Message
}

func TestWireErrors(t *testing.T) {
	kmsd := devkmstest.Start(t)
	const ct = "application/x-amz-json-1.1"
	padded := func(size int) []byte {
		b := []byte(`{"NumberOfBytes":1}`)
		return append(b, bytes.Repeat([]byte(" "), size-len(b))...)
	}
	tests := []struct {
		name     string
		target   string
		ct       string
		body     []byte
		status   int
		typ, msg string
	}{
		{"unknown operation", "TrentService.MakeCoffee", ct, []byte("{}"), 400, "UnknownOperationException", "MakeCoffee"},
		{"missing target", "", ct, []byte("{}"), 400, "UnknownOperationException", "Unknown operation"},
		{"malformed JSON", "TrentService.GenerateRandom", ct, []byte(`{"NumberOfBytes":`), 400, "SerializationException", ""},
		{"wrong member type", "TrentService.GenerateRandom", ct, []byte(`{"NumberOfBytes":"x"}`), 400, "SerializationException", "NumberOfBytes"},
		{"bad base64", "TrentService.Decrypt", ct, []byte(`{"CiphertextBlob":"!!"}`), 400, "SerializationException", "base64"},
		{"wrong content type", "TrentService.GenerateRandom", "text/plain", []byte("{}"), 400, "SerializationException", "Content-Type"},
		{"body at the limit", "TrentService.GenerateRandom", ct, padded(65536), 200, "", ""},
		{"body past the limit", "TrentService.GenerateRandom", ct, padded(65537), 400, "ValidationException", "65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, typ, msg := rawCall(t, kmsd, tt.target, tt.ct, tt.body)
			if status != tt.status || typ != tt.typ || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", status, typ, msg, tt.status, tt.typ, tt.msg)
			}
		})
	}
}
