package keypolicy

import (
	"fmt"
	"slices"
	"strings"
)

// Grant is a KMS grant as authorization sees it: the grantee may call the
// grant's operations on the key, within its constraints, whatever the key
// policy's Allow statements say (KMS Developer Guide, "Grants in AWS KMS").
type Grant struct {
	ID   string `json:"grantId"`
	Name string `json:"name,omitempty"`
	// GranteePrincipal is the ARN of the principal the grant is for.
	GranteePrincipal string `json:"granteePrincipal"`
	// Operations are grant operations as KMS names them ("Decrypt",
	// "ReEncryptFrom", "CreateGrant", ...), without "kms:".
	Operations []string `json:"operations"`
	// EncryptionContextEquals and EncryptionContextSubset are the grant
	// constraints (KMS API reference, GrantConstraints); nil when absent.
	EncryptionContextEquals map[string]string `json:"encryptionContextEquals,omitempty"`
	EncryptionContextSubset map[string]string `json:"encryptionContextSubset,omitempty"`
}

// IdentityPolicy is one identity-based (IAM) policy of the caller, parsed
// with ParseIdentity.
type IdentityPolicy struct {
	// Name says where the policy comes from, for explanations.
	Name   string
	Policy *Policy
}

// Input is everything KMS consults to authorize one request on a key: the
// key policy, the caller's identity-based policies and the key's grants
// (KMS Developer Guide, "KMS key access and permissions": "No AWS principal
// has any permissions to a KMS key unless that permission is provided
// explicitly and never denied").
type Input struct {
	Request Request
	// KeyPolicy is the key's policy. nil means the resource has no
	// resource-based policy (an alias): the identity-based policies alone
	// decide.
	KeyPolicy *Policy
	// IdentityKnown says whether Identity lists the caller's identity-based
	// policies. When it is false and the decision depends on them, the
	// Authorization is Conditional.
	IdentityKnown bool
	Identity      []IdentityPolicy
	// Grants are the key's grants; those for other principals or
	// operations do not apply.
	Grants []Grant
	// EncryptionContext is the request's encryption context, which grant
	// constraints are compared with. ConstraintsApply says whether the
	// operation takes an encryption context at all: "Grant constraints are
	// not applied to operations that do not support an encryption context,
	// such as cryptographic operations with asymmetric KMS keys and
	// management operations, such as DescribeKey or RetireGrant" (KMS API
	// reference, GrantConstraints).
	EncryptionContext map[string]string
	ConstraintsApply  bool
}

// Outcome says which layer decided.
type Outcome string

// The outcomes of Authorize.
const (
	// OutcomeKeyPolicy: the key policy allows the caller directly.
	OutcomeKeyPolicy Outcome = "allowed-by-key-policy"
	// OutcomeIAM: the key policy delegates to IAM (or there is none) and an
	// identity-based policy allows.
	OutcomeIAM Outcome = "allowed-by-iam"
	// OutcomeGrant: a grant allows.
	OutcomeGrant Outcome = "allowed-by-grant"
	// OutcomeNeedsIAM: the key policy delegates to IAM and the identity
	// policies are not known: allowed only if one of them allows it.
	OutcomeNeedsIAM Outcome = "allowed-only-if-iam-allows"
	// OutcomeDenyKeyPolicy and OutcomeDenyIAM: an explicit Deny.
	OutcomeDenyKeyPolicy Outcome = "explicit-deny-in-key-policy"
	OutcomeDenyIAM       Outcome = "explicit-deny-in-identity-policy"
	// OutcomeImplicitDeny: nothing allows.
	OutcomeImplicitDeny Outcome = "implicit-deny"
)

