package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/keypolicy"
)

// attestedActions are the KMS operations on a key that accept a Recipient
// and return their secret encrypted to the enclave: Decrypt,
// DeriveSharedSecret, GenerateDataKey and GenerateDataKeyPair ("How AWS
// Nitro Enclaves uses AWS KMS", KMS Developer Guide). GenerateRandom takes a
// Recipient too but names no key, so no key policy applies to it (the
// role's IAM policy must allow kms:GenerateRandom).
var attestedActions = []string{
	"kms:Decrypt",
	"kms:GenerateDataKey",
	"kms:GenerateDataKeyPair",
	"kms:DeriveSharedSecret",
}

// roleEncryptActions are what --role-encrypt adds for the role: operations
// that return no secret (only ciphertext), so they need no attestation, and
// that cannot carry one anyway (Encrypt and GenerateDataKeyWithoutPlaintext
// take no Recipient).
var roleEncryptActions = []string{
	"kms:Encrypt",
	"kms:GenerateDataKeyWithoutPlaintext",
}

// adminActions are what the account's administrators may do with the key,
// through their IAM policies: manage it, read its metadata and policy, and
// encrypt to it, but never use it for an operation that returns a secret
// (those are denied to everyone without the enclave below), never grant it
// to anyone (CreateGrant is denied) and never move an alias off it. They
// are listed one by one instead of "kms:*" so that an action AWS adds later
// is not granted by default. Encrypt, GenerateDataKeyWithoutPlaintext and
// ReEncryptTo return only ciphertext: an administrator can put secrets under
// the key for the enclave, not take them out.
var adminActions = []string{
	"kms:CancelKeyDeletion",
	"kms:CreateAlias",
	"kms:DescribeKey",
	"kms:DisableKey",
	"kms:DisableKeyRotation",
	"kms:EnableKey",
	"kms:EnableKeyRotation",
	"kms:Encrypt",
	"kms:GenerateDataKeyWithoutPlaintext",
	"kms:GetKeyPolicy",
	"kms:GetKeyRotationStatus",
	"kms:GetPublicKey",
	"kms:ListGrants",
	"kms:ListKeyPolicies",
	"kms:ListKeyRotations",
	"kms:ListResourceTags",
	"kms:PutKeyPolicy",
	"kms:ReEncryptTo",
	"kms:RevokeGrant",
	"kms:RotateKeyOnDemand",
	"kms:ScheduleKeyDeletion",
	"kms:TagResource",
	"kms:UntagResource",
	"kms:UpdateKeyDescription",
}

// bypassActions are the actions that would expose the key's secrets, or
// hand the key to someone else, without an attestation; the generated policy
// denies them to every principal, unconditionally:
//
//   - kms:ReEncryptFrom: ReEncrypt decrypts inside KMS and re-encrypts under
//     a destination key the caller chooses, which may be one the caller can
//     decrypt; it takes no Recipient, so it can never be attested.
//   - kms:CreateGrant: a grant lets its grantee use the key "when
//     authorizing access to a KMS key, grants are considered along with key
//     policies and IAM policies" (KMS Developer Guide, "Grants in AWS KMS"),
//     i.e. without any Allow in the key policy. The Deny statements below
//     still override a grant (an explicit deny anywhere wins), so a grant
//     could not decrypt without attestation; denying CreateGrant keeps
//     ListGrants empty and closes the path for any operation a later policy
//     edit forgets to deny. Allowing it only with kms:GrantIsForAWSResource
//     would still let any AWS service the caller can drive (EBS, RDS, ...)
//     hold a grant; no service needs one on this key.
//   - kms:ImportKeyMaterial: for a key with imported material (Origin
//     EXTERNAL), material the caller knows would make every later
//     ciphertext decryptable outside KMS.
//   - kms:ReplicateKey: a multi-Region replica shares the key material and
//     gets its own key policy from the ReplicateKey request (ReplicateKey API
//     reference, Policy), which the caller writes.
var bypassActions = []string{
	"kms:CreateGrant",
	"kms:ImportKeyMaterial",
	"kms:ReEncryptFrom",
	"kms:ReplicateKey",
}

// aliasActions move or remove an alias that points at the key. Apps name
// keys by alias; whoever re-points "alias/app" to a key they control
// receives everything the app encrypts or generates through the alias from
// then on. UpdateAlias and DeleteAlias need permission "on the current KMS
// key (key policy)" (UpdateAlias API reference, Required permissions; KMS
// Developer Guide, "Controlling access to aliases"), so denying them here
// keeps every alias of this key on it while the key exists. Deleting the
// key deletes its aliases ("including all aliases that refer to it",
// ScheduleKeyDeletion API reference), after which the name can be created
// for another key: kmsproxyd's policy names keys by ARN (kms.keys) for
// that. CreateAlias stays allowed: a new alias that points here gives
// nobody anything.
var aliasActions = []string{
	"kms:DeleteAlias",
	"kms:UpdateAlias",
}

