package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Pin is the kms: section of a policy file: the AWS accounts, and
// optionally the regions, whose KMS keys kmsproxyd may use at all, on every
// listener.
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
type Pin struct {
	// Accounts are 12-digit AWS account IDs; empty means any account.
	Accounts []string `json:"accounts,omitempty" yaml:"accounts,omitempty,flow"`
	// Regions are AWS region names; empty means any region.
	Regions []string `json:"regions,omitempty" yaml:"regions,omitempty,flow"`

	// accountsAt and regionsAt are where the lists are in the file, for
	// messages ("policy.yaml:3:14").
	accountsAt, regionsAt string
}

// Pinned reports whether the policy names the accounts whose keys
// kmsproxyd may use.
func (k *Pin) Pinned() bool { return k != nil && len(k.Accounts) > 0 }

var (
	// accountPattern: "An AWS account ID is a 12-digit number" (AWS Account
	// Management Reference Guide, "View AWS account identifiers").
	accountPattern = regexp.MustCompile(`^[0-9]{12}$`)
	// regionPattern accepts the names AWS gives regions: two lowercase
	// letters, one or more words, a number (us-east-1, eu-central-2,
	// us-gov-west-1, cn-northwest-1, ap-southeast-5, us-isob-east-1).
	regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
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
	if pin == nil || (len(pin.Accounts) == 0 && len(pin.Regions) == 0) {
		return nil
	}
	field := "accounts"
	if len(pin.Accounts) == 0 {
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
	return nil
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
