package keypolicy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/suggest"
)

// kmsActions are the actions KMS authorizes: one per operation of the KMS
// API (the api_op_*.go files of aws-sdk-go-v2's service/kms), except that
// ReEncrypt is authorized as ReEncryptFrom on the source key and ReEncryptTo
// on the destination key (ReEncrypt API reference, "Required permissions"),
// plus the permission-only action SynchronizeMultiRegionKey (KMS Developer
// Guide, "AWS KMS permissions"). "kms:ReEncrypt" itself is no action.
var kmsActions = []string{
	"CancelKeyDeletion", "ConnectCustomKeyStore", "CreateAlias", "CreateCustomKeyStore",
	"CreateGrant", "CreateKey", "Decapsulate", "Decrypt", "DeleteAlias", "DeleteCustomKeyStore",
	"DeleteImportedKeyMaterial", "DeriveSharedSecret", "DescribeCustomKeyStores", "DescribeKey",
	"DisableKey", "DisableKeyRotation", "DisconnectCustomKeyStore", "EnableKey", "EnableKeyRotation",
	"Encapsulate", "Encrypt", "GenerateDataKey", "GenerateDataKeyPair",
	"GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext", "GenerateMac",
	"GenerateRandom", "GetKeyLastUsage", "GetKeyPolicy", "GetKeyRotationStatus",
	"GetParametersForImport", "GetPublicKey", "ImportKeyMaterial", "ListAliases", "ListGrants",
	"ListKeyPolicies", "ListKeyRotations", "ListKeys", "ListResourceTags", "ListRetirableGrants",
	"PutKeyPolicy", "ReEncryptFrom", "ReEncryptTo", "ReplicateKey", "RetireGrant", "RevokeGrant",
	"RotateKeyOnDemand", "ScheduleKeyDeletion", "Sign", "SynchronizeMultiRegionKey", "TagResource",
	"UntagResource", "UpdateAlias", "UpdateCustomKeyStore", "UpdateKeyDescription",
	"UpdatePrimaryRegion", "Verify", "VerifyMac",
}

// qualifiedActions is kmsActions with the "kms:" prefix, for suggestions.
var qualifiedActions = func() []string {
	out := make([]string, len(kmsActions))
	for i, a := range kmsActions {
		out[i] = "kms:" + a
	}
	return out
}()

// KnownAction reports whether action ("kms:Decrypt", any case) is a KMS
// action.
func KnownAction(action string) bool {
	for _, a := range qualifiedActions {
		if strings.EqualFold(a, action) {
			return true
		}
	}
	return false
}

// CanonicalAction returns the KMS action spelled as AWS spells it
// ("kms:decrypt" → "kms:Decrypt"), or "" for an unknown action.
func CanonicalAction(action string) string {
	for _, a := range qualifiedActions {
		if strings.EqualFold(a, action) {
			return a
		}
	}
	return ""
}

// SuggestAction returns the KMS action nearest to action, or "".
func SuggestAction(action string) string {
	return suggest.Closest(action, qualifiedActions)
}

// Condition keys whose names carry a parameter.
const (
	// KeyNitroTPMPCRPrefix followed by a PCR index is a PCR of a NitroTPM
	// attestation document (EC2 instance attestation), e.g.
	// kms:RecipientAttestation:NitroTPMPCR4 (KMS Developer Guide,
	// "Condition keys for NitroTPM").
	KeyNitroTPMPCRPrefix = "kms:RecipientAttestation:NitroTPMPCR"

	// maxEnclavePCR is the highest PCR of the Nitro Secure Module, which
	// has 32 (PCR0-PCR31; aws-nitro-enclaves-nsm-api's DescribeNSM reports
	// max_pcrs 32; PCR16 and up can be extended by the enclave).
	maxEnclavePCR = 31
	// maxNitroTPMPCR is the highest PCR of a NitroTPM: a TPM 2.0 has 24
	// (PCR0-PCR23; the EC2 User Guide's "NitroTPM attestation document
	// content" lists up to PCR23, application support).
	maxNitroTPMPCR = 23
)

