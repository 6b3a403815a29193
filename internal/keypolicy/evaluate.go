package keypolicy

import (
	"slices"
	"strings"
	"unicode/utf8"
)

// Request is one authorisation question: may Principal perform Action on
// Resource, given the condition keys in Context?
type Request struct {
	// Principal is the caller's ARN, e.g.
	// arn:aws:iam::111122223333:user/alice,
	// arn:aws:sts::111122223333:assumed-role/r/session or
	// arn:aws:iam::111122223333:root; a bare account ID stands for the
	// account root and a name such as "logs.amazonaws.com" for a service.
	Principal string `json:"principal"`
	// Action is the KMS action, e.g. "kms:Decrypt".
	Action string `json:"action"`
	// Resource is the key ARN, arn:aws:kms:REGION:ACCOUNT:key/ID.
	Resource string `json:"resource"`
	// Context maps condition keys to their values in the request. Keys are
	// compared case-insensitively, as IAM does ("Context key names are not
	// case-sensitive", IAM User Guide, "IAM JSON policy elements:
	// Condition"); a key present with no values counts as absent. The caller
	// fills every key it wants conditions to see, including kms:CallerAccount
	// and aws:PrincipalArn (CallerContext builds those); keypolicy derives
	// nothing from Principal on its own.
	Context map[string][]string `json:"context,omitempty"`
}

// Decision is the answer of one policy to a Request, with the per-statement
// detail that Explain turns into words. For a key policy it is not yet KMS's
// answer: a statement that names the caller's account only delegates to the
// caller's IAM policies (Delegated), and grants may allow what the policy
// does not. Authorize combines the layers.
type Decision struct {
	// Allowed is true when some Allow statement applies and no Deny does.
	// When Delegated is also true, the policy allows the request only if an
	// IAM policy of the caller allows it too.
	Allowed bool `json:"allowed"`
	// Delegated is true when every Allow statement that applies names the
	// caller only through its account (see StatementResult.Delegates).
	Delegated bool `json:"delegated,omitempty"`
	// ExplicitDeny is true when a Deny statement applies.
	ExplicitDeny bool `json:"explicitDeny"`
	// Statements has one result per policy statement, in policy order.
	Statements []StatementResult `json:"statements"`
	// Request is the request that was evaluated.
	Request Request `json:"request"`
}

// StatementResult says how one statement fared against a request.
type StatementResult struct {
	Index  int    `json:"index"`
	Sid    string `json:"sid,omitempty"`
	Effect Effect `json:"effect"`
	// Ineffective is why the statement can never apply (Statement.Ineffective),
	// or "".
	Ineffective string `json:"ineffective,omitempty"`
	// PrincipalMatched, ActionMatched and ResourceMatched say whether the
	// request's principal, action and resource fall under the statement
	// (taking NotPrincipal, NotAction and NotResource into account). The
	// statements of an identity-based policy have no principal and match
	// the principal they are attached to.
	PrincipalMatched bool `json:"principalMatched"`
	// Delegates is true when the principal matched only because the
	// statement names the caller's account (and the caller is not the
	// account's root user): KMS then requires an IAM policy of the caller
	// to allow the action as well.
	Delegates       bool `json:"delegates,omitempty"`
	ActionMatched   bool `json:"actionMatched"`
	ResourceMatched bool `json:"resourceMatched"`
	// ConditionsMatched is true when every condition holds (or there are
	// none).
	ConditionsMatched bool `json:"conditionsMatched"`
	// Conditions has one result per condition, in policy order. Every
	// condition is evaluated, even after one fails, so an explanation can
	// list them all.
	Conditions []ConditionResult `json:"conditions,omitempty"`
	// Applies is true when the statement's Effect takes part in the
	// decision: principal, action, resource and conditions all match.
	Applies bool `json:"applies"`
}

// ConditionResult is how one condition (one operator and one key) fared.
type ConditionResult struct {
	// Operator and Key are as written in the policy.
	Operator string `json:"operator"`
	Key      string `json:"key"`
	// PolicyValues are the values in the policy.
	PolicyValues []string `json:"policyValues"`
	// RequestValues are the values the request context had for the key (nil
	// when it had none).
	RequestValues []string `json:"requestValues,omitempty"`
	// KeyPresent says whether the request context had the key with at least
	// one value.
	KeyPresent bool `json:"keyPresent"`
	// Matched says whether the condition holds.
	Matched bool `json:"matched"`
}

