package keypolicy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/enclavekit/kmsproxy/internal/suggest"
)

// MaxPolicySize is the largest key policy document KMS accepts: "Up to 32
// kilobytes (32,768 bytes)" (AWS KMS Developer Guide, "Creating a key
// policy", Key policy format,
// https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-overview.html).
// Larger documents are refused with LimitExceededException.
const MaxPolicySize = 32768

// MaxIdentityPolicySize is the most non-whitespace characters an
// identity-based (IAM) policy may have: "Role policy size cannot exceed
// 10,240 characters", the largest of IAM's policy quotas, which "does not
// count white space" (IAM User Guide, "IAM and AWS STS quotas").
const MaxIdentityPolicySize = 10240

// MaxIdentityPolicyBytes bounds the bytes ParseIdentity reads, whitespace
// included: four times MaxIdentityPolicySize leaves room for any sane
// indentation.
const MaxIdentityPolicyBytes = 4 * MaxIdentityPolicySize

// The policy language versions (IAM User Guide, "IAM JSON policy elements:
// Version"). A document without a Version is a 2008-10-17 document.
const (
	Version2012 = "2012-10-17"
	Version2008 = "2008-10-17"
)

// Effect is a statement's Effect.
type Effect string

// The two effects.
const (
	Allow Effect = "Allow"
	Deny  Effect = "Deny"
)

// Policy is a parsed key policy.
type Policy struct {
	// Version is the Version element; Version2008 when the document has
	// none.
	Version string `json:"version"`
	// ID is the optional Id element.
	ID string `json:"id,omitempty"`
	// Statements are the statements in document order.
	Statements []Statement `json:"statements"`
	// Identity is true for an identity-based (IAM) policy, whose
	// statements name no principal: they apply to the principal the
	// policy is attached to.
	Identity bool `json:"identity,omitempty"`
}

// Statement is one statement of a key policy. Exactly one of Principal and
// NotPrincipal is set. Action/NotAction and Resource/NotResource are each
// either absent (nil) or non-empty.
type Statement struct {
	Sid          string      `json:"sid,omitempty"`
	Effect       Effect      `json:"effect"`
	Principal    *Principals `json:"principal,omitempty"`
	NotPrincipal *Principals `json:"notPrincipal,omitempty"`
	Action       []string    `json:"action,omitempty"`
	NotAction    []string    `json:"notAction,omitempty"`
	Resource     []string    `json:"resource,omitempty"`
	NotResource  []string    `json:"notResource,omitempty"`
	// Conditions are the Condition element taken apart: one entry per
	// operator and key, in document order. All must hold.
	Conditions []Condition `json:"conditions,omitempty"`
}

// Ineffective says why the statement can never apply, or "" when it can.
// KMS accepts a key policy statement without Action or Resource but "the
// policy statement has no effect" (KMS API reference, PutKeyPolicy, Policy).
func (s *Statement) Ineffective() string {
	switch {
	case s.Action == nil && s.NotAction == nil:
		return "the statement has no Action or NotAction element, so KMS gives it no effect"
	case s.Resource == nil && s.NotResource == nil:
		return "the statement has no Resource or NotResource element, so KMS gives it no effect"
	}
	return ""
}

// Parse parses and checks a KMS key policy document. It refuses, with a
// *ParseError, documents KMS would refuse and documents keypolicy cannot
// evaluate faithfully (see the package comment).
func Parse(doc []byte) (*Policy, error) {
	if len(doc) > MaxPolicySize {
		return nil, &ParseError{
			Exception: ExceptionLimitExceeded,
			Statement: -1,
			Reason:    fmt.Sprintf("the key policy is %d bytes; KMS allows at most %d bytes", len(doc), MaxPolicySize),
		}
	}
	return parse(doc, false)
}

// ParseIdentity parses and checks an identity-based (IAM) policy: the
// policy grammar of Parse, except that statements must not name a principal
// ("Policy document should not specify a principal", IAM's
// MalformedPolicyDocument reason) and must name a resource (IAM refuses a
// statement without Resource or NotResource in an identity-based policy).
func ParseIdentity(doc []byte) (*Policy, error) {
	n := 0
	for _, c := range doc {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			n++
		}
	}
	if len(doc) > MaxIdentityPolicyBytes || n > MaxIdentityPolicySize {
		return nil, &ParseError{
			Exception: ExceptionLimitExceeded,
			Statement: -1,
			Reason:    fmt.Sprintf("the identity-based policy has %d characters besides white space; IAM allows at most %d", n, MaxIdentityPolicySize),
		}
	}
	return parse(doc, true)
}