// Authorization is KMS's answer to a request on a key, layer by layer.
type Authorization struct {
	// Allowed is true when the request is allowed. It is false for a
	// Conditional answer.
	Allowed bool `json:"allowed"`
	// Conditional is true for OutcomeNeedsIAM.
	Conditional bool    `json:"conditional,omitempty"`
	Outcome     Outcome `json:"outcome"`
	Request     Request `json:"request"`
	// CrossAccount is true when the caller's account is not the key's:
	// then the caller's identity-based policies must allow the request as
	// well as the key policy (IAM User Guide, "Cross-account policy
	// evaluation logic").
	CrossAccount bool `json:"crossAccount,omitempty"`
	// KeyPolicy is the key policy's decision; nil when there is none.
	KeyPolicy *Decision `json:"keyPolicy,omitempty"`
	// IdentityKnown, Identity: the identity-based policies' decisions.
	IdentityKnown bool               `json:"identityKnown"`
	Identity      []IdentityDecision `json:"identity,omitempty"`
	// Grants has one result per grant of the key.
	Grants []GrantResult `json:"grants,omitempty"`
}

// IdentityDecision is one identity-based policy's decision.
type IdentityDecision struct {
	Name     string   `json:"name"`
	Decision Decision `json:"decision"`
}

// GrantResult says how one grant fared.
type GrantResult struct {
	Grant              Grant `json:"grant"`
	GranteeMatched     bool  `json:"granteeMatched"`
	OperationMatched   bool  `json:"operationMatched"`
	ConstraintsMatched bool  `json:"constraintsMatched"`
	Applies            bool  `json:"applies"`
}

// Authorize decides a request the way KMS does (KMS Developer Guide,
// "Authentication and access control for AWS KMS"; IAM User Guide, "Policy
// evaluation logic"):
//
//  1. an explicit Deny in the key policy or in an identity-based policy
//     denies, whatever else allows (grants included);
//  2. the key policy allows when an Allow statement names the caller
//     directly (the role, user, session, the account's root user, "*");
//  3. when it only names the caller's account, it delegates: an
//     identity-based policy of the caller must allow too ("Unless the key
//     policy explicitly allows it, you cannot use IAM policies to allow
//     access to a KMS key", KMS Developer Guide, "Key policies"); a caller
//     from another account always needs both;
//  4. otherwise a grant for the caller that lists the operation, and whose
//     constraints the request meets, allows;
//  5. otherwise the request is denied (implicit deny).
//
// A grant whose grantee is an account admits only that account's root user
// here (stricter than KMS, which lets the account's IAM policies delegate
// the grant further).
func Authorize(in Input) Authorization {
	req := in.Request
	a := Authorization{Request: req, IdentityKnown: in.IdentityKnown}
	caller := parseCaller(req.Principal)
	if acct := resourceAccount(req.Resource); acct != "" && caller.account != "" && acct != caller.account {
		a.CrossAccount = true
	}
	if in.KeyPolicy != nil {
		d := in.KeyPolicy.Evaluate(req)
		a.KeyPolicy = &d
	}
	// IAM policies do not restrict an account's root user.
	iamAllows, iamDenies := caller.kind == kindAccount, false
	if in.IdentityKnown && caller.kind != kindAccount {
		for _, ip := range in.Identity {
			d := ip.Policy.Evaluate(req)
			a.Identity = append(a.Identity, IdentityDecision{Name: ip.Name, Decision: d})
			iamDenies = iamDenies || d.ExplicitDeny
			iamAllows = iamAllows || d.Allowed
		}
	}
	grantAllows := false
	for _, g := range in.Grants {
		r := evaluateGrant(g, caller, req.Action, in.EncryptionContext, in.ConstraintsApply)
		a.Grants = append(a.Grants, r)
		grantAllows = grantAllows || r.Applies
	}

	switch {
	case a.KeyPolicy != nil && a.KeyPolicy.ExplicitDeny:
		a.Outcome = OutcomeDenyKeyPolicy
		return a
	case iamDenies:
		a.Outcome = OutcomeDenyIAM
		return a
	}
	rootCaller := caller.kind == kindAccount
	if a.KeyPolicy == nil {
		// No resource-based policy: IAM alone, within the account.
		switch {
		case rootCaller && !a.CrossAccount:
			a.Outcome = OutcomeIAM
		case !in.IdentityKnown:
			a.Outcome = OutcomeNeedsIAM
		case iamAllows && !a.CrossAccount:
			a.Outcome = OutcomeIAM
		default:
			a.Outcome = OutcomeImplicitDeny
		}
	} else if a.KeyPolicy.Allowed {
		needIAM := a.KeyPolicy.Delegated || a.CrossAccount
		switch {
		case !needIAM:
			a.Outcome = OutcomeKeyPolicy
		case iamAllows:
			a.Outcome = OutcomeIAM
		case !in.IdentityKnown && !rootCaller:
			a.Outcome = OutcomeNeedsIAM
		default:
			a.Outcome = OutcomeImplicitDeny
		}
	} else {
		a.Outcome = OutcomeImplicitDeny
	}
	if (a.Outcome == OutcomeImplicitDeny || a.Outcome == OutcomeNeedsIAM) && grantAllows {
		a.Outcome = OutcomeGrant
	}
	switch a.Outcome {
	case OutcomeKeyPolicy, OutcomeIAM, OutcomeGrant:
		a.Allowed = true
	case OutcomeNeedsIAM:
		a.Conditional = true
	}
	return a
}

