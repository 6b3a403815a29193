package keypolicy

import (
	"fmt"
	"strings"
)

// identityKind is what an AWS principal string names.
type identityKind uint8

const (
	kindUnknown       identityKind = iota // not a principal we can name (anonymous, malformed)
	kindWildcard                          // "*": everyone
	kindAccount                           // arn:aws:iam::ACCT:root or a bare 12-digit account ID
	kindUser                              // arn:aws:iam::ACCT:user/PATH/NAME
	kindRole                              // arn:aws:iam::ACCT:role/PATH/NAME
	kindAssumedRole                       // arn:aws:sts::ACCT:assumed-role/ROLE/SESSION
	kindFederatedUser                     // arn:aws:sts::ACCT:federated-user/NAME
	kindUniqueID                          // AIDA…/AROA…: a deleted identity, never matches
	kindService                           // a service principal, e.g. logs.amazonaws.com
)

// identity is a parsed principal: an entry of a Principal element, or the
// caller of a request.
type identity struct {
	raw       string
	kind      identityKind
	partition string // "" for a bare account ID
	account   string
	roleName  string // kindRole: last path segment; kindAssumedRole: the role
}

// accountIDLen is the length of an AWS account ID: "A 12-digit number, such
// as 123456789012" (AWS Account Management reference guide, "View AWS account
// identifiers").
const accountIDLen = 12