func parse(doc []byte, identity bool) (*Policy, error) {
	what := "key policy"
	if identity {
		what = "policy"
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil, malformed("the " + what + " document is empty")
	}
	if err := checkCharacters(doc); err != nil {
		return nil, err
	}
	root, err := decodeJSON(doc)
	if err != nil {
		var dup *duplicateMemberError
		switch {
		case errors.As(err, &dup), errors.Is(err, errJSONTooDeep):
			return nil, malformed(err.Error())
		}
		return nil, malformed("the " + what + " is not valid JSON: " + err.Error())
	}
	if root.kind != jsonObject {
		return nil, malformedf("the %s must be a JSON object, not %s", what, root.kind)
	}

	p := &Policy{Version: Version2008, Identity: identity}
	var statement jsonValue
	haveStatement := false
	for _, m := range root.members {
		switch m.name {
		case "Version":
			if m.value.kind != jsonString || (m.value.text != Version2012 && m.value.text != Version2008) {
				return nil, malformedf("Version must be %q or %q", Version2012, Version2008)
			}
			p.Version = m.value.text
		case "Id":
			if m.value.kind != jsonString {
				return nil, malformedf("Id must be a string, not %s", m.value.kind)
			}
			p.ID = m.value.text
		case "Statement":
			statement, haveStatement = m.value, true
		default:
			return nil, malformedf("unknown top-level element %s (a %s has Version, Id and Statement)%s", quote(m.name), what,
				suggest.DidYouMean(m.name, []string{"Version", "Id", "Statement"}))
		}
	}
	if !haveStatement {
		return nil, malformed("the " + what + " has no Statement element")
	}
	var elems []jsonValue
	switch statement.kind {
	case jsonObject:
		elems = []jsonValue{statement}
	case jsonArray:
		elems = statement.elems
	default:
		return nil, malformedf("Statement must be an object or an array of objects, not %s", statement.kind)
	}
	if len(elems) == 0 {
		return nil, malformed("the " + what + " has no statements")
	}
	p.Statements = make([]Statement, 0, len(elems))
	for i, e := range elems {
		s, err := parseStatement(e, p.Version, identity)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				pe.Statement = i
				pe.Sid = s.Sid
				return nil, pe
			}
			return nil, err
		}
		p.Statements = append(p.Statements, s)
	}
	return p, nil
}

// checkCharacters enforces the character set of key policies: "A key policy
// document can include only the following characters: Printable ASCII
// characters from the space character (\u0020) through the end of the ASCII
// character range. Printable characters in the Basic Latin and Latin-1
// Supplement character set (through \u00FF). The tab (\u0009), line feed
// (\u000A), and carriage return (\u000D) special characters" (KMS API
// reference, PutKeyPolicy, Policy). DEL (U+007F) and the C1 controls
// (U+0080–U+009F) are not printable and are refused.
func checkCharacters(doc []byte) error {
	if !utf8.Valid(doc) {
		return malformed("the key policy is not valid UTF-8")
	}
	for off, r := range string(doc) {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
		case r >= 0x20 && r <= 0x7e:
		case r >= 0xa0 && r <= 0xff:
		default:
			return malformedf("the key policy contains the character %U at byte %d; key policies may hold only printable ASCII and Latin-1 characters, tab, line feed and carriage return", r, off)
		}
	}
	return nil
}

// statementElements are the elements a key policy statement may have (KMS
// Developer Guide, "Elements in a key policy"; IAM User Guide, "IAM JSON
// policy element reference").
var statementElements = map[string]bool{
	"Sid": true, "Effect": true, "Principal": true, "NotPrincipal": true,
	"Action": true, "NotAction": true, "Resource": true, "NotResource": true,
	"Condition": true,
}

// statementElementNames lists statementElements for suggestions.
var statementElementNames = []string{"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"}