// resourceAccount is the account field of an ARN, or "".
func resourceAccount(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !isAccountID(parts[4]) {
		return ""
	}
	return parts[4]
}

// evaluateGrant decides whether g allows action ("kms:Decrypt") for caller.
func evaluateGrant(g Grant, caller identity, action string, ec map[string]string, constraintsApply bool) GrantResult {
	r := GrantResult{Grant: g, ConstraintsMatched: true}
	r.GranteeMatched = PrincipalNames(g.GranteePrincipal, caller.raw)
	op, ok := cutPrefixFold(action, "kms:")
	r.OperationMatched = ok && slices.Contains(g.Operations, op)
	if constraintsApply {
		r.ConstraintsMatched = constraintsHold(g, ec)
	}
	r.Applies = r.GranteeMatched && r.OperationMatched && r.ConstraintsMatched
	return r
}

// constraintsHold applies a grant's encryption context constraints: "in a
// grant constraint, the key in each key-value pair is not case sensitive,
// but the value is case sensitive" (KMS API reference, GrantConstraints).
// EncryptionContextEquals needs exactly its pairs; EncryptionContextSubset
// needs its pairs among the request's.
func constraintsHold(g Grant, ec map[string]string) bool {
	lookup := func(k string) (string, bool) {
		for rk, rv := range ec {
			if strings.EqualFold(rk, k) {
				return rv, true
			}
		}
		return "", false
	}
	if g.EncryptionContextEquals != nil {
		if len(ec) != len(g.EncryptionContextEquals) {
			return false
		}
		for k, v := range g.EncryptionContextEquals {
			if rv, ok := lookup(k); !ok || rv != v {
				return false
			}
		}
	}
	for k, v := range g.EncryptionContextSubset {
		if rv, ok := lookup(k); !ok || rv != v {
			return false
		}
	}
	return true
}

// DecidingGrant returns the grant that allowed the request (OutcomeGrant),
// or nil.
func (a Authorization) DecidingGrant() *Grant {
	if a.Outcome != OutcomeGrant {
		return nil
	}
	for i := range a.Grants {
		if a.Grants[i].Applies {
			return &a.Grants[i].Grant
		}
	}
	return nil
}

// firstApplying returns the first statement of d that applies with effect.
func firstApplying(d *Decision, effect Effect) *StatementResult {
	if d == nil {
		return nil
	}
	for i := range d.Statements {
		if r := &d.Statements[i]; r.Applies && r.Effect == effect {
			return r
		}
	}
	return nil
}

// Summary is the verdict in one line, naming the statement or grant that
// decided, e.g.
//
//	DENIED (explicit deny): statement 3 (Sid "DenyUnlessPCR1Matches") of the key policy denies it
func (a Authorization) Summary() string {
	switch a.Outcome {
	case OutcomeKeyPolicy, OutcomeIAM, OutcomeGrant:
		return "ALLOWED: " + a.reason()
	case OutcomeNeedsIAM:
		return "ALLOWED only if an IAM policy also allows it: " + a.reason()
	case OutcomeDenyKeyPolicy, OutcomeDenyIAM:
		return "DENIED (explicit deny): " + a.reason()
	}
	return "DENIED (implicit deny): " + a.reason()
}

