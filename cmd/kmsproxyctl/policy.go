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
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
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
// pins every alias of this key. CreateAlias stays allowed: a new alias that
// points here gives nobody anything.
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

// parsePCRList parses --pcrs "0,1,2".
func parsePCRList(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(p)), "PCR")
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n >= attestation.PCRCount {
			return nil, usageErrorf("--pcrs %q: want a comma-separated list of PCR numbers from 0 to %d", s, attestation.PCRCount-1)
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
	role, account, partition string
	// lock leaves out every way to change the key policy.
	lock bool
	// roleEncrypt lets the role call roleEncryptActions.
	roleEncrypt bool
}

// generatePolicy builds the key policy for an enclave image. No principal,
// the account's administrators included, may use an operation that returns
// a secret without an attestation document whose ImageSha384 and chosen
// PCRs match; the role may do nothing else at all; nobody may grant the key,
// re-encrypt out of it, import material into it, replicate it or move its
// aliases; and the administrators keep managing it (changing its policy too,
// unless lock). docs/security.md explains each statement and the threat it
// answers.
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
	values := map[string]string{
		keypolicy.KeyImageSha384: hex.EncodeToString(pcrs[0]),
	}
	for _, i := range chosen {
		values[keypolicy.KeyPCRPrefix+strconv.Itoa(i)] = hex.EncodeToString(pcrs[i])
	}
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
		ID:      "kmsproxy-enclave-key-policy",
		Statement: []policyStatement{
			{
				Sid:       "AllowKeyAdministrationByAccountAdministrators",
				Effect:    "Allow",
				Principal: map[string]string{"AWS": fmt.Sprintf("arn:%s:iam::%s:root", o.partition, o.account)},
				Action:    admin,
				Resource:  "*",
			},
			{
				Sid:       "AllowAttestedEnclaveUse",
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
			Sid:       "AllowEnclaveRoleToEncrypt",
			Effect:    "Allow",
			Principal: role,
			Action:    roleEncryptActions,
			Resource:  "*",
		})
	}
	// The role is the parent instance's: whatever its IAM policies say
	// (kms:* included), it may do nothing with this key but what the
	// statements above allow.
	p.Statement = append(p.Statement, policyStatement{
		Sid:       "DenyEnclaveRoleEverythingElse",
		Effect:    "Deny",
		Principal: role,
		NotAction: roleMay,
		Resource:  "*",
	})
	// One Deny per measured value, for every principal: the keys of one
	// condition are ANDed, and a Deny must fire when any single value
	// differs. StringNotEqualsIgnoreCase holds when the key is absent, so a
	// call without attestation is refused too.
	denyKeys := []string{keypolicy.KeyImageSha384}
	for _, i := range chosen {
		if i != 0 { // PCR0 is ImageSha384: one Deny covers both
			denyKeys = append(denyKeys, keypolicy.KeyPCRPrefix+strconv.Itoa(i))
		}
	}
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
			Sid:       "DenyEveryonePathsAroundTheEnclave",
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

