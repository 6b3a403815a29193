package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// attestedActions are the KMS operations that accept a Recipient and return
// their secret encrypted to the enclave (AWS KMS Developer Guide, "How AWS
// Nitro Enclaves uses AWS KMS": Decrypt, DeriveSharedSecret,
// GenerateDataKey, GenerateDataKeyPair and GenerateRandom).
var attestedActions = []string{
	"kms:Decrypt",
	"kms:GenerateDataKey",
	"kms:GenerateDataKeyPair",
	"kms:GenerateRandom",
	"kms:DeriveSharedSecret",
}

// deniedWithoutAttestation are the actions the generated policy denies the
// role unless its attestation matches: the attested actions, plus ReEncrypt,
// which takes no Recipient and could otherwise move a ciphertext to a key the
// role controls without the enclave.
var deniedWithoutAttestation = append(append([]string(nil), attestedActions...), "kms:ReEncrypt*")

// keyPolicy is a KMS key policy document in the member order AWS writes.
type keyPolicy struct {
	Version   string            `json:"Version"`
	ID        string            `json:"Id,omitempty"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Sid       string                       `json:"Sid"`
	Effect    string                       `json:"Effect"`
	Principal map[string]string            `json:"Principal"`
	Action    any                          `json:"Action"`
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

// generatePolicy builds the key policy for an enclave image: the account
// administers the key; the role may use the attested operations only with an
// attestation document whose ImageSha384 and chosen PCRs match; and explicit
// Deny statements refuse the role those operations (and ReEncrypt) whenever
// any of those values differs or is absent.
//
// Why the Deny statements: the administration statement names the account
// root, which lets any principal of the account whose IAM policy allows
// kms:Decrypt use the key ("the key policy gives the AWS account full access
// to the KMS key ... and enables IAM policies", AWS KMS Developer Guide,
// "Default key policy"). Without a Deny, the parent's role with a broad IAM
// policy could call Decrypt without attestation, or with another enclave's
// document, and the binding to the image would be void. Each Deny holds one
// condition key, because the keys of one Condition are ANDed and a Deny must
// fire when any single value differs; a "Not" operator holds when the key is
// absent (no Recipient), so the Deny also covers unattested calls.
func generatePolicy(pcrs map[int][]byte, chosen []int, role string, account, partition string) keyPolicy {
	values := map[string]string{
		keypolicy.KeyImageSha384: hex.EncodeToString(pcrs[0]),
	}
	for _, i := range chosen {
		values[keypolicy.KeyPCRPrefix+strconv.Itoa(i)] = hex.EncodeToString(pcrs[i])
	}
	p := keyPolicy{
		Version: keypolicy.Version2012,
		ID:      "kmsproxy-enclave-key-policy",
		Statement: []policyStatement{
			{
				Sid:       "AllowKeyAdministrationByTheAccount",
				Effect:    "Allow",
				Principal: map[string]string{"AWS": fmt.Sprintf("arn:%s:iam::%s:root", partition, account)},
				Action:    "kms:*",
				Resource:  "*",
			},
			{
				Sid:       "AllowAttestedEnclaveUse",
				Effect:    "Allow",
				Principal: map[string]string{"AWS": role},
				Action:    attestedActions,
				Resource:  "*",
				Condition: map[string]map[string]string{"StringEqualsIgnoreCase": values},
			},
		},
	}
	denyKeys := []string{keypolicy.KeyImageSha384}
	for _, i := range chosen {
		if i != 0 { // PCR0 is ImageSha384: one Deny covers both
			denyKeys = append(denyKeys, keypolicy.KeyPCRPrefix+strconv.Itoa(i))
		}
	}
	for _, k := range denyKeys {
		name := strings.TrimPrefix(k, "kms:RecipientAttestation:")
		p.Statement = append(p.Statement, policyStatement{
			Sid:       "DenyRoleUnless" + name + "Matches",
			Effect:    "Deny",
			Principal: map[string]string{"AWS": role},
			Action:    deniedWithoutAttestation,
			Resource:  "*",
			Condition: map[string]map[string]string{"StringNotEqualsIgnoreCase": {k: values[k]}},
		})
	}
	return p
}

func runPolicyGenerate(ctx context.Context, e *env, args []string) error {
	f := newFlags("policy generate", "--measurements FILE --role ARN [flags]",
		`Write a KMS key policy (JSON, on stdout) that binds a key to an enclave
image, from the measurements "nitro-cli build-enclave" prints:

  - the account (root) administers the key (kms:*), as KMS's default policy;
  - the role (the parent instance's role, which signs kmsproxyd's calls) may
    call Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom and
    DeriveSharedSecret only with an attestation document whose ImageSha384
    (PCR0) and chosen PCRs match (StringEqualsIgnoreCase);
  - Deny statements refuse the role those operations and ReEncrypt whenever
    one of those values differs or no attestation is attached, so an IAM
    policy that grants the role kms:Decrypt cannot bypass the enclave.

Check it with "kmsproxyctl policy check" before "aws kms put-key-policy".`,
		`  nitro-cli build-enclave --docker-uri kmsproxyd:latest --output-file kmsproxyd.eif > measurements.json
  kmsproxyctl policy generate --measurements measurements.json --role arn:aws:iam::111122223333:role/enclave-parent > key-policy.json
  aws kms put-key-policy --key-id $KEY --policy-name default --policy file://key-policy.json`)
	var (
		measurements, role, account, pcrList, region string
	)
	f.StringVar(&measurements, "measurements", "", "nitro-cli measurements JSON `FILE` (build-enclave or describe-eif output)")
	f.StringVar(&role, "role", "", "IAM role `ARN` whose credentials kmsproxyd uses (the parent instance's role)")
	f.StringVar(&account, "account", "", "account `ID` that administers the key (default: the role's account)")
	f.StringVar(&pcrList, "pcrs", "", "PCRs to require besides ImageSha384, as `LIST` like 0,1,2 (default: every PCR in the measurements)")
	f.StringVar(&region, "region", "", "the key's `REGION`, checked against the role's partition (cn-* is aws-cn, us-gov-* aws-us-gov)")
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
	pcrs, err := nsmsim.LoadMeasurements(measurements)
	if err != nil {
		return withHint(fmt.Errorf("failed to read --measurements: %w", err),
			"--measurements takes the JSON \"nitro-cli build-enclave\" or \"nitro-cli describe-eif\" prints")
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
	return printJSON(e.stdout, generatePolicy(pcrs, chosen, role, account, r.partition))
}

func runPolicyCheck(ctx context.Context, e *env, args []string) error {
	f := newFlags("policy check", "--key-policy FILE (--measurements FILE | --document FILE | --unattested) --principal ARN --action ACTION [flags]",
		`Evaluate a KMS key policy the way KMS does (the evaluator devkms uses) for
one request and print ALLOWED or DENIED with each statement and condition:
the explanation KMS's AccessDeniedException does not give. The request's
attestation comes from nitro-cli measurements, from an attestation document
(its PCRs; verified when --verify or --root is given), or is absent
(--unattested: a direct call, not through the enclave). Exit status 0 when
allowed, 1 when denied.

One simplification: a statement whose principal is the account (root)
matches every principal of the account, as if IAM policies allowed it.`,
		`  kmsproxyctl policy check --key-policy key-policy.json --measurements measurements.json \
      --principal arn:aws:iam::111122223333:role/enclave-parent --action kms:Decrypt
  kmsproxyctl policy check --key-policy key-policy.json --document doc.cbor --verify \
      --principal arn:aws:sts::111122223333:assumed-role/enclave-parent/i-0abc --action kms:GenerateDataKey
  kmsproxyctl policy check --key-policy key-policy.json --unattested \
      --principal arn:aws:iam::111122223333:role/enclave-parent --action kms:Decrypt   # expect DENIED`)
	var (
		policyFile, measurements, docFile, principal, action, keyARN string
		unattested, verify, asJSON                                   bool
		roots, extraPCRs                                             stringsFlag
		ec                                                           contextFlag
		at                                                           atFlag
	)
	f.StringVar(&policyFile, "key-policy", "", "key policy JSON `FILE`")
	f.StringVar(&measurements, "measurements", "", "nitro-cli measurements JSON `FILE`: the PCRs of the request's attestation")
	f.StringVar(&docFile, "document", "", "attestation document `FILE` (CBOR or base64) whose PCRs the request carries")
	f.BoolVar(&unattested, "unattested", false, "the request carries no attestation (a direct call)")
	f.Var(&extraPCRs, "pcr", "add or override a PCR of the attestation, `N=HEX` (repeatable; e.g. PCR3/PCR4, which depend on the instance)")
	f.BoolVar(&verify, "verify", false, "verify --document first (against --root, or the AWS Nitro root)")
	f.Var(&roots, "root", "trusted root for --document, PEM `FILE` (repeatable; implies --verify)")
	f.Var(&at, "at", "verify --document at `TIME`: document, now or RFC 3339")
	f.StringVar(&principal, "principal", "", "caller `ARN`: a role, an assumed-role session, a user or an account")
	f.StringVar(&action, "action", "", "KMS `ACTION`, e.g. kms:Decrypt")
	f.StringVar(&keyARN, "key-arn", "", "the key's `ARN` (default: a key in the principal's account; matters only if the policy names resources)")
	f.Var(&ec, "encryption-context", "the request's encryption context, `KEY=VALUE` (repeatable)")
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
	overrides, err := parsePCRExpectations(extraPCRs)
	if err != nil {
		return err
	}

	doc, err := readFile("key-policy", policyFile, keypolicy.MaxPolicySize)
	if err != nil {
		return withHint(err, "KMS accepts key policies up to %d bytes", keypolicy.MaxPolicySize)
	}
	pol, err := keypolicy.Parse(doc)
	if err != nil {
		return fmt.Errorf("failed to parse --key-policy %s: %w", policyFile, err)
	}

	var pcrs map[int][]byte
	switch {
	case measurements != "":
		if pcrs, err = nsmsim.LoadMeasurements(measurements); err != nil {
			return fmt.Errorf("failed to read --measurements: %w", err)
		}
	case docFile != "":
		if pcrs, err = documentPCRs(e, docFile, verify || len(roots) > 0, roots, &at); err != nil {
			return err
		}
	}
	if len(overrides) > 0 {
		if pcrs == nil {
			pcrs = map[int][]byte{}
		}
		for _, o := range overrides {
			pcrs[o.index] = o.value
		}
	}

	if keyARN == "" {
		keyARN = defaultKeyARN(principal)
	}
	reqCtx := keypolicy.MergeContext(keypolicy.CallerContext(principal), keypolicy.EncryptionContext(ec))
	if pcrs != nil {
		reqCtx = keypolicy.MergeContext(reqCtx, keypolicy.AttestationContext(pcrs))
	}
	req := keypolicy.Request{Principal: principal, Action: action, Resource: keyARN, Context: reqCtx}
	d := pol.Evaluate(req)
	if asJSON {
		if err := printJSON(e.stdout, d); err != nil {
			return err
		}
	} else {
		fmt.Fprint(e.stdout, d.Explain())
		if !d.Allowed {
			fmt.Fprintf(e.stdout, "KMS would answer: AccessDeniedException: %s\n", d.AccessDeniedMessage(req))
		}
	}
	if !d.Allowed {
		return exitStatus(1)
	}
	return nil
}

// documentPCRs reads an attestation document for policy check and returns
// its PCRs, after verifying it when asked.
func documentPCRs(e *env, path string, verify bool, rootFiles []string, at *atFlag) (map[int][]byte, error) {
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
	return doc.PCRs, nil
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