// Reason says in one line why the request was decided as it was, for logs:
// which layer and statement (or grant) decided and, for a Deny, which
// conditions held; for an implicit deny, the Allow statement that came
// closest and the condition that failed it. It never holds more of the
// request than its principal, action, resource and condition values (PCRs,
// encryption context), which KMS itself records in CloudTrail.
func (a Authorization) Reason() string {
	return a.reason()
}

func (a Authorization) reason() string {
	switch a.Outcome {
	case OutcomeKeyPolicy:
		for _, r := range a.KeyPolicy.Statements {
			if r.Applies && r.Effect == Allow && !r.Delegates {
				return statementName(r) + " of the key policy allows it"
			}
		}
		return statementName(*firstApplying(a.KeyPolicy, Allow)) + " of the key policy allows it"
	case OutcomeIAM:
		who := a.allowingIdentity()
		if a.KeyPolicy == nil {
			return who + " allows it (the resource has no resource-based policy)"
		}
		s := firstApplying(a.KeyPolicy, Allow)
		if a.CrossAccount {
			return fmt.Sprintf("%s of the key policy allows it and, the caller being in another account, %s allows it too", statementName(*s), who)
		}
		if who == "" { // the account's root user: IAM does not apply
			return fmt.Sprintf("%s of the key policy allows the caller's account, whose root user the caller is", statementName(*s))
		}
		return fmt.Sprintf("%s of the key policy delegates to IAM, and %s allows it", statementName(*s), who)
	case OutcomeGrant:
		g := a.DecidingGrant()
		return fmt.Sprintf("grant %s allows it (grantee %s, operations %s)", grantName(*g), g.GranteePrincipal, strings.Join(g.Operations, ", "))
	case OutcomeNeedsIAM:
		if a.KeyPolicy == nil {
			return "the resource has no resource-based policy, so the caller's identity-based (IAM) policies decide"
		}
		s := firstApplying(a.KeyPolicy, Allow)
		if a.CrossAccount {
			return fmt.Sprintf("%s of the key policy allows it, but the caller is in another account, whose identity-based (IAM) policies must allow it too", statementName(*s))
		}
		return fmt.Sprintf("%s of the key policy allows the caller's account, which delegates the decision to the caller's identity-based (IAM) policies", statementName(*s))
	case OutcomeDenyKeyPolicy:
		s := firstApplying(a.KeyPolicy, Deny)
		return statementName(*s) + " of the key policy denies it" + heldConditions(*s)
	case OutcomeDenyIAM:
		for _, id := range a.Identity {
			if s := firstApplying(&id.Decision, Deny); s != nil {
				return fmt.Sprintf("%s of the identity-based policy %s denies it%s", statementName(*s), quote(id.Name), heldConditions(*s))
			}
		}
	}
	// Implicit deny: say what came closest.
	if a.KeyPolicy != nil && a.KeyPolicy.Allowed {
		s := firstApplying(a.KeyPolicy, Allow)
		if a.CrossAccount {
			return fmt.Sprintf("%s of the key policy allows it, but no identity-based policy of the caller (in another account) does", statementName(*s))
		}
		return fmt.Sprintf("%s of the key policy delegates to IAM, and no identity-based policy of the caller allows it", statementName(*s))
	}
	var b strings.Builder
	if a.KeyPolicy == nil {
		b.WriteString("no identity-based policy of the caller allows it")
	} else {
		b.WriteString("no statement of the key policy allows it")
		if near := nearestMiss(a.KeyPolicy); near != "" {
			b.WriteString("; " + near)
		}
	}
	if len(a.Grants) > 0 {
		b.WriteString(", and no grant does")
	}
	return b.String()
}

// allowingIdentity names the first identity-based policy statement that
// allows, or "".
func (a Authorization) allowingIdentity() string {
	for _, id := range a.Identity {
		if s := firstApplying(&id.Decision, Allow); s != nil {
			return fmt.Sprintf("%s of the identity-based policy %s", statementName(*s), quote(id.Name))
		}
	}
	return ""
}