// keyPolicy is a KMS key policy document in the member order AWS writes.
type keyPolicy struct {
	Version   string            `json:"Version"`
	ID        string            `json:"Id,omitempty"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Sid       string                       `json:"Sid"`
	Effect    string                       `json:"Effect"`
	Principal any                          `json:"Principal"`
	Action    any                          `json:"Action,omitempty"`
	NotAction any                          `json:"NotAction,omitempty"`
	Resource  string                       `json:"Resource"`
	Condition map[string]map[string]string `json:"Condition,omitempty"`
}

// roleARN is a parsed IAM role ARN.
type roleARN struct {
	partition, account, name string
}

// parseRoleARN parses arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME.
func parseRoleARN(s string) (roleARN, error) {
	parts := strings.SplitN(s, ":", 6)
	bad := fmt.Errorf("--role %q: want an IAM role ARN, arn:aws:iam::123456789012:role/NAME", s)
	if len(parts) != 6 || parts[0] != "arn" || parts[1] == "" || parts[2] != "iam" || parts[3] != "" {
		if len(parts) == 6 && parts[2] == "sts" {
			return roleARN{}, fmt.Errorf("%w (%q is a session; name its role)", bad, s)
		}
		return roleARN{}, bad
	}
	if !isAccountID(parts[4]) {
		return roleARN{}, fmt.Errorf("--role %q: account %q is not 12 digits", s, parts[4])
	}
	res, ok := strings.CutPrefix(parts[5], "role/")
	name := res[strings.LastIndex(res, "/")+1:]
	if !ok || name == "" {
		return roleARN{}, bad
	}
	return roleARN{partition: parts[1], account: parts[4], name: name}, nil
}

// isAccountID reports whether s is a 12-digit AWS account ID ("A 12-digit
// number, such as 123456789012", AWS Account Management reference guide).
func isAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// regionPartition returns the ARN partition of an AWS region: aws-cn for
// China (cn-*), aws-us-gov for GovCloud (us-gov-*), aws otherwise (AWS
// General Reference, "Amazon Resource Names": partitions).
func regionPartition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// parsePCRList parses --pcrs "0,1,2": PCR numbers below count.
func parsePCRList(s string, count int) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(p)), "PCR")
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n >= count {
			return nil, usageErrorf("--pcrs %q: want a comma-separated list of PCR numbers from 0 to %d", s, count-1)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out, nil
}

// policyOptions are the choices of policy generate.
type policyOptions struct {
	// kind is the attestation the key is bound to: an enclave's or an
	// instance's NitroTPM's.
	kind                     attestation.Kind
	role, account, partition string
	// lock leaves out every way to change the key policy.
	lock bool
	// roleEncrypt lets the role call roleEncryptActions.
	roleEncrypt bool
}

// policyNames are the words of a generated policy that differ by kind.
type policyNames struct {
	id, allowUse, roleEncrypt, roleElse, paths string
}

var kindNames = map[attestation.Kind]policyNames{
	attestation.KindEnclave: {
		id:          "kmsproxy-enclave-key-policy",
		allowUse:    "AllowAttestedEnclaveUse",
		roleEncrypt: "AllowEnclaveRoleToEncrypt",
		roleElse:    "DenyEnclaveRoleEverythingElse",
		paths:       "DenyEveryonePathsAroundTheEnclave",
	},
	attestation.KindNitroTPM: {
		id:          "kmsproxy-instance-key-policy",
		allowUse:    "AllowAttestedInstanceUse",
		roleEncrypt: "AllowInstanceRoleToEncrypt",
		roleElse:    "DenyInstanceRoleEverythingElse",
		paths:       "DenyEveryonePathsAroundTheInstance",
	},
}

// attestationValues returns the condition keys a key policy of the kind
// requires, with their values in lower-case hex (KMS's form, "a lower-case
// hexadecimal string", KMS Developer Guide, "Condition keys for
// NitroTPM"), and the order of the Deny statements: for an enclave,
// kms:RecipientAttestation:ImageSha384 (PCR0) and :PCR<n> for each other
// chosen PCR (PCR0 is ImageSha384: one Deny covers both); for an
// instance, kms:RecipientAttestation:NitroTPMPCR<n> for each chosen PCR.
func attestationValues(kind attestation.Kind, pcrs map[int][]byte, chosen []int) (map[string]string, []string) {
	values := map[string]string{}
	var order []string
	if kind == attestation.KindNitroTPM {
		for _, i := range chosen {
			k := keypolicy.KeyNitroTPMPCRPrefix + strconv.Itoa(i)
			values[k] = hex.EncodeToString(pcrs[i])
			order = append(order, k)
		}
		return values, order
	}
	values[keypolicy.KeyImageSha384] = hex.EncodeToString(pcrs[0])
	order = append(order, keypolicy.KeyImageSha384)
	for _, i := range chosen {
		k := keypolicy.KeyPCRPrefix + strconv.Itoa(i)
		values[k] = hex.EncodeToString(pcrs[i])
		if i != 0 {
			order = append(order, k)
		}
	}
	return values, order
}

// generatePolicy builds the key policy for an enclave image, or for the
// boot of an instance that attests with its NitroTPM (o.kind). No
// principal, the account's administrators included, may use an operation
// that returns a secret without an attestation document of that kind whose
// measured values match (ImageSha384 and the chosen PCRs of an enclave,
// the chosen NitroTPM PCRs of an instance); the role may do nothing else at
// all; nobody may grant the key, re-encrypt out of it, import material
// into it, replicate it or move its aliases; and the administrators keep
// managing it (changing its policy too, unless lock). docs/security.md
// explains each statement and the threat it answers.
//
// How KMS combines these (KMS Developer Guide, "Key policies in AWS KMS"
// and "Default key policy"): a statement that names the account root
// "gives the AWS account ... permission to use IAM policies to allow access",
// so what it lists is what the account's IAM policies may grant; a
// statement that names the role allows it directly; and "No AWS principal
// ... has any permissions to a KMS key unless they are explicitly allowed,
// and never denied, in a key policy, IAM policy, or grant", so every Deny
// here beats any IAM policy and any grant.
func generatePolicy(pcrs map[int][]byte, chosen []int, o policyOptions) keyPolicy {
	if o.kind == 0 {
		o.kind = attestation.KindEnclave
	}
	names := kindNames[o.kind]
	values, denyKeys := attestationValues(o.kind, pcrs, chosen)
	admin := adminActions
	if o.lock {
		admin = slices.DeleteFunc(slices.Clone(adminActions), func(a string) bool { return a == "kms:PutKeyPolicy" })
	}
	roleMay := attestedActions
	if o.roleEncrypt {
		roleMay = append(slices.Clone(attestedActions), roleEncryptActions...)
	}
	role := map[string]string{"AWS": o.role}
	p := keyPolicy{
		Version: keypolicy.Version2012,
		ID:      names.id,
		Statement: []policyStatement{
			{
				Sid:       "AllowKeyAdministrationByAccountAdministrators",
				Effect:    "Allow",
				Principal: map[string]string{"AWS": fmt.Sprintf("arn:%s:iam::%s:root", o.partition, o.account)},
				Action:    admin,
				Resource:  "*",
			},
			{
				Sid:       names.allowUse,
				Effect:    "Allow",
				Principal: role,
				Action:    attestedActions,
				Resource:  "*",
				Condition: map[string]map[string]string{"StringEqualsIgnoreCase": values},
			},
		},
	}
	if o.roleEncrypt {
		p.Statement = append(p.Statement, policyStatement{
			Sid:       names.roleEncrypt,
			Effect:    "Allow",
			Principal: role,
			Action:    roleEncryptActions,
			Resource:  "*",
		})
	}
	// The role is the parent instance's (or the attested instance's own):
	// whatever its IAM policies say (kms:* included), it may do nothing
	// with this key but what the statements above allow.
	p.Statement = append(p.Statement, policyStatement{
		Sid:       names.roleElse,
		Effect:    "Deny",
		Principal: role,
		NotAction: roleMay,
		Resource:  "*",
	})
	// One Deny per measured value, for every principal: the keys of one
	// condition are ANDed, and a Deny must fire when any single value
	// differs. StringNotEqualsIgnoreCase holds when the key is absent, so a
	// call without attestation, or with a document of the other kind (which
	// sets none of these keys), is refused too.
	for _, k := range denyKeys {
		name := strings.TrimPrefix(k, "kms:RecipientAttestation:")
		p.Statement = append(p.Statement, policyStatement{
			Sid:       "DenyEveryoneUnless" + name + "Matches",
			Effect:    "Deny",
			Principal: "*",
			Action:    attestedActions,
			Resource:  "*",
			Condition: map[string]map[string]string{"StringNotEqualsIgnoreCase": {k: values[k]}},
		})
	}
	p.Statement = append(p.Statement,
		policyStatement{
			Sid:       names.paths,
			Effect:    "Deny",
			Principal: "*",
			Action:    bypassActions,
			Resource:  "*",
		},
		policyStatement{
			Sid:       "DenyEveryoneAliasChanges",
			Effect:    "Deny",
			Principal: "*",
			Action:    aliasActions,
			Resource:  "*",
		})
	if o.lock {
		// Nothing allows PutKeyPolicy any more; the Deny states the intent
		// and would still hold if a later edit could add an Allow.
		p.Statement = append(p.Statement, policyStatement{
			Sid:       "DenyEveryoneKeyPolicyChanges",
			Effect:    "Deny",
			Principal: "*",
			Action:    "kms:PutKeyPolicy",
			Resource:  "*",
		})
	}
	return p
}

// bootPCRs are the NitroTPM PCRs that measure what an instance boots: PCR4
// the boot manager code (for an Attestable AMI, the Unified Kernel Image)
// and PCR7 the Secure Boot policy ("PCR4 and PCR12 can be used to validate
// with standard boot, and PCR7 can be used to validate with Secure Boot",
// EC2 User Guide, "NitroTPM Attestation Document contents"). A NitroTPM key
// policy must require one of them with a measured value: PCR12 is only the
// command line passed from outside the image, and PCR0 and PCR1 "will
// always contain constant values". The other PCRs may be required at their
// reset value: nitro-tpm-pcr-compute prints PCR12 as all zeros, the value
// of a boot whose command line nothing outside the Unified Kernel Image
// changed (aws/NitroTPM-Tools, nitro-tpm-pcr-compute/src/main.rs: "Add
// PCR12 with static zero value"), and a policy requiring it so refuses an
// instance booted with another command line.
var bootPCRs = []int{4, 7}

func runPolicyGenerate(ctx context.Context, e *env, args []string) error {
	f := newFlags("policy generate", "(--measurements FILE | --pcr N=HEX ...) --role ARN [--kind nitrotpm] [flags]",
		`Write a KMS key policy (JSON, on stdout) that binds a key to an enclave
image, from the measurements "nitro-cli build-enclave" prints, or with
--kind nitrotpm to the boot of an EC2 instance that attests with its
NitroTPM (an Attestable AMI), from what "nitro-tpm-pcr-compute" prints.
Nobody can get a secret out of the key without that attestation:

  - the account's administrators (principals whose IAM policies allow it)
    may manage the key and encrypt to it, but not decrypt with it;
  - the role (the parent instance's role, or the attested instance's own,
    which signs kmsproxyd's calls) may call Decrypt, GenerateDataKey,
    GenerateDataKeyPair and DeriveSharedSecret only with an attestation
    document whose values match, and nothing else: an enclave's
    ImageSha384 (PCR0) and chosen PCRs (kms:RecipientAttestation:PCR<n>),
    or an instance's chosen NitroTPM PCRs
    (kms:RecipientAttestation:NitroTPMPCR<n>; PCR4 and PCR12 for a
    standard boot, PCR7 for Secure Boot);
  - Deny statements refuse those operations to every principal whose request
    carries no such attestation (a document of the other kind carries
    none), and refuse everyone CreateGrant, ReEncryptFrom,
    ImportKeyMaterial, ReplicateKey, UpdateAlias and DeleteAlias, so no IAM
    policy, grant or alias can route around the attestation.

PCR values can also be given, or replaced, one by one with --pcr. An
enclave PCR of all zeros (a debug-mode enclave, which any image matches)
is refused; an instance's policy must require PCR4 or PCR7 with a measured
value, and may require other PCRs at their reset value (nitro-tpm-pcr-compute
prints PCR12 as zeros: nothing outside the image changed the boot).

The administrators can still replace the policy. With --lock they cannot:
nobody can ever change the policy again (not even AWS support); install it
with "aws kms put-key-policy --bypass-policy-lockout-safety-check".
docs/security.md explains every statement.

Check it with "kmsproxyctl policy check" before "aws kms put-key-policy".`,
		`  nitro-cli build-enclave --docker-uri kmsproxyd:latest --output-file kmsproxyd.eif > measurements.json
  kmsproxyctl policy generate --measurements measurements.json --role arn:aws:iam::111122223333:role/enclave-parent > key-policy.json
  aws kms put-key-policy --key-id $KEY --policy-name default --policy file://key-policy.json
  nitro-tpm-pcr-compute --image kmsproxy-instance.efi > instance-measurements.json
  kmsproxyctl policy generate --kind nitrotpm --measurements instance-measurements.json --pcrs 4,12 \
      --role arn:aws:iam::111122223333:role/kmsproxy-instance > instance-key-policy.json`)
	var (
		measurements, role, account, pcrList, region string
		lock, roleEncrypt                            bool
		pcrValues                                    stringsFlag
		kind                                         = newKindFlag()
	)
	f.Var(&kind, "kind", "what the key is bound to, `KIND`: enclave (a Nitro Enclave image) or nitrotpm (the boot of an EC2 instance, its NitroTPM PCRs)")
	f.StringVar(&measurements, "measurements", "", "measurements JSON `FILE`: nitro-cli's (build-enclave or describe-eif) for an enclave, nitro-tpm-pcr-compute's with --kind nitrotpm")
	f.Var(&pcrValues, "pcr", "add or replace a measured PCR, `N=HEX` (repeatable; e.g. an instance's PCR4 and PCR12 without a measurements file)")
	f.StringVar(&role, "role", "", "IAM role `ARN` whose credentials kmsproxyd uses (the parent instance's role; with --kind nitrotpm the instance's)")
	f.StringVar(&account, "account", "", "account `ID` whose administrators manage the key (default: the role's account)")
	f.StringVar(&pcrList, "pcrs", "", "PCRs to require (an enclave's besides ImageSha384), as `LIST` like 0,1,2 (default: every PCR measured)")
	f.StringVar(&region, "region", "", "the key's `REGION`, checked against the role's partition (cn-* is aws-cn, us-gov-* aws-us-gov)")
	f.BoolVar(&lock, "lock", false, "leave no way to change the key policy, for anyone, ever (install with --bypass-policy-lockout-safety-check)")
	f.BoolVar(&roleEncrypt, "role-encrypt", false, "also let the role call Encrypt and GenerateDataKeyWithoutPlaintext without attestation (whoever holds its credentials can then make ciphertexts kmsproxyd accepts)")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	k := kind.value()
	switch {
	case measurements == "" && len(pcrValues) == 0:
		return f.usageError("missing --measurements (or --pcr)")
	case role == "":
		return f.usageError("missing --role")
	}
	r, err := parseRoleARN(role)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if account == "" {
		account = r.account
	} else if !isAccountID(account) {
		return f.usageError("--account %q: want a 12-digit account ID", account)
	}
	if region != "" && regionPartition(region) != r.partition {
		return f.usageError("--region %s is in partition %s but the role is in %s", region, regionPartition(region), r.partition)
	}
	overrides, err := parsePCRExpectations("pcr", pcrValues)
	if err != nil {
		return err
	}
	// source names where the PCRs come from in messages; file is the
	// measurements file, or the --pcr values.
	source, file, has := "the --pcr values", "the --pcr values", "have"
	pcrs := map[int][]byte{}
	if measurements != "" {
		source, file, has = "--measurements "+measurements, measurements, "has"
		if pcrs, err = loadMeasurements(k, measurements); err != nil {
			return err
		}
	}
	for _, o := range overrides {
		if o.index >= k.PCRCount() {
			return f.usageError("--pcr %d: %s has PCR0 to PCR%d", o.index, kindPCRsPhrase(k), k.PCRCount()-1)
		}
		pcrs[o.index] = o.value
	}
	if _, ok := pcrs[0]; !ok && k == attestation.KindEnclave {
		hint := "nitro-cli build-enclave measures PCR0, the whole enclave image"
		if measurements == "" {
			hint = "give the image's measurements with --measurements, or its PCR0 with --pcr 0=HEX; for an instance that attests with its NitroTPM, add --kind nitrotpm"
		}
		return withHint(fmt.Errorf("%s %s no PCR0, the image measurement (ImageSha384)", source, has), "%s", hint)
	}
	var chosen []int
	if pcrList == "" {
		for i := range pcrs {
			chosen = append(chosen, i)
		}
		sort.Ints(chosen)
	} else if chosen, err = parsePCRList(pcrList, k.PCRCount()); err != nil {
		return err
	}
	for _, i := range chosen {
		if _, ok := pcrs[i]; !ok {
			hint := "nitro-cli measures PCR0, PCR1, PCR2 (and PCR8 for a signed image); PCR3 and PCR4 depend on the instance, not the image: give them with --pcr N=HEX"
			if k == attestation.KindNitroTPM {
				hint = "nitro-tpm-pcr-compute computes PCR4, PCR7 and PCR12; give others with --pcr N=HEX"
			}
			return withHint(fmt.Errorf("--pcrs names PCR%d, which is not in %s", i, file), "%s", hint)
		}
	}
	for _, i := range chosen {
		switch {
		case !atResetValue(k, i, pcrs[i]):
		case k == attestation.KindEnclave:
			return withHint(fmt.Errorf("%s %s PCR%d all zeros, the value of a debug-mode enclave", source, has, i),
				"any enclave started with --debug-mode, running anything, would match; measure the release image (nitro-cli build-enclave) instead")
		case slices.Contains(bootPCRs, i):
			return withHint(fmt.Errorf("%s %s NitroTPM PCR%d at its reset value (%x…): nothing was measured into it, which no boot leaves", source, has, i, pcrs[i][:4]),
				"measure the Attestable AMI's boot with nitro-tpm-pcr-compute, or leave PCR%d out with --pcrs", i)
		}
	}
	if k == attestation.KindNitroTPM && !slices.ContainsFunc(chosen, func(i int) bool { return slices.Contains(bootPCRs, i) }) {
		return withHint(fmt.Errorf("the policy would require only NitroTPM PCR%s, none of which measures the boot", joinInts(chosen, ", PCR")),
			"require PCR4 (the Unified Kernel Image) with PCR12 for a standard boot, or PCR7 for Secure Boot: what nitro-tpm-pcr-compute prints for the Attestable AMI")
	}
	return printJSON(e.stdout, generatePolicy(pcrs, chosen, policyOptions{
		kind: k, role: role, account: account, partition: r.partition, lock: lock, roleEncrypt: roleEncrypt,
	}))
}

// kindPCRsPhrase names the PCRs of a kind's documents.
func kindPCRsPhrase(k attestation.Kind) string {
	if k == attestation.KindNitroTPM {
		return "an instance's NitroTPM"
	}
	return "an enclave's attestation"
}

// joinInts joins numbers with sep.
func joinInts(ns []int, sep string) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, sep)
}

// Exit statuses of policy check.
const (
	checkAllowed     = 0
	checkDenied      = 1
	checkConditional = 3 // allowed only if an IAM policy the check did not see allows it
)

func runPolicyCheck(ctx context.Context, e *env, args []string) error {
	f := newFlags("policy check", "--key-policy FILE (--measurements FILE | --document FILE | --pcr N=HEX ... | --unattested) --principal ARN --action ACTION [flags]",
		`Evaluate a request the way KMS does (the evaluator devkms uses) and print
ALLOWED or DENIED with the statement and condition that decided: the
explanation KMS's AccessDeniedException does not give. The request's
attestation comes from measurements (nitro-cli's for an enclave image, or
with --kind nitrotpm nitro-tpm-pcr-compute's for an instance's boot), from
an attestation document (an enclave's or an instance's NitroTPM's; its PCRs,
verified when --verify or --root is given), from --pcr values alone, or is
absent (--unattested: a direct call, not through the enclave). An enclave's
PCRs are the request's kms:RecipientAttestation:ImageSha384 and PCR<n>, an
instance's kms:RecipientAttestation:NitroTPMPCR<n>, as in KMS.

A key policy statement that names the account (its root) does not allow
the account's principals by itself: it lets their IAM policies decide. Give
the principal's identity-based policies with --iam-policy to evaluate them
too; without them such a request is "ALLOWED only if an IAM policy also
allows it". An explicit Deny anywhere wins.

Exit status: 0 allowed, 1 denied, 3 allowed only if an IAM policy also
allows it (and no --iam-policy was given), 2 usage error. Warnings about
actions and condition keys KMS does not know (which silently never match)
go to stderr.`,
		`  kmsproxyctl policy check --key-policy key-policy.json --measurements measurements.json \
      --principal arn:aws:iam::111122223333:role/enclave-parent --action kms:Decrypt
  kmsproxyctl policy check --key-policy key-policy.json --document doc.cbor --verify \
      --principal arn:aws:sts::111122223333:assumed-role/enclave-parent/i-0abc --action kms:GenerateDataKey
  kmsproxyctl policy check --key-policy key-policy.json --unattested --iam-policy admin-policy.json \
      --principal arn:aws:iam::111122223333:role/admin --action kms:Decrypt   # expect DENIED
  kmsproxyctl policy check --key-policy instance-key-policy.json --kind nitrotpm --measurements instance-measurements.json \
      --principal arn:aws:iam::111122223333:role/kmsproxy-instance --action kms:Decrypt`)
	var (
		policyFile, measurements, docFile, principal, action, keyARN string
		unattested, verify, asJSON                                   bool
		roots, extraPCRs, iamFiles                                   stringsFlag
		ec, extraContext                                             contextFlag
		at                                                           atFlag
		kind                                                         = newKindFlag()
	)
	f.StringVar(&policyFile, "key-policy", "", "key policy JSON `FILE`")
	f.Var(&kind, "kind", "the `KIND` of attestation --measurements and --pcr describe: enclave (a Nitro Enclave image) or nitrotpm (an EC2 instance's NitroTPM); a --document says its own")
	f.StringVar(&measurements, "measurements", "", "measurements JSON `FILE` whose PCRs the request's attestation carries: nitro-cli's, or nitro-tpm-pcr-compute's with --kind nitrotpm")
	f.StringVar(&docFile, "document", "", "attestation document `FILE` (CBOR or base64) whose PCRs the request carries: an enclave's, or an instance's NitroTPM's")
	f.BoolVar(&unattested, "unattested", false, "the request carries no attestation (a direct call)")
	f.Var(&extraPCRs, "pcr", "add or override a PCR of the attestation, `N=HEX` (repeatable; e.g. an enclave's PCR3/PCR4, which depend on the instance), or give them all")
	f.BoolVar(&verify, "verify", false, "verify --document first (against --root, or the AWS Nitro root)")
	f.Var(&roots, "root", "trusted root for --document, PEM `FILE` (repeatable; implies --verify)")
	f.Var(&at, "at", "verify --document at `TIME`: document, now or RFC 3339")
	f.StringVar(&principal, "principal", "", "caller `ARN`: a role, an assumed-role session, a user or an account")
	f.StringVar(&action, "action", "", "KMS `ACTION`, e.g. kms:Decrypt")
	f.StringVar(&keyARN, "key-arn", "", "the key's `ARN` (default: a key in the principal's account; matters only if a policy names resources)")
	f.Var(&ec, "encryption-context", "the request's encryption context, `KEY=VALUE` (repeatable)")
	f.Var(&iamFiles, "iam-policy", "identity-based (IAM) policy JSON `FILE` of the principal (repeatable); evaluated with the key policy as KMS does")
	f.Var(&extraContext, "context", "another condition key of the request, `KEY=VALUE` (repeatable), e.g. kms:ViaService=ec2.us-east-1.amazonaws.com")
	f.BoolVar(&asJSON, "json", false, "print the decision as JSON")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{measurements != "", docFile != "", unattested} {
		if set {
			n++
		}
	}
	switch {
	case policyFile == "":
		return f.usageError("missing --key-policy")
	case n > 1:
		return f.usageError("give one of --measurements, --document and --unattested")
	case n == 0 && len(extraPCRs) == 0:
		return f.usageError("say what attestation the request carries: --measurements, --document, --pcr or --unattested")
	case principal == "":
		return f.usageError("missing --principal")
	case action == "":
		return f.usageError("missing --action")
	case (verify || len(roots) > 0) && docFile == "":
		return f.usageError("--verify and --root check a --document")
	case unattested && len(extraPCRs) > 0:
		return f.usageError("--pcr adds to an attestation; --unattested has none")
	}
	if !strings.Contains(action, ":") {
		action = "kms:" + action
	}
	if !strings.HasPrefix(strings.ToLower(action), "kms:") {
		return f.usageError("--action %q: want a KMS action such as kms:Decrypt", action)
	}
	if canon := keypolicy.CanonicalAction(action); canon != "" {
		action = canon
	} else {
		msg := fmt.Sprintf("--action %q is not a KMS action", action)
		if s := keypolicy.SuggestAction(action); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		if strings.EqualFold(action, "kms:ReEncrypt") {
			msg += "; ReEncrypt is authorized as kms:ReEncryptFrom on the source key and kms:ReEncryptTo on the destination key"
		}
		return f.usageError("%s", msg)
	}
	overrides, err := parsePCRExpectations("pcr", extraPCRs)
	if err != nil {
		return err
	}
	for k := range extraContext {
		if reason := keypolicy.CheckConditionKey(k); reason != "" {
			fmt.Fprintf(e.stderr, "kmsproxyctl: warning: --context %s\n", reason)
		}
	}

	pol, err := loadPolicyFile(e, "key-policy", policyFile, false)
	if err != nil {
		return err
	}
	var identity []keypolicy.IdentityPolicy
	for _, file := range iamFiles {
		ip, err := loadPolicyFile(e, "iam-policy", file, true)
		if err != nil {
			return err
		}
		identity = append(identity, keypolicy.IdentityPolicy{Name: file, Policy: ip})
	}

	// The request's attestation is a document of one kind: an enclave's
	// (pcrs, kms:RecipientAttestation:ImageSha384 and PCR<n>) or an EC2
	// instance's NitroTPM's (nitrotpm_pcrs,
	// kms:RecipientAttestation:NitroTPMPCR<n>), built the way devkms
	// builds it from a verified document (keypolicy.DocumentContext).
	var doc *attestation.Document
	switch {
	case docFile != "":
		if doc, err = checkDocument(e, docFile, verify || len(roots) > 0, roots, &at); err != nil {
			return err
		}
		if kind.set && kind.value() != doc.Kind {
			return f.usageError("--kind %s, but --document is a %s document", kind.String(), doc.Kind)
		}
	case !unattested:
		k := kind.value()
		pcrs := map[int][]byte{}
		if measurements != "" {
			if pcrs, err = loadMeasurements(k, measurements); err != nil {
				return err
			}
		}
		doc = &attestation.Document{Kind: k}
		if k == attestation.KindNitroTPM {
			doc.NitroTPMPCRs = pcrs
		} else {
			doc.PCRs = pcrs
		}
	}
	if len(overrides) > 0 {
		for _, o := range overrides {
			if o.index >= doc.Kind.PCRCount() {
				return f.usageError("--pcr %d: %s has PCR0 to PCR%d", o.index, kindPCRsPhrase(doc.Kind), doc.Kind.PCRCount()-1)
			}
		}
		// A copy: the document's own PCRs stay as they were read.
		measured := maps.Clone(doc.Measurements())
		if measured == nil {
			measured = map[int][]byte{}
		}
		for _, o := range overrides {
			measured[o.index] = o.value
		}
		d := &attestation.Document{Kind: doc.Kind}
		if doc.Kind == attestation.KindNitroTPM {
			d.NitroTPMPCRs = measured
		} else {
			d.PCRs = measured
		}
		doc = d
	}

	if keyARN == "" {
		keyARN = defaultKeyARN(principal)
	}
	reqCtx := keypolicy.MergeContext(keypolicy.CallerContext(principal), keypolicy.EncryptionContext(ec))
	if doc != nil {
		reqCtx = keypolicy.MergeContext(reqCtx, keypolicy.DocumentContext(doc))
	}
	for k, v := range extraContext {
		reqCtx = keypolicy.MergeContext(reqCtx, map[string][]string{k: {v}})
	}
	a := keypolicy.Authorize(keypolicy.Input{
		Request:           keypolicy.Request{Principal: principal, Action: action, Resource: keyARN, Context: reqCtx},
		KeyPolicy:         pol,
		IdentityKnown:     len(identity) > 0,
		Identity:          identity,
		EncryptionContext: ec,
		ConstraintsApply:  true,
	})
	if asJSON {
		if err := printJSON(e.stdout, a); err != nil {
			return err
		}
	} else {
		fmt.Fprint(e.stdout, a.Explain())
		switch {
		case a.Conditional:
			fmt.Fprintf(e.stdout, "KMS allows it only if an identity-based policy of %s allows %s on the key; give them with --iam-policy to know\n", principal, action)
		case !a.Allowed:
			fmt.Fprintf(e.stdout, "KMS would answer: AccessDeniedException: %s\n", a.AccessDeniedMessage())
		}
	}
	switch {
	case a.Allowed:
		return nil
	case a.Conditional:
		return exitStatus(checkConditional)
	}
	return exitStatus(checkDenied)
}

// loadPolicyFile reads and parses a key policy (identity false) or an
// identity-based policy given to flag, and prints its warnings on stderr.
func loadPolicyFile(e *env, flag, path string, identity bool) (*keypolicy.Policy, error) {
	limit, parse := int64(keypolicy.MaxPolicySize), keypolicy.Parse
	hint := fmt.Sprintf("KMS accepts key policies up to %d bytes", keypolicy.MaxPolicySize)
	if identity {
		limit, parse = keypolicy.MaxIdentityPolicyBytes, keypolicy.ParseIdentity
		hint = fmt.Sprintf("IAM accepts policies up to %d characters besides white space", keypolicy.MaxIdentityPolicySize)
	}
	doc, err := readFile(flag, path, limit)
	if err != nil {
		return nil, withHint(err, "%s", hint)
	}
	p, err := parse(doc)
	if err != nil {
		var pe *keypolicy.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("--%s %s is not a valid policy: %s", flag, path, pe.Text())
		}
		return nil, fmt.Errorf("--%s %s is not a valid policy: %v", flag, path, err)
	}
	for _, w := range p.Warnings() {
		fmt.Fprintf(e.stderr, "kmsproxyctl: warning: --%s %s: %s\n", flag, path, w)
	}
	return p, nil
}

// checkDocument reads an attestation document for policy check, after
// verifying it when asked.
func checkDocument(e *env, path string, verify bool, rootFiles []string, at *atFlag) (*attestation.Document, error) {
	b, err := readDocument(e, path)
	if err != nil {
		return nil, err
	}
	doc, err := attestation.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("failed to read --document: %w", err)
	}
	if verify {
		pool, err := loadRoots(rootFiles)
		if err != nil {
			return nil, err
		}
		if err := attestation.Verify(doc, pool, at.resolve(doc.Timestamp)); err != nil {
			return nil, withHint(fmt.Errorf("--document does not verify: %w", err), "%s", verifyHint(err, len(rootFiles) > 0))
		}
	}
	return doc, nil
}

// defaultKeyARN is the key a policy check asks about when --key-arn is not
// given: a key in the principal's account. Key policies say "Resource": "*"
// (the key they are attached to), so the exact ARN rarely matters.
func defaultKeyARN(principal string) string {
	account, partition := "111122223333", "aws"
	if isAccountID(principal) {
		account = principal
	} else if parts := strings.SplitN(principal, ":", 6); len(parts) == 6 && parts[0] == "arn" && isAccountID(parts[4]) {
		partition, account = parts[1], parts[4]
	}
	return fmt.Sprintf("arn:%s:kms:us-east-1:%s:key/00000000-0000-0000-0000-000000000000", partition, account)
}