// Evaluate decides req against the policy alone with the IAM evaluation
// logic of a single policy: an applicable Deny denies (explicit deny),
// otherwise an applicable Allow allows (Delegated when it only names the
// caller's account), otherwise the request is denied (implicit deny). A nil
// policy denies everything.
func (p *Policy) Evaluate(req Request) Decision {
	d := Decision{Request: req}
	if p == nil {
		return d
	}
	caller := parseCaller(req.Principal)
	d.Statements = make([]StatementResult, len(p.Statements))
	allowed, direct := false, false
	for i := range p.Statements {
		r := p.Statements[i].evaluate(i, caller, req)
		d.Statements[i] = r
		if !r.Applies {
			continue
		}
		if r.Effect == Deny {
			d.ExplicitDeny = true
		} else {
			allowed = true
			direct = direct || !r.Delegates
		}
	}
	d.Allowed = allowed && !d.ExplicitDeny
	d.Delegated = d.Allowed && !direct
	return d
}

func (s *Statement) evaluate(index int, caller identity, req Request) StatementResult {
	r := StatementResult{
		Index:       index,
		Sid:         s.Sid,
		Effect:      s.Effect,
		Ineffective: s.Ineffective(),
	}
	switch {
	case s.Principal != nil:
		var direct bool
		r.PrincipalMatched, direct = s.Principal.match(caller)
		r.Delegates = r.PrincipalMatched && !direct && s.Effect == Allow
	case s.NotPrincipal != nil:
		r.PrincipalMatched = !s.NotPrincipal.excludes(caller)
	default:
		// An identity-based policy: it belongs to the caller.
		r.PrincipalMatched = true
	}
	switch {
	case s.Action != nil:
		r.ActionMatched = anyMatch(s.Action, req.Action, actionMatch)
	case s.NotAction != nil:
		r.ActionMatched = !anyMatch(s.NotAction, req.Action, actionMatch)
	}
	switch {
	case s.Resource != nil:
		r.ResourceMatched = anyMatch(s.Resource, req.Resource, arnMatch)
	case s.NotResource != nil:
		r.ResourceMatched = !anyMatch(s.NotResource, req.Resource, arnMatch)
	}
	r.ConditionsMatched = true
	if len(s.Conditions) > 0 {
		r.Conditions = make([]ConditionResult, len(s.Conditions))
		for k := range s.Conditions {
			c := &s.Conditions[k]
			vals, ok := c.eval(req.Context)
			r.Conditions[k] = ConditionResult{
				Operator:      c.Operator,
				Key:           c.Key,
				PolicyValues:  c.Values,
				RequestValues: vals,
				KeyPresent:    len(vals) > 0,
				Matched:       ok,
			}
			if !ok {
				r.ConditionsMatched = false
			}
		}
	}
	r.Applies = r.Ineffective == "" && r.PrincipalMatched && r.ActionMatched &&
		r.ResourceMatched && r.ConditionsMatched
	return r
}

// actionMatch matches an Action entry: wildcards, case-insensitive ("kms:*",
// "kms:Generate*"). IAM User Guide, "IAM JSON policy elements: Action":
// action names are not case-sensitive.
func actionMatch(pattern, action string) bool {
	return wildcardMatch(pattern, action, true)
}

func anyMatch(patterns []string, s string, match func(pattern, s string) bool) bool {
	for _, p := range patterns {
		if match(p, s) {
			return true
		}
	}
	return false
}

// contextValues returns the values of a condition key in the request
// context, comparing key names case-insensitively (lkey is lower case).
// Values of keys that differ only in case are concatenated, so a caller
// cannot hide a value from a condition by changing the case of its key. It
// allocates only in that rare case.
func contextValues(ctx map[string][]string, lkey string) []string {
	var found []string
	for k, v := range ctx {
		if len(v) == 0 {
			continue
		}
		if len(k) == 0 || len(lkey) == 0 {
			if len(k) != len(lkey) {
				continue
			}
		} else if a, b := k[len(k)-1], lkey[len(lkey)-1]; a < utf8.RuneSelf && b < utf8.RuneSelf && lowerASCII(a) != lowerASCII(b) {
			// Cheap rejection first: two ASCII last characters that differ
			// but for case cannot fold together. Keys such as
			// kms:RecipientAttestation:PCR0…PCR15 mostly differ there.
			continue
		}
		if len(k) != len(lkey) && isASCII(k) {
			// Case folding keeps the length of ASCII strings; only a key
			// with other characters can fold to lkey from another length.
			continue
		}
		if !strings.EqualFold(k, lkey) {
			continue
		}
		if found == nil {
			found = v
			continue
		}
		found = append(slices.Clip(found), v...)
	}
	return found
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
