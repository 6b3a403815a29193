package devkms

import (
	"slices"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// Length and range constraints of KMS request members, from the KMS API
// reference ("Length Constraints" / "Valid Range" of each request parameter).
// Each is checked with the member name KMS uses in its validation messages.
const (
	// MaxPlaintext: Encrypt Plaintext, "Minimum length of 1. Maximum length
	// of 4096."
	MaxPlaintext = 4096
	// MaxCiphertextBlob: Decrypt/ReEncrypt CiphertextBlob, "Minimum length
	// of 1. Maximum length of 6144."
	MaxCiphertextBlob = 6144
	// MaxNumberOfBytes: GenerateDataKey and GenerateRandom NumberOfBytes,
	// "Valid Range: Minimum value of 1. Maximum value of 1024."
	MaxNumberOfBytes = 1024
	// MaxMessage: Sign/Verify/GenerateMac/VerifyMac Message, "Minimum
	// length of 1. Maximum length of 4096."
	MaxMessage = 4096
	// MaxSignature: Verify Signature, "Minimum length of 1. Maximum length
	// of 6144."
	MaxSignature = 6144
	// MaxMac: VerifyMac Mac, "Minimum length of 1. Maximum length of 6144."
	MaxMac = 6144
	// MaxKeyID: KeyId and the other key identifiers, "Minimum length of 1.
	// Maximum length of 2048."
	MaxKeyID = 2048
	// MaxDescription: CreateKey Description, "Minimum length of 0. Maximum
	// length of 8192."
	MaxDescription = 8192
	// MaxAliasName: CreateAlias AliasName, "Minimum length of 1. Maximum
	// length of 256."
	MaxAliasName = 256
	// MaxGrantTokens: GrantTokens, "Array Members: Minimum number of 0
	// items. Maximum number of 10 items."; each token at most 8192.
	MaxGrantTokens   = 10
	MaxGrantTokenLen = 8192
	// MaxPeerPublicKey: DeriveSharedSecret PublicKey, "Minimum length of 1.
	// Maximum length of 8192."
	MaxPeerPublicKey = 8192
	// MaxAttestationDocument: RecipientInfo AttestationDocument, "Minimum
	// length of 1. Maximum length of 262144." (The 64 KiB request body limit
	// of kmsapi.MaxRequestBody is reached first.)
	MaxAttestationDocument = 262144
	// MaxMarker: ListKeys/ListAliases Marker, "Minimum length of 1. Maximum
	// length of 1024."
	MaxMarker = 1024
	// MaxListKeysLimit / MaxListAliasesLimit: "it must be between 1 and
	// 1000" (ListKeys) and "between 1 and 100" (ListAliases); defaults 100
	// and 50.
	MaxListKeysLimit        = 1000
	DefaultListKeysLimit    = 100
	MaxListAliasesLimit     = 100
	DefaultListAliasesLimit = 50
	// MaxPolicyName: PolicyName "Minimum length of 1. Maximum length of
	// 128."; the only valid name is "default".
	MaxPolicyName = 128
)

// The validation messages follow the AWS JSON protocol form, e.g.
// "1 validation error detected: Value '2000' at 'numberOfBytes' failed to
// satisfy constraint: Member must have value less than or equal to 1024"
// (moto's KMS implementation, whose messages are checked against AWS, and
// local-kms use the same form). Members are named in lowerCamelCase as KMS
// names them; values of sensitive members (blobs) are left out, as AWS does
// ("Value at 'plaintext' failed to satisfy constraint: ...").

func validationError(msg string) *kmsapi.Error {
	return kmsapi.Errorf(kmsapi.Validation, "%s", msg)
}

func nullMember(member string) *kmsapi.Error {
	return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", member)
}

// checkBlobLen checks a sensitive blob member's length without echoing it.
func checkBlobLen(member string, b []byte, min, max int) error {
	if b == nil && min > 0 {
		return nullMember(member)
	}
	if len(b) < min {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", member, min)
	}
	if len(b) > max {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", member, max)
	}
	return nil
}

// checkStringLen checks a string member's length; the value is echoed,
// shortened, as AWS echoes non-sensitive values.
func checkStringLen(member string, s *string, min, max int) error {
	if s == nil {
		if min > 0 {
			return nullMember(member)
		}
		return nil
	}
	if len(*s) < min {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must have length greater than or equal to %d", shorten(*s), member, min)
	}
	if len(*s) > max {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must have length less than or equal to %d", shorten(*s), member, max)
	}
	return nil
}

// checkIntRange checks an optional integer member.
func checkIntRange(member string, v *int32, min, max int32) error {
	if v == nil {
		return nil
	}
	if *v < min {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value greater than or equal to %d", *v, member, min)
	}
	if *v > max {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value less than or equal to %d", *v, member, max)
	}
	return nil
}

// checkEnum checks an optional enum member against the SDK's list of valid
// values, e.g. "1 validation error detected: Value 'AES_512' at 'keySpec'
// failed to satisfy constraint: Member must satisfy enum value set:
// [AES_256, AES_128]".
func checkEnum[E ~string](member string, v E, valid []E) error {
	if v == "" || slices.Contains(valid, v) {
		return nil
	}
	names := make([]string, len(valid))
	for i, e := range valid {
		names[i] = string(e)
	}
	return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy enum value set: [%s]", shorten(string(v)), member, strings.Join(names, ", "))
}

// dryRunError is KMS's answer to a request with DryRun set that would have
// succeeded: "DryRunOperationException ... The request was rejected because
// the DryRun parameter was specified. HTTP Status Code: 412" (KMS API
// reference, Encrypt, Errors).
func dryRunError() *kmsapi.Error {
	return kmsapi.Errorf(kmsapi.DryRunOperation, "The request would have succeeded, but the DryRun option is set.")
}

// maxEchoed bounds how much of an untrusted value an error message repeats.
const maxEchoed = 128

func shorten(s string) string {
	if len(s) <= maxEchoed {
		return s
	}
	return s[:maxEchoed] + "..."
}