// heldConditions describes the conditions of an applying Deny, e.g. ":
// condition StringNotEqualsIgnoreCase kms:RecipientAttestation:ImageSha384
// holds (the request has no value for it)".
func heldConditions(r StatementResult) string {
	if len(r.Conditions) == 0 {
		return ""
	}
	parts := make([]string, 0, len(r.Conditions))
	for _, c := range r.Conditions {
		what := "the request has no value for it"
		if c.KeyPresent {
			what = "the request has " + values("value", c.RequestValues)
		}
		parts = append(parts, fmt.Sprintf("condition %s %s holds (%s)", c.Operator, c.Key, what))
	}
	return ": " + strings.Join(parts, "; ")
}

// nearestMiss names the first Allow statement whose principal, action and
// resource match but whose conditions fail, and its first failed
// condition; "" when there is none.
func nearestMiss(d *Decision) string {
	for _, r := range d.Statements {
		if r.Effect != Allow || r.Ineffective != "" || !r.PrincipalMatched || !r.ActionMatched || !r.ResourceMatched {
			continue
		}
		for _, c := range r.Conditions {
			if !c.Matched {
				return fmt.Sprintf("%s would, but its condition %s %s fails: %s", statementName(r), c.Operator, c.Key, conditionFailure(c))
			}
		}
	}
	return ""
}

func grantName(g Grant) string {
	if g.Name != "" {
		return fmt.Sprintf("%s (name %s)", g.ID, quote(g.Name))
	}
	return g.ID
}

// AccessDeniedMessage returns the message of the AccessDeniedException KMS
// answers a refused request with (see Decision.AccessDeniedMessage for the
// format), or "" when the request is allowed or the answer is conditional.
// The policy type is "resource-based" when the key policy decided and
// "identity-based" when an IAM policy denied or none allowed what the key
// policy delegated.
func (a Authorization) AccessDeniedMessage() string {
	req := a.Request
	switch a.Outcome {
	case OutcomeDenyKeyPolicy:
		return fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s with an explicit deny in a resource-based policy", req.Principal, req.Action, req.Resource)
	case OutcomeDenyIAM:
		return fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s with an explicit deny in an identity-based policy", req.Principal, req.Action, req.Resource)
	case OutcomeImplicitDeny:
		kind := "resource-based"
		if a.KeyPolicy == nil || a.KeyPolicy.Allowed {
			kind = "identity-based"
		}
		return fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s because no %s policy allows the %s action", req.Principal, req.Action, req.Resource, kind, req.Action)
	}
	return ""
}

// Explain describes the authorization in several lines: Summary, the
// request, then each layer: the key policy's statements, the identity-based
// policies' statements, and the grants.
func (a Authorization) Explain() string {
	var b strings.Builder
	b.WriteString(a.Summary() + "\n")
	req := a.Request
	fmt.Fprintf(&b, "request: principal %s, action %s, resource %s\n", orNone(req.Principal), orNone(req.Action), orNone(req.Resource))
	if a.KeyPolicy != nil {
		b.WriteString("key policy:\n")
		writeStatements(&b, a.KeyPolicy, "  ")
	}
	switch {
	case parseCaller(req.Principal).kind == kindAccount:
		b.WriteString("identity-based policies: none apply to an account's root user\n")
	case !a.IdentityKnown:
		b.WriteString("identity-based policies of the caller: not given\n")
	case len(a.Identity) == 0:
		b.WriteString("identity-based policies of the caller: none (IAM allows nothing)\n")
	}
	for _, id := range a.Identity {
		fmt.Fprintf(&b, "identity-based policy %s:\n", quote(id.Name))
		writeStatements(&b, &id.Decision, "  ")
	}
	for _, g := range a.Grants {
		verdict := "does not apply"
		if g.Applies {
			verdict = "applies"
		}
		fmt.Fprintf(&b, "grant %s: %s\n", grantName(g.Grant), verdict)
		fmt.Fprintf(&b, "  grantee %s: %s\n", g.Grant.GranteePrincipal, matchWord(g.GranteeMatched))
		fmt.Fprintf(&b, "  operations %s: %s\n", strings.Join(g.Grant.Operations, ", "), matchWord(g.OperationMatched))
		fmt.Fprintf(&b, "  constraints: %s\n", matchWord(g.ConstraintsMatched))
	}
	return b.String()
}