func isAccountID(s string) bool {
	if len(s) != accountIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isPartition(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// isUniqueID reports whether s looks like an IAM unique ID. When the IAM user
// or role a resource-based policy names is deleted, AWS shows its unique ID
// (AIDA… for users, AROA… for roles) in place of the ARN, and the entry no
// longer matches anyone (IAM User Guide, "AWS JSON policy elements:
// Principal", IAM role principals).
func isUniqueID(s string) bool {
	if len(s) < 16 || len(s) > 128 || !(strings.HasPrefix(s, "AIDA") || strings.HasPrefix(s, "AROA")) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// parseIdentityARN parses an IAM or STS principal ARN:
//
//	arn:PARTITION:iam::ACCOUNT:root
//	arn:PARTITION:iam::ACCOUNT:user/[PATH/]NAME
//	arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME
//	arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION
//	arn:PARTITION:sts::ACCOUNT:federated-user/NAME
//
// (IAM User Guide, "IAM identifiers", ARNs). An assumed-role ARN carries the
// role's name without its path: the role arn:aws:iam::A:role/p/r is assumed
// as arn:aws:sts::A:assumed-role/r/SESSION.
func parseIdentityARN(s string) (identity, error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return identity{}, fmt.Errorf("%s is not an ARN", quote(s))
	}
	partition, service, region, account, resource := parts[1], parts[2], parts[3], parts[4], parts[5]
	if !isPartition(partition) {
		return identity{}, fmt.Errorf("%s has no valid partition", quote(s))
	}
	if region != "" {
		return identity{}, fmt.Errorf("%s names a region; IAM and STS principals have none", quote(s))
	}
	if !isAccountID(account) {
		return identity{}, fmt.Errorf("%s does not name a 12-digit account", quote(s))
	}
	id := identity{raw: s, partition: partition, account: account}
	switch service {
	case "iam":
		switch {
		case resource == "root":
			id.kind = kindAccount
		case strings.HasPrefix(resource, "user/") && validPath(resource[len("user/"):]):
			id.kind = kindUser
		case strings.HasPrefix(resource, "role/") && validPath(resource[len("role/"):]):
			id.kind = kindRole
			name := resource[len("role/"):]
			id.roleName = name[strings.LastIndexByte(name, '/')+1:]
		default:
			return identity{}, fmt.Errorf("%s is not an IAM user, role or account root", quote(s))
		}
	case "sts":
		switch {
		case strings.HasPrefix(resource, "assumed-role/"):
			rest := resource[len("assumed-role/"):]
			role, session, ok := strings.Cut(rest, "/")
			if !ok || role == "" || session == "" || strings.Contains(session, "/") {
				return identity{}, fmt.Errorf("%s is not an assumed-role session ARN (assumed-role/ROLE/SESSION)", quote(s))
			}
			id.kind = kindAssumedRole
			id.roleName = role
		case strings.HasPrefix(resource, "federated-user/") && len(resource) > len("federated-user/"):
			id.kind = kindFederatedUser
		default:
			return identity{}, fmt.Errorf("%s is not an STS assumed-role or federated-user ARN", quote(s))
		}
	default:
		return identity{}, fmt.Errorf("%s is not an IAM or STS ARN", quote(s))
	}
	return id, nil
}

// validPath reports whether p is [PATH/]NAME with a non-empty name and no
// empty segments.
func validPath(p string) bool {
	if p == "" {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" {
			return false
		}
	}
	return true
}

// parsePolicyAWSPrincipal parses one value of a Principal's "AWS" entry.
func parsePolicyAWSPrincipal(s string) (identity, error) {
	switch {
	case s == "*":
		return identity{raw: s, kind: kindWildcard}, nil
	case strings.ContainsAny(s, "*?"):
		// IAM User Guide, "AWS JSON policy elements: Principal": "You cannot
		// use a wildcard to match part of a principal name or ARN."
		return identity{}, fmt.Errorf("%s uses a wildcard; only \"*\" on its own may", quote(s))
	case isAccountID(s):
		return identity{raw: s, kind: kindAccount, account: s}, nil
	case isUniqueID(s):
		return identity{raw: s, kind: kindUniqueID}, nil
	}
	return parseIdentityARN(s)
}

// parseCaller interprets Request.Principal. It never fails: a caller that
// is not an IAM/STS ARN or an account ID is taken as a service principal
// name (which only a matching "Service" entry or "*" admits), and the empty
// string is an anonymous caller.
func parseCaller(s string) identity {
	switch {
	case s == "":
		return identity{kind: kindUnknown}
	case isAccountID(s):
		return identity{raw: s, kind: kindAccount, account: s}
	case strings.HasPrefix(s, "arn:"):
		id, err := parseIdentityARN(s)
		if err != nil {
			return identity{raw: s, kind: kindUnknown}
		}
		return id
	default:
		return identity{raw: s, kind: kindService}
	}
}

// Principals is the value of a Principal or NotPrincipal element.
type Principals struct {
	// Wildcard is set for "Principal": "*" (everyone). {"AWS": "*"} is kept
	// in AWS as "*" and means the same.
	Wildcard bool `json:"wildcard,omitempty"`
	// AWS lists the "AWS" entries as written: ARNs, account IDs or "*".
	AWS []string `json:"aws,omitempty"`
	// Service lists the "Service" entries, e.g. "logs.amazonaws.com".
	Service []string `json:"service,omitempty"`

	aws []identity // AWS, parsed
}

// parsePrincipals parses a Principal or NotPrincipal element.
func parsePrincipals(v jsonValue, element string) (*Principals, error) {
	// The refusal reason KMS gives for principals it does not accept is
	// "Policy contains a statement with one or more invalid principals."
	// (MalformedPolicyDocumentException, as reported for PutKeyPolicy in
	// e.g. aws-samples/siem-on-amazon-opensearch-service issue 32).
	invalid := func(why string) error {
		return malformed("Policy contains a statement with one or more invalid principals: " + why)
	}
	p := &Principals{}
	switch v.kind {
	case jsonString:
		if v.text != "*" {
			return nil, invalid(fmt.Sprintf("%s as a string must be \"*\", not %s; name principals as {\"AWS\": ...}", element, quote(v.text)))
		}
		p.Wildcard = true
		return p, nil
	case jsonObject:
	default:
		return nil, invalid(fmt.Sprintf("%s must be \"*\" or an object, not %s", element, v.kind))
	}
	if len(v.members) == 0 {
		return nil, invalid(element + " names no principal")
	}
	for _, m := range v.members {
		values, err := stringList(m.value, element+"."+m.name)
		if err != nil {
			return nil, invalid(err.Error())
		}
		switch m.name {
		case "AWS":
			for _, s := range values {
				id, err := parsePolicyAWSPrincipal(s)
				if err != nil {
					return nil, invalid(err.Error())
				}
				p.AWS = append(p.AWS, s)
				p.aws = append(p.aws, id)
			}
		case "Service":
			for _, s := range values {
				if s == "" || strings.ContainsAny(s, "*? \t\r\n:/") || !strings.Contains(s, ".") {
					return nil, invalid(fmt.Sprintf("%s is not a service principal name such as \"logs.amazonaws.com\"", quote(s)))
				}
				p.Service = append(p.Service, s)
			}
		default:
			// KMS Developer Guide, "Elements in a key policy": the
			// principals of a key policy are AWS accounts, IAM users, IAM
			// roles, assumed-role sessions and AWS services.
			return nil, invalid(fmt.Sprintf("principal type %s is not supported in key policies (use \"AWS\" or \"Service\")", quote(m.name)))
		}
	}
	return p, nil
}

// wildcard reports whether p admits everyone.
func (p *Principals) wildcard() bool {
	if p.Wildcard {
		return true
	}
	for _, id := range p.aws {
		if id.kind == kindWildcard {
			return true
		}
	}
	return false
}

// match reports whether caller is one of the principals of a Principal
// element, the way KMS matches them, and whether it is named directly:
//   - "*" matches everyone, directly;
//   - an account (root ARN or bare ID) matches the account's root user
//     directly and every other principal of the account by delegation: "the
//     key policy gives the AWS account full access to the KMS key ... and
//     enables IAM policies" (KMS Developer Guide, "Default key policy",
//     Allows access to the AWS account and enables IAM policies), so KMS
//     also requires an IAM policy of the caller to allow the action;
//   - a role ARN matches the role and every session of it, directly;
//   - a user, session or federated-user ARN matches exactly that principal;
//   - a service name matches that service.
func (p *Principals) match(c identity) (matched, direct bool) {
	if p.wildcard() {
		return true, true
	}
	for _, e := range p.aws {
		if !e.admits(c) {
			continue
		}
		matched = true
		if e.kind != kindAccount || c.kind == kindAccount {
			return true, true
		}
	}
	if matched {
		return true, false
	}
	if c.kind == kindService {
		for _, s := range p.Service {
			if s == c.raw {
				return true, true
			}
		}
	}
	return false, false
}

// admits reports whether the policy entry e matches the caller c.
func (e identity) admits(c identity) bool {
	switch e.kind {
	case kindWildcard:
		return true
	case kindAccount:
		return c.account != "" && c.account == e.account &&
			(e.partition == "" || c.partition == "" || e.partition == c.partition)
	case kindRole:
		if c.raw == e.raw {
			return true
		}
		// IAM User Guide, "AWS JSON policy elements: Principal", IAM role
		// principals: a role ARN in a resource-based policy grants the
		// permission to the role's assumed-role sessions. Sessions name the
		// role without its path (see parseIdentityARN).
		return c.kind == kindAssumedRole && c.partition == e.partition &&
			c.account == e.account && c.roleName == e.roleName
	case kindUser, kindAssumedRole, kindFederatedUser:
		return c.raw == e.raw
	default: // kindUniqueID: a deleted identity matches no one
		return false
	}
}

// excludes reports whether a NotPrincipal element exempts caller from its
// statement. The IAM User Guide ("AWS JSON policy elements: NotPrincipal")
// says AWS may check each level of the caller's identity — the account, then
// the role, then the assumed-role session — and that a level missing from
// NotPrincipal leaves the Deny in force. keypolicy takes that strictly: the
// caller is exempt only when NotPrincipal names its account and, for users
// and sessions, the user or session itself and, for sessions, the role.
func (p *Principals) excludes(c identity) bool {
	named := func(pred func(identity) bool) bool {
		for _, e := range p.aws {
			if pred(e) {
				return true
			}
		}
		return false
	}
	account := func() bool {
		return named(func(e identity) bool {
			return e.kind == kindAccount && e.account == c.account &&
				(e.partition == "" || e.partition == c.partition)
		})
	}
	exact := func() bool {
		return named(func(e identity) bool { return e.kind != kindAccount && e.raw == c.raw })
	}
	switch c.kind {
	case kindService:
		for _, s := range p.Service {
			if s == c.raw {
				return true
			}
		}
		return false
	case kindAccount:
		return account()
	case kindUser, kindFederatedUser, kindRole:
		return account() && exact()
	case kindAssumedRole:
		role := named(func(e identity) bool {
			return e.kind == kindRole && e.partition == c.partition &&
				e.account == c.account && e.roleName == c.roleName
		})
		return account() && role && exact()
	default:
		return false
	}
}

// PrincipalNames reports whether named, a principal ARN or account ID as a
// grant names its grantee or retiring principal, names caller directly: the
// same user or session, the role of a session, or the root user of a named
// account. "*" names no one here.
func PrincipalNames(named, caller string) bool {
	e, err := parsePolicyAWSPrincipal(named)
	if err != nil || e.kind == kindWildcard {
		return false
	}
	c := parseCaller(caller)
	return e.admits(c) && (e.kind != kindAccount || c.kind == kindAccount)
}