// kmsConditionKeys are the condition keys KMS sets in requests (KMS
// Developer Guide, "AWS KMS condition keys", "Condition keys for Nitro
// Enclaves", "Condition keys for NitroTPM", and "Controlling access to
// grants"), besides the parameterised ones (kms:EncryptionContext:<key>,
// kms:RecipientAttestation:PCR<n>, kms:RecipientAttestation:NitroTPMPCR<n>).
var kmsConditionKeys = []string{
	"kms:BypassPolicyLockoutSafetyCheck", "kms:CallerAccount", "kms:CustomerMasterKeySpec",
	"kms:CustomerMasterKeyUsage", "kms:DataKeyPairSpec", "kms:EncryptionAlgorithm",
	"kms:EncryptionContextKeys", "kms:ExpirationModel", "kms:GrantConstraintSourceArn",
	"kms:GrantConstraintType", "kms:GrantIsForAWSResource", "kms:GrantOperations",
	"kms:GranteePrincipal", "kms:GranteeServicePrincipal", "kms:KeyAgreementAlgorithm",
	"kms:KeyOrigin", "kms:KeySpec", "kms:KeyUsage", "kms:MacAlgorithm", "kms:MessageType",
	"kms:MultiRegion", "kms:MultiRegionKeyType", "kms:PrimaryRegion", "kms:ReEncryptOnSameKey",
	"kms:RecipientAttestation:ImageSha384", "kms:ReplicaRegion", "kms:RequestAlias",
	"kms:ResourceAliases", "kms:RetiringPrincipal", "kms:RotationPeriodInDays",
	"kms:ScheduleKeyDeletionPendingWindowInDays", "kms:SigningAlgorithm", "kms:ValidTo",
	"kms:ViaService", "kms:WrappingAlgorithm", "kms:WrappingKeySpec",
}

// globalConditionKeys are the AWS global condition keys (IAM User Guide,
// "AWS global condition context keys"), which KMS supports ("AWS KMS
// supports all global condition keys", KMS Developer Guide, "Condition keys
// for AWS KMS"), and the two EC2 sets in requests signed with an instance
// role's credentials (IAM User Guide, ec2:SourceInstanceARN and
// ec2:RoleDelivery), besides the tag keys aws:PrincipalTag/<key>,
// aws:RequestTag/<key> and aws:ResourceTag/<key>.
var globalConditionKeys = []string{
	"aws:PrincipalArn", "aws:PrincipalAccount", "aws:PrincipalOrgPaths", "aws:PrincipalOrgID",
	"aws:PrincipalIsAWSService", "aws:PrincipalServiceName", "aws:PrincipalServiceNamesList",
	"aws:PrincipalType", "aws:userid", "aws:username", "aws:AssumedRoot", "aws:FederatedProvider",
	"aws:TokenIssueTime", "aws:MultiFactorAuthAge", "aws:MultiFactorAuthPresent",
	"aws:ChatbotSourceArn", "aws:Ec2InstanceSourceVpc", "aws:Ec2InstanceSourcePrivateIPv4",
	"aws:SourceIdentity", "aws:SourceIp", "aws:SourceVpc", "aws:SourceVpcArn", "aws:SourceVpce",
	"aws:VpcSourceIp", "aws:VpceAccount", "aws:VpceOrgID", "aws:VpceOrgPaths",
	"aws:ResourceAccount", "aws:ResourceOrgID", "aws:ResourceOrgPaths", "aws:TagKeys",
	"aws:CalledVia", "aws:CalledViaFirst", "aws:CalledViaLast", "aws:ViaAWSService",
	"aws:CurrentTime", "aws:EpochTime", "aws:referer", "aws:RequestedRegion",
	"aws:SecureTransport", "aws:SourceAccount", "aws:SourceArn", "aws:SourceOrgID",
	"aws:SourceOrgPaths", "aws:UserAgent",
	"ec2:SourceInstanceARN", "ec2:RoleDelivery",
}

// tagKeyPrefixes are the global condition keys that take a tag key after
// the slash.
var tagKeyPrefixes = []string{"aws:PrincipalTag/", "aws:RequestTag/", "aws:ResourceTag/"}

// knownKeyCandidates are the condition key names suggestions pick from:
// the fixed names and every PCR key.
var knownKeyCandidates = func() []string {
	out := append(append([]string(nil), kmsConditionKeys...), globalConditionKeys...)
	for i := 0; i <= maxEnclavePCR; i++ {
		out = append(out, KeyPCRPrefix+strconv.Itoa(i))
	}
	for i := 0; i <= maxNitroTPMPCR; i++ {
		out = append(out, KeyNitroTPMPCRPrefix+strconv.Itoa(i))
	}
	return out
}()

