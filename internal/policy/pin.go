package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Pin is the kms: section of a policy file: the AWS accounts, optionally
// the regions, and the keys, whose KMS keys kmsproxyd may use at all, on
// every listener.
//
// The parent instance supplies kmsproxyd's credentials and region (IMDS, a
// credentials push), so it chooses the AWS account kmsproxyd talks to. KMS
// resolves an alias and a bare key id in the caller's account (KMS
// Developer Guide, "Key identifiers (KeyId)": "To specify a KMS key in a
// different AWS account, you must use its key ARN or alias ARN"), so a
// request for alias/app-data signed with credentials of an account the
// parent's owner controls gets that account's key: a data key the parent
// can decrypt on its own, or a signature, MAC or verification the parent
// chose. Every KMS answer names the key it used by its key ARN, which
// carries the account and region; checking it against the pin is what
// keeps the choice of account out of the parent's hands.
//
// Accounts pin the account, not the key: whoever may create keys in a
// pinned account (kms:CreateKey in an IAM policy; the instance role, whose
// credentials the parent holds, if it has that permission) can encrypt a
// plaintext of their choice under a key of their own, and an enclave app
// that decrypts the ciphertext without naming its key (KMS lets Decrypt of
// a symmetric ciphertext omit KeyId) gets that plaintext. Keys closes that:
// every key KMS answers with must match one of its key ARN patterns.
type Pin struct {
	// Accounts are 12-digit AWS account IDs; empty means any account.
	Accounts []string `json:"accounts,omitempty" yaml:"accounts,omitempty,flow"`
	// Regions are AWS region names; empty means any region.
	Regions []string `json:"regions,omitempty" yaml:"regions,omitempty,flow"`
	// Keys are glob patterns over key ARNs (never aliases); empty means
	// any key of the pinned accounts.
	Keys []string `json:"keys,omitempty" yaml:"keys,omitempty"`

	// accountsAt, regionsAt and keysAt are where the lists are in the
	// file, for messages ("policy.yaml:3:14").
	accountsAt, regionsAt, keysAt string
}

// Pinned reports whether the policy names the accounts whose keys
// kmsproxyd may use: under kms.accounts, or by listing under kms.keys only
// key ARN patterns that each name one account.
func (k *Pin) Pinned() bool {
	if k == nil {
		return false
	}
	if len(k.Accounts) > 0 {
		return true
	}
	for _, p := range k.Keys {
		if f := strings.SplitN(p, ":", 6); len(f) < 6 || hasWildcard(f[4]) {
			return false
		}
	}
	return len(k.Keys) > 0
}

// empty reports whether the kms: section pins nothing.
func (k *Pin) empty() bool {
	return k == nil || len(k.Accounts) == 0 && len(k.Regions) == 0 && len(k.Keys) == 0
}

// clone returns a copy of k's lists, or nil when it pins nothing.
func (k *Pin) clone() *Pin {
	if k.empty() {
		return nil
	}
	return &Pin{Accounts: slices.Clone(k.Accounts), Regions: slices.Clone(k.Regions), Keys: slices.Clone(k.Keys)}
}

var (
	// accountPattern: "An AWS account ID is a 12-digit number" (AWS Account
	// Management Reference Guide, "View AWS account identifiers").
	accountPattern = regexp.MustCompile(`^[0-9]{12}$`)
	// regionPattern accepts the names AWS gives regions: two to four
	// lowercase letters, one or more words, a number (us-east-1,
	// eu-central-2, us-gov-west-1, cn-northwest-1, ap-southeast-5,
	// us-isob-east-1, and the European Sovereign Cloud's eusc-de-east-1).
	regionPattern = regexp.MustCompile(`^[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}$`)
	// keyARNPattern splits a key ARN, arn:PARTITION:kms:REGION:ACCOUNT:key/ID
	// (KMS Developer Guide, "Key identifiers (KeyId)"). Every KMS answer
	// that names a key names it this way.
	keyARNPattern = regexp.MustCompile(`^arn:([a-z][a-z-]{1,31}):kms:([a-z0-9-]{1,32}):([0-9]{12}):key/([A-Za-z0-9-]{1,64})$`)
)

// keyARN is a parsed key ARN.
type arnParts struct{ partition, region, account, id string }

// parseKeyARN returns the parts of a key ARN, or false when id is not one.
func parseKeyARN(id string) (arnParts, bool) {
	m := keyARNPattern.FindStringSubmatch(id)
	if m == nil {
		return arnParts{}, false
	}
	return arnParts{partition: m[1], region: m[2], account: m[3], id: m[4]}, true
}

// KeyARNAccount returns the account of a key ARN, or "" when id is not a
// key ARN.
func KeyARNAccount(id string) string {
	a, _ := parseKeyARN(id)
	return a.account
}

// pinDenied builds the Denied of a key KMS answered with that the pin does
// not allow. Its message names neither the key nor its account: nothing of
// a refused answer reaches the caller (kmsproxyd logs both for the
// operator).
func (r *Rules) pinDenied(field, reason string) *Denied {
	return &Denied{Listener: r.listener, Rule: "kms." + field, Reason: reason}
}