func runPolicyGenerate(ctx context.Context, e *env, args []string) error {
	f := newFlags("policy generate", "--measurements FILE --role ARN [flags]",
		`Write a KMS key policy (JSON, on stdout) that binds a key to an enclave
image, from the measurements "nitro-cli build-enclave" prints. Nobody can
get a secret out of the key without the enclave:

  - the account's administrators (principals whose IAM policies allow it)
    may manage the key and encrypt to it, but not decrypt with it;
  - the role (the parent instance's role, which signs kmsproxyd's calls) may
    call Decrypt, GenerateDataKey, GenerateDataKeyPair and DeriveSharedSecret
    only with an attestation document whose ImageSha384 (PCR0) and chosen
    PCRs match, and nothing else;
  - Deny statements refuse those operations to every principal whose request
    carries no such attestation, and refuse everyone CreateGrant,
    ReEncryptFrom, ImportKeyMaterial, ReplicateKey, UpdateAlias and
    DeleteAlias, so no IAM policy, grant or alias can route around the
    enclave.

The administrators can still replace the policy. With --lock they cannot:
nobody can ever change the policy again (not even AWS support); install it
with "aws kms put-key-policy --bypass-policy-lockout-safety-check".
docs/security.md explains every statement.

Check it with "kmsproxyctl policy check" before "aws kms put-key-policy".`,
		`  nitro-cli build-enclave --docker-uri kmsproxyd:latest --output-file kmsproxyd.eif > measurements.json
  kmsproxyctl policy generate --measurements measurements.json --role arn:aws:iam::111122223333:role/enclave-parent > key-policy.json
  aws kms put-key-policy --key-id $KEY --policy-name default --policy file://key-policy.json`)
	var (
		measurements, role, account, pcrList, region string
		lock, roleEncrypt                            bool
	)
	f.StringVar(&measurements, "measurements", "", "nitro-cli measurements JSON `FILE` (build-enclave or describe-eif output)")
	f.StringVar(&role, "role", "", "IAM role `ARN` whose credentials kmsproxyd uses (the parent instance's role)")
	f.StringVar(&account, "account", "", "account `ID` whose administrators manage the key (default: the role's account)")
	f.StringVar(&pcrList, "pcrs", "", "PCRs to require besides ImageSha384, as `LIST` like 0,1,2 (default: every PCR in the measurements)")
	f.StringVar(&region, "region", "", "the key's `REGION`, checked against the role's partition (cn-* is aws-cn, us-gov-* aws-us-gov)")
	f.BoolVar(&lock, "lock", false, "leave no way to change the key policy, for anyone, ever (install with --bypass-policy-lockout-safety-check)")
	f.BoolVar(&roleEncrypt, "role-encrypt", false, "also let the role call Encrypt and GenerateDataKeyWithoutPlaintext without attestation (the parent can then make ciphertexts the enclave accepts)")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	switch {
	case measurements == "":
		return f.usageError("missing --measurements")
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
	pcrs, err := loadMeasurements(measurements)
	if err != nil {
		return err
	}
	if _, ok := pcrs[0]; !ok {
		return fmt.Errorf("--measurements %s has no PCR0, the image measurement (ImageSha384)", measurements)
	}
	var chosen []int
	if pcrList == "" {
		for i := range pcrs {
			chosen = append(chosen, i)
		}
		sort.Ints(chosen)
	} else if chosen, err = parsePCRList(pcrList); err != nil {
		return err
	}
	for _, i := range chosen {
		if _, ok := pcrs[i]; !ok {
			return withHint(fmt.Errorf("--pcrs names PCR%d, which is not in %s", i, measurements),
				"nitro-cli measures PCR0, PCR1, PCR2 (and PCR8 for a signed image); PCR3 and PCR4 depend on the instance, not the image")
		}
	}
	for _, i := range chosen {
		if isZero(pcrs[i]) {
			return withHint(fmt.Errorf("--measurements %s has PCR%d all zeros, the value of a debug-mode enclave", measurements, i),
				"any enclave started with --debug-mode, running anything, would match; measure the release image (nitro-cli build-enclave) instead")
		}
	}
	return printJSON(e.stdout, generatePolicy(pcrs, chosen, policyOptions{
		role: role, account: account, partition: r.partition, lock: lock, roleEncrypt: roleEncrypt,
	}))
}

// isZero reports whether every byte of b is zero.
func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// loadMeasurements reads the --measurements file of policy generate and
// policy check.
func loadMeasurements(path string) (map[int][]byte, error) {
	b, err := readFile("measurements", path, nsmsim.MaxMeasurementsSize)
	if err != nil {
		return nil, err
	}
	pcrs, err := nsmsim.ParseMeasurements(b)
	if err != nil {
		// ParseMeasurements names its package first; the operator knows
		// the file by the flag.
		return nil, withHint(fmt.Errorf("--measurements %s: %s", path, strings.TrimPrefix(err.Error(), "nsmsim: ")),
			"--measurements takes the JSON \"nitro-cli build-enclave\" or \"nitro-cli describe-eif\" prints")
	}
	return pcrs, nil
}

// Exit statuses of policy check.
const (
	checkAllowed     = 0
	checkDenied      = 1
	checkConditional = 3 // allowed only if an IAM policy the check did not see allows it
)

func runPolicyCheck(ctx context.Context, e *env, args []string) error {
	f := newFlags("policy check", "--key-policy FILE (--measurements FILE | --document FILE | --unattested) --principal ARN --action ACTION [flags]",
		`Evaluate a request the way KMS does (the evaluator devkms uses) and print
ALLOWED or DENIED with the statement and condition that decided: the
explanation KMS's AccessDeniedException does not give. The request's
attestation comes from nitro-cli measurements, from an attestation document
(its PCRs; verified when --verify or --root is given), or is absent
(--unattested: a direct call, not through the enclave).

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
      --principal arn:aws:iam::111122223333:role/admin --action kms:Decrypt   # expect DENIED`)
	var (
		policyFile, measurements, docFile, principal, action, keyARN string
		unattested, verify, asJSON                                   bool
		roots, extraPCRs, iamFiles                                   stringsFlag
		ec, extraContext                                             contextFlag
		at                                                           atFlag
	)
	f.StringVar(&policyFile, "key-policy", "", "key policy JSON `FILE`")
	f.StringVar(&measurements, "measurements", "", "nitro-cli measurements JSON `FILE`: the PCRs of the request's attestation")
	f.StringVar(&docFile, "document", "", "attestation document `FILE` (CBOR or base64) whose PCRs the request carries: an enclave's, or an instance's NitroTPM's")
	f.BoolVar(&unattested, "unattested", false, "the request carries no attestation (a direct call)")
	f.Var(&extraPCRs, "pcr", "add or override a PCR of the attestation, `N=HEX` (repeatable; e.g. PCR3/PCR4, which depend on the instance)")
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
	case n != 1:
		return f.usageError("give exactly one of --measurements, --document and --unattested")
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

	// pcrs are an enclave's (kms:RecipientAttestation:PCR<n>), tpmPCRs an
	// EC2 instance's NitroTPM's (kms:RecipientAttestation:NitroTPMPCR<n>):
	// a document is of one kind or the other.
	var pcrs, tpmPCRs map[int][]byte
	switch {
	case measurements != "":
		if pcrs, err = loadMeasurements(measurements); err != nil {
			return err
		}
	case docFile != "":
		doc, err := checkDocument(e, docFile, verify || len(roots) > 0, roots, &at)
		if err != nil {
			return err
		}
		if doc.Kind == attestation.KindNitroTPM {
			tpmPCRs = maps.Clone(doc.NitroTPMPCRs)
		} else {
			pcrs = maps.Clone(doc.PCRs)
		}
	}
	if len(overrides) > 0 {
		target := &pcrs
		if tpmPCRs != nil {
			target = &tpmPCRs
		}
		if *target == nil {
			*target = map[int][]byte{}
		}
		for _, o := range overrides {
			if tpmPCRs == nil && o.index >= attestation.PCRCount {
				return f.usageError("--pcr %d: an enclave's attestation has PCR0 to PCR%d", o.index, attestation.PCRCount-1)
			}
			(*target)[o.index] = o.value
		}
	}

	if keyARN == "" {
		keyARN = defaultKeyARN(principal)
	}
	reqCtx := keypolicy.MergeContext(keypolicy.CallerContext(principal), keypolicy.EncryptionContext(ec))
	if pcrs != nil {
		reqCtx = keypolicy.MergeContext(reqCtx, keypolicy.AttestationContext(pcrs))
	}
	if tpmPCRs != nil {
		reqCtx = keypolicy.MergeContext(reqCtx, keypolicy.NitroTPMAttestationContext(tpmPCRs))
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