// pcrIndex parses the index after a PCR key prefix: decimal, no sign, no
// leading zero.
func pcrIndex(s string) (int, bool) {
	if s == "" || len(s) > 2 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// cutPrefixFold is strings.CutPrefix ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// CheckConditionKey says why KMS never sets the condition key key in a
// request, or "" when it is a key KMS knows. Keys are compared without case,
// as IAM does. The reason ends with a suggestion when a known key is close.
func CheckConditionKey(key string) string {
	for _, list := range [][]string{kmsConditionKeys, globalConditionKeys} {
		for _, k := range list {
			if strings.EqualFold(k, key) {
				return ""
			}
		}
	}
	if rest, ok := cutPrefixFold(key, KeyEncryptionContextPrefix); ok {
		if rest == "" {
			return "kms:EncryptionContext: needs an encryption context key after the colon, e.g. kms:EncryptionContext:tenant"
		}
		return ""
	}
	if rest, ok := cutPrefixFold(key, KeyNitroTPMPCRPrefix); ok {
		if n, ok := pcrIndex(rest); ok && n <= maxNitroTPMPCR {
			return ""
		}
		return fmt.Sprintf("%s is not a NitroTPM PCR key: a NitroTPM has PCR0 to PCR%d", quote(key), maxNitroTPMPCR)
	}
	if rest, ok := cutPrefixFold(key, KeyPCRPrefix); ok {
		if n, ok := pcrIndex(rest); ok && n <= maxEnclavePCR {
			return ""
		}
		return fmt.Sprintf("%s is not an enclave PCR key: the Nitro Secure Module has PCR0 to PCR%d", quote(key), maxEnclavePCR)
	}
	for _, p := range tagKeyPrefixes {
		if rest, ok := cutPrefixFold(key, p); ok && rest != "" {
			return ""
		}
	}
	prefix, name, _ := strings.Cut(key, ":")
	candidates := knownKeyCandidates
	// A misspelt parameterised key: suggest the right prefix with the
	// same parameter.
	if i := strings.LastIndexAny(name, ":/"); i >= 0 {
		param := name[i+1:]
		for _, p := range append([]string{KeyEncryptionContextPrefix}, tagKeyPrefixes...) {
			candidates = append(candidates, p+param)
		}
	}
	reason := fmt.Sprintf("%s is not a condition key KMS sets", quote(key))
	switch strings.ToLower(prefix) {
	case "kms", "aws":
	default:
		reason = fmt.Sprintf("%s is neither a KMS nor a global condition key, so KMS never sets it", quote(key))
	}
	return reason + suggest.DidYouMean(key, candidates)
}

// Warning is something in a policy that KMS accepts but that is probably
// not what its author meant: a misspelt action or condition key (which
// silently never matches), an Allow for everyone.
type Warning struct {
	// Statement is the statement's index; Sid its Sid, if any.
	Statement int    `json:"statement"`
	Sid       string `json:"sid,omitempty"`
	// Message says what is wrong and what it means for the decision.
	Message string `json:"message"`
}

// String gives `statement N (Sid "x"): message`.
func (w Warning) String() string {
	return statementName(StatementResult{Index: w.Statement, Sid: w.Sid}) + ": " + w.Message
}

// Warnings lists what in the policy is probably a mistake. Evaluate does
// not change because of them: KMS accepts such policies and evaluates them
// as written.
func (p *Policy) Warnings() []Warning {
	if p == nil {
		return nil
	}
	var out []Warning
	for i := range p.Statements {
		s := &p.Statements[i]
		add := func(format string, args ...any) {
			out = append(out, Warning{Statement: i, Sid: s.Sid, Message: fmt.Sprintf(format, args...)})
		}
		for _, list := range []struct {
			element string
			actions []string
		}{{"Action", s.Action}, {"NotAction", s.NotAction}} {
			for _, a := range list.actions {
				if msg := p.checkActionName(a); msg != "" {
					add("%s %s", list.element, msg)
				}
			}
		}
		for k := range s.Conditions {
			c := &s.Conditions[k]
			if reason := CheckConditionKey(c.Key); reason != "" {
				_, holds := c.eval(nil)
				effect := "never holds"
				if holds {
					effect = "always holds"
				}
				add("condition %s: %s; without it in the request the condition %s", c.Operator, reason, effect)
				continue
			}
			if isAttestationKey(c.Key) && (c.op == opStringEquals || c.op == opStringNotEquals) {
				for _, v := range c.Values {
					if strings.ToLower(v) != v {
						add("condition %s %s: KMS gives attestation values as lower-case hex, so %s with upper-case digits never matches them; use %sIgnoreCase",
							c.Operator, c.Key, c.Base, c.Base)
						break
					}
				}
			}
		}
		if msg := mixedAttestationKinds(s); msg != "" {
			add("%s", msg)
		}
		if !p.Identity && s.Effect == Allow && s.Principal != nil && s.Principal.wildcard() && len(s.Conditions) == 0 && s.Ineffective() == "" {
			add("allows everyone (Principal \"*\") without a condition: any AWS principal, in any account, whose own IAM policies allow it may use the key")
		}
	}
	return out
}

// mixedAttestationKinds says why an Allow statement that requires both an
// enclave's attestation keys (kms:RecipientAttestation:ImageSha384, :PCR<n>)
// and an instance's (:NitroTPMPCR<n>) never applies, or "". A Recipient
// carries one document, of one kind, and KMS sets only that kind's keys
// (DocumentContext), so conditions that need a value of each never hold
// together. Negated operators, IfExists and ForAllValues hold without the
// key, so only the other operators count.
func mixedAttestationKinds(s *Statement) string {
	if s.Effect != Allow {
		return ""
	}
	var enclave, tpm string
	for i := range s.Conditions {
		c := &s.Conditions[i]
		if c.op.negated() || c.op == opNull || c.IfExists || c.Qualifier == ForAllValues {
			continue
		}
		switch attestationKind(c.Key) {
		case attestation.KindEnclave:
			if enclave == "" {
				enclave = c.Key
			}
		case attestation.KindNitroTPM:
			if tpm == "" {
				tpm = c.Key
			}
		}
	}
	if enclave == "" || tpm == "" {
		return ""
	}
	return fmt.Sprintf("its conditions need %s, a Nitro Enclave's, and %s, an EC2 instance's NitroTPM's: a request carries one attestation document, of one kind, so they never hold together and the statement never applies; write one statement per kind",
		quote(enclave), quote(tpm))
}

// attestationKind says which kind of attestation document sets key: an
// enclave's (ImageSha384, PCR<n>) or a NitroTPM's (NitroTPMPCR<n>), or 0.
func attestationKind(key string) attestation.Kind {
	if _, ok := cutPrefixFold(key, KeyNitroTPMPCRPrefix); ok {
		return attestation.KindNitroTPM
	}
	if _, ok := cutPrefixFold(key, KeyPCRPrefix); ok || strings.EqualFold(key, KeyImageSha384) {
		return attestation.KindEnclave
	}
	return 0
}

func isAttestationKey(key string) bool {
	_, ok := cutPrefixFold(key, "kms:RecipientAttestation:")
	return ok
}

// checkActionName says why an Action entry matches no KMS action, or "".
func (p *Policy) checkActionName(a string) string {
	if a == "*" {
		return ""
	}
	service, _, _ := strings.Cut(a, ":")
	if !strings.EqualFold(service, "kms") {
		if p.Identity {
			return "" // identity-based policies cover every service
		}
		return fmt.Sprintf("%s is not a KMS action; a key policy controls only KMS actions, so it never applies", quote(a))
	}
	if strings.ContainsAny(a, "*?") {
		for _, k := range qualifiedActions {
			if actionMatch(a, k) {
				return ""
			}
		}
		return fmt.Sprintf("%s matches no KMS action, so it never applies", quote(a))
	}
	if KnownAction(a) {
		return ""
	}
	hint := suggest.DidYouMean(a, qualifiedActions)
	if strings.EqualFold(a, "kms:ReEncrypt") {
		hint = ` (did you mean "kms:ReEncrypt*"? ReEncrypt is authorized as kms:ReEncryptFrom and kms:ReEncryptTo)`
	}
	return fmt.Sprintf("%s is not a KMS action, so it never applies%s", quote(a), hint)
}