// allowPinned checks a key ARN KMS answered with against the pin.
func (r *Rules) allowPinned(answered string) error {
	pin := r.pin
	if pin.empty() {
		return nil
	}
	field := "accounts"
	switch {
	case len(pin.Accounts) > 0:
	case len(pin.Keys) > 0:
		field = "keys"
	default:
		field = "regions"
	}
	arn, ok := parseKeyARN(answered)
	if !ok {
		return r.pinDenied(field, "may use only keys of the accounts and regions the policy names, and KMS's answer names no key ARN, so kmsproxyd cannot tell whose key it used")
	}
	if len(pin.Accounts) > 0 && !slices.Contains(pin.Accounts, arn.account) {
		return r.pinDenied("accounts", "may use only keys of the accounts the policy names, and KMS answered with a key of another account: "+
			"the credentials kmsproxyd was given (by IMDS or a push from the parent instance) belong to an account the policy does not name")
	}
	if len(pin.Regions) > 0 && !slices.Contains(pin.Regions, arn.region) {
		return r.pinDenied("regions", "may use only keys in the regions the policy names, and KMS answered with a key in another region")
	}
	if len(pin.Keys) > 0 && !slices.ContainsFunc(pin.Keys, func(p string) bool { return match(p, answered) }) {
		return r.pinDenied("keys", "may use only the keys the policy names, and KMS answered with another key: "+
			"a request that names its key by alias, by bare key id or not at all (Decrypt) is answered with whichever key the alias or the ciphertext names, "+
			"which anyone who may create keys or move aliases in the account can choose")
	}
	return nil
}

// Home is the partition and region kmsproxyd signs its KMS calls for. KMS
// keys are regional: a KMS endpoint uses only keys of its own region, and
// a multi-Region key is answered as its replica in the region called
// ("related multi-Region keys" share a key ID, each is "an independent KMS
// key" of its region: KMS Developer Guide, "How multi-Region keys work";
// the AWS Encryption SDK calls Decrypt with the replica's ARN in the
// client's region and requires "The KeyId field in the response MUST equal
// the requested KeyId": aws-encryption-sdk-specification,
// framework/aws-kms/aws-kms-mrk-discovery-keyring.md). So every key ARN an
// honest KMS answers with is in Home; one that is not names a key kmsproxyd
// never asked for.
type Home struct {
	// Partition is the ARN partition of Region: aws, aws-cn, aws-us-gov,
	// ...
	Partition string
	// Region is the AWS region kmsproxyd signs for.
	Region string
}

// partitions map region names to ARN partitions, by the region patterns
// of the AWS SDK's partitions.json (aws-sdk-go-v2
// internal/endpoints/awsrulesfn/partitions.go); a region that matches none
// is in the aws partition, as the SDK resolves it.
var partitions = []struct {
	id     string
	region *regexp.Regexp
}{
	{"aws-cn", regexp.MustCompile(`^cn-\w+-\d+$`)},
	{"aws-us-gov", regexp.MustCompile(`^us-gov-\w+-\d+$`)},
	{"aws-iso", regexp.MustCompile(`^us-iso-\w+-\d+$`)},
	{"aws-iso-b", regexp.MustCompile(`^us-isob-\w+-\d+$`)},
	{"aws-iso-e", regexp.MustCompile(`^eu-isoe-\w+-\d+$`)},
	{"aws-iso-f", regexp.MustCompile(`^us-isof-\w+-\d+$`)},
	{"aws-eusc", regexp.MustCompile(`^eusc-de-\w+-\d+$`)},
}

// HomeOf returns the Home of a region.
func HomeOf(region string) Home {
	for _, p := range partitions {
		if p.region.MatchString(region) {
			return Home{Partition: p.id, Region: region}
		}
	}
	return Home{Partition: "aws", Region: region}
}

// Contains reports whether keyARN is a key ARN of h's partition and
// region.
func (h Home) Contains(keyARN string) bool {
	a, ok := parseKeyARN(keyARN)
	return ok && a.partition == h.Partition && a.region == h.Region
}

// AllowRegion returns nil when region is one the policy's kms.regions
// names (or it names none), and otherwise an error naming the region, where
// it came from (source, e.g. "--region" or "IMDS (placement/region)"), the
// regions the policy allows and the line that says so. kmsproxyd calls it
// at start for the region it will sign for and the region of its endpoint.
func (p *Policy) AllowRegion(region, source string) error {
	if p == nil || len(p.kms.Regions) == 0 || slices.Contains(p.kms.Regions, region) {
		return nil
	}
	return fmt.Errorf("%s: kms.regions: %s names region %s, but the policy allows only %s; "+
		"kmsproxyd uses only the regions its policy names: run it in one of them, or add %s to kms.regions and rebuild the enclave image",
		p.kms.regionsAt, source, strconv.Quote(region), quoteList(p.kms.Regions), region)
}

// quoteList renders names as "a", "b" and "c".
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}
