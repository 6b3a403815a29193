package keypolicy

import (
	"encoding/hex"
	"slices"
	"strconv"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// Condition keys KMS fills in a request context and that devkms supports.
const (
	// KeyImageSha384 is the enclave image digest from the Recipient
	// attestation document: "The ImageSha384 value corresponds to PCR0 in
	// the attestation document" (KMS Developer Guide, "Condition keys for
	// Nitro Enclaves").
	KeyImageSha384 = "kms:RecipientAttestation:ImageSha384"
	// KeyPCRPrefix followed by the PCR index is a PCR of the Recipient
	// attestation document, e.g. kms:RecipientAttestation:PCR0.
	KeyPCRPrefix = "kms:RecipientAttestation:PCR"
	// KeyEncryptionContextPrefix followed by an encryption context key is
	// that key's value, e.g. kms:EncryptionContext:tenant.
	KeyEncryptionContextPrefix = "kms:EncryptionContext:"
	// KeyEncryptionContextKeys lists the keys of the encryption context (a
	// multivalued key, for ForAnyValue / ForAllValues).
	KeyEncryptionContextKeys = "kms:EncryptionContextKeys"
	// KeyCallerAccount is the caller's account ID.
	KeyCallerAccount = "kms:CallerAccount"
	// KeyPrincipalArn is the caller's ARN; for an assumed-role session it is
	// the ARN of the role (IAM User Guide, "AWS global condition context
	// keys", aws:PrincipalArn).
	KeyPrincipalArn = "aws:PrincipalArn"
	// KeyPrincipalAccount is the caller's account ID.
	KeyPrincipalAccount = "aws:PrincipalAccount"
)

// AttestationContext returns the condition keys KMS derives from a verified
// Recipient attestation document with the given PCRs (index → value):
// kms:RecipientAttestation:PCR<n> for each PCR and
// kms:RecipientAttestation:ImageSha384 equal to PCR0, all as lowercase hex.
// KMS documents attestation PCR values as "a lower-case hexadecimal string"
// (KMS Developer Guide, "Condition keys for NitroTPM"), which is why its own
// examples compare them with StringEqualsIgnoreCase. Negative indices are
// ignored.
func AttestationContext(pcrs map[int][]byte) map[string][]string {
	out := make(map[string][]string, len(pcrs)+1)
	for n, v := range pcrs {
		if n < 0 {
			continue
		}
		h := hex.EncodeToString(v)
		out[KeyPCRPrefix+strconv.Itoa(n)] = []string{h}
		if n == 0 {
			out[KeyImageSha384] = []string{h}
		}
	}
	return out
}

// NitroTPMAttestationContext returns the condition keys KMS derives from a
// verified NitroTPM attestation document (an EC2 instance's, not an
// enclave's) with the given PCRs (index → value):
// kms:RecipientAttestation:NitroTPMPCR<n>, as lower-case hex ("The PCR value
// must be a lower-case hexadecimal string of up to 96 bytes", KMS Developer
// Guide, "Condition keys for NitroTPM"). Negative indices are ignored.
func NitroTPMAttestationContext(pcrs map[int][]byte) map[string][]string {
	out := make(map[string][]string, len(pcrs))
	for n, v := range pcrs {
		if n < 0 {
			continue
		}
		out[KeyNitroTPMPCRPrefix+strconv.Itoa(n)] = []string{hex.EncodeToString(v)}
	}
	return out
}

// DocumentContext returns the condition keys KMS derives from a verified
// Recipient attestation document, by its kind: an enclave's document gives
// kms:RecipientAttestation:ImageSha384 and :PCR<n> from its pcrs
// (AttestationContext), an EC2 instance's NitroTPM document
// kms:RecipientAttestation:NitroTPMPCR<n> from its nitrotpm_pcrs
// (NitroTPMAttestationContext), and neither gives the other's keys. KMS
// documents each set as "effective only when the Recipient parameter in the
// request specifies a signed attestation document" from a Nitro enclave,
// respectively from NitroTPM (KMS Developer Guide, "Condition keys for Nitro
// Enclaves" and "Condition keys for NitroTPM"): an enclave's PCR4 (the
// parent instance's ID) must never pass for an instance's NitroTPMPCR4
// (its boot manager code), nor an instance's PCR0 for an enclave image's
// ImageSha384. A nil document, or one of no known kind, gives no keys, so
// every attestation condition sees them as absent.
func DocumentContext(doc *attestation.Document) map[string][]string {
	if doc == nil {
		return map[string][]string{}
	}
	switch doc.Kind {
	case attestation.KindEnclave:
		return AttestationContext(doc.PCRs)
	case attestation.KindNitroTPM:
		return NitroTPMAttestationContext(doc.NitroTPMPCRs)
	}
	return map[string][]string{}
}

// EncryptionContext returns the condition keys KMS derives from a request's
// encryption context: kms:EncryptionContext:<k> = v for each pair and
// kms:EncryptionContextKeys = the keys, sorted (KMS Developer Guide, "AWS KMS
// condition keys", kms:EncryptionContext:context-key and
// kms:EncryptionContextKeys). An empty encryption context yields no keys, so
// a ForAllValues condition on kms:EncryptionContextKeys holds for it, as in
// KMS.
func EncryptionContext(ec map[string]string) map[string][]string {
	out := make(map[string][]string, len(ec)+1)
	if len(ec) == 0 {
		return out
	}
	keys := make([]string, 0, len(ec))
	for k, v := range ec {
		out[KeyEncryptionContextPrefix+k] = []string{v}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out[KeyEncryptionContextKeys] = keys
	return out
}

// CallerContext returns the condition keys that describe the caller:
// kms:CallerAccount, aws:PrincipalAccount and aws:PrincipalArn. For an
// assumed-role session, aws:PrincipalArn is the role's ARN; a session ARN
// does not carry the role's path, so the ARN returned is
// arn:PARTITION:iam::ACCOUNT:role/NAME, and a caller that knows the role's
// path should overwrite it. A bare account ID is the account root in the
// aws partition. A
// principal that is neither an IAM/STS ARN nor an account ID (a service, an
// anonymous caller) yields an empty map: conditions on these keys then see
// them as absent.
func CallerContext(principalARN string) map[string][]string {
	out := make(map[string][]string, 3)
	c := parseCaller(principalARN)
	arn := c.raw
	switch c.kind {
	case kindAccount:
		partition := c.partition
		if partition == "" {
			partition = "aws"
		}
		arn = "arn:" + partition + ":iam::" + c.account + ":root"
	case kindAssumedRole:
		arn = "arn:" + c.partition + ":iam::" + c.account + ":role/" + c.roleName
	case kindUser, kindRole, kindFederatedUser:
	default:
		return out
	}
	out[KeyCallerAccount] = []string{c.account}
	out[KeyPrincipalAccount] = []string{c.account}
	out[KeyPrincipalArn] = []string{arn}
	return out
}

// MergeContext returns the union of request contexts; values of a key that
// appears in several are concatenated in argument order. It is how a caller
// combines AttestationContext, EncryptionContext and CallerContext into one
// Request.Context.
func MergeContext(ctxs ...map[string][]string) map[string][]string {
	n := 0
	for _, c := range ctxs {
		n += len(c)
	}
	out := make(map[string][]string, n)
	for _, c := range ctxs {
		for k, v := range c {
			if prev, ok := out[k]; ok {
				merged := make([]string, 0, len(prev)+len(v))
				out[k] = append(append(merged, prev...), v...)
				continue
			}
			out[k] = slices.Clone(v)
		}
	}
	return out
}