// parseStatement parses one statement of a key policy or, with identity,
// of an identity-based policy. On error the returned Statement carries the
// Sid, when it could be read, for the error's location.
func parseStatement(v jsonValue, version string, identity bool) (Statement, error) {
	var s Statement
	if v.kind != jsonObject {
		return s, malformedf("a statement must be an object, not %s", v.kind)
	}
	if sid, ok := v.member("Sid"); ok {
		if sid.kind != jsonString {
			return s, malformedf("Sid must be a string, not %s", sid.kind)
		}
		s.Sid = sid.text
	}
	for _, m := range v.members {
		if !statementElements[m.name] {
			return s, malformedf("unknown statement element %s%s", quote(m.name), suggest.DidYouMean(m.name, statementElementNames))
		}
	}
	// IAM User Guide, "IAM JSON policy element reference": Action/NotAction,
	// Principal/NotPrincipal and Resource/NotResource are mutually exclusive.
	for _, pair := range [][2]string{{"Principal", "NotPrincipal"}, {"Action", "NotAction"}, {"Resource", "NotResource"}} {
		_, a := v.member(pair[0])
		_, b := v.member(pair[1])
		if a && b {
			return s, malformedf("a statement cannot have both %s and %s", pair[0], pair[1])
		}
	}

	effect, ok := v.member("Effect")
	if !ok {
		return s, malformed("the statement has no Effect element")
	}
	if effect.kind != jsonString || (effect.text != string(Allow) && effect.text != string(Deny)) {
		what := effect.kind.String()
		if effect.kind == jsonString {
			what = quote(effect.text)
		}
		return s, malformedf("Effect %s is not valid: it must be \"Allow\" or \"Deny\"", what)
	}
	s.Effect = Effect(effect.text)

	var err error
	_, hasPrincipal := v.member("Principal")
	_, hasNotPrincipal := v.member("NotPrincipal")
	if identity {
		if hasPrincipal || hasNotPrincipal {
			return s, malformed("Policy document should not specify a principal: an identity-based policy applies to the principal it is attached to")
		}
		_, hasResource := v.member("Resource")
		_, hasNotResource := v.member("NotResource")
		if !hasResource && !hasNotResource {
			return s, malformed("the statement has no Resource or NotResource element; IAM requires one in an identity-based policy")
		}
	}
	if identity {
		// No principal to read.
	} else if pv, ok := v.member("Principal"); ok {
		if s.Principal, err = parsePrincipals(pv, "Principal"); err != nil {
			return s, err
		}
	} else if pv, ok := v.member("NotPrincipal"); ok {
		if s.NotPrincipal, err = parsePrincipals(pv, "NotPrincipal"); err != nil {
			return s, err
		}
		if s.NotPrincipal.wildcard() {
			return s, malformed("NotPrincipal cannot be \"*\": the statement would apply to no one")
		}
		// IAM User Guide, "AWS JSON policy elements: NotPrincipal":
		// "NotPrincipal must be used with "Effect":"Deny". Using it with
		// "Effect":"Allow" is not supported."
		if s.Effect != Deny {
			return s, malformed("NotPrincipal can be used only with \"Effect\": \"Deny\"")
		}
	} else {
		// PutKeyPolicy, Policy: "Each statement in the key policy must
		// contain one or more principals."
		return s, malformed("the statement has no Principal or NotPrincipal element; each statement in a key policy must contain one or more principals")
	}

	for _, name := range []string{"Action", "NotAction"} {
		av, ok := v.member(name)
		if !ok {
			continue
		}
		list, err := stringList(av, name)
		if err != nil {
			return s, err
		}
		for _, a := range list {
			if err := checkAction(a, name); err != nil {
				return s, err
			}
		}
		if name == "Action" {
			s.Action = list
		} else {
			s.NotAction = list
		}
	}
	for _, name := range []string{"Resource", "NotResource"} {
		rv, ok := v.member(name)
		if !ok {
			continue
		}
		list, err := stringList(rv, name)
		if err != nil {
			return s, err
		}
		for _, r := range list {
			if r != "*" && !strings.HasPrefix(r, "arn:") {
				// IAM's MalformedPolicyDocument reason for this case is
				// 'Resource ... must be in ARN format or "*".'
				return s, malformedf("%s %s must be in ARN format or \"*\"", name, quote(r))
			}
			if version == Version2012 && strings.Contains(r, "${") {
				return s, malformedf("%s %s uses a policy variable; keypolicy does not support policy variables", name, quote(r))
			}
		}
		if name == "Resource" {
			s.Resource = list
		} else {
			s.NotResource = list
		}
	}
	if cv, ok := v.member("Condition"); ok {
		if s.Conditions, err = parseConditions(cv, version); err != nil {
			return s, err
		}
	}
	return s, nil
}

// stringList reads an element that is a string or a non-empty list of
// strings.
func stringList(v jsonValue, name string) ([]string, error) {
	switch v.kind {
	case jsonString:
		return []string{v.text}, nil
	case jsonArray:
		if len(v.elems) == 0 {
			return nil, malformedf("%s is an empty list", name)
		}
		out := make([]string, 0, len(v.elems))
		for _, e := range v.elems {
			if e.kind != jsonString {
				return nil, malformedf("%s must list strings, not %s", name, e.kind)
			}
			out = append(out, e.text)
		}
		return out, nil
	}
	return nil, malformedf("%s must be a string or a list of strings, not %s", name, v.kind)
}

// checkAction checks the form of an Action entry: "*" or "service:Action",
// where the action part may hold the wildcards "*" and "?". The reasons
// follow IAM's MalformedPolicyDocument messages ("Actions/Conditions must be
// prefaced by a vendor, e.g., iam, sdb, ec2, etc.", "Actions/Condition can
// contain only one colon.", "Vendor X is not valid", as reproduced by
// getmoto/moto iam/policy_validation.py).
func checkAction(a, element string) error {
	if a == "*" {
		return nil
	}
	vendor, name, ok := strings.Cut(a, ":")
	switch {
	case !ok:
		return malformedf("%s %s must be prefaced by a service, e.g. \"kms:Decrypt\"", element, quote(a))
	case strings.Contains(name, ":"):
		return malformedf("%s %s can contain only one colon", element, quote(a))
	}
	if vendor == "" {
		return malformedf("%s %s: service prefix is empty", element, quote(a))
	}
	for _, c := range vendor {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return malformedf("%s %s: service %s is not valid", element, quote(a), quote(vendor))
		}
	}
	if name == "" {
		return malformedf("%s %s names no action", element, quote(a))
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '*' || c == '?') {
			return malformedf("%s %s: action name %s is not valid", element, quote(a), quote(name))
		}
	}
	return nil
}
