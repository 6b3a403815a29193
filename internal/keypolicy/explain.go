package keypolicy

import (
	"fmt"
	"strings"
)

// AccessDeniedMessage returns the message AWS KMS puts in the
// AccessDeniedException it answers a refused request with, or "" when the
// decision allows the request. The IAM User Guide ("Troubleshoot access
// denied error messages") gives the format "User: user is not authorized to
// perform: action on resource: resource because context", where context is
// "with an explicit deny in a type policy" or "because no type policy allows
// the action action"; for a KMS key policy the type is "resource-based", as
// real KMS answers show, e.g.
//
//	User: arn:aws:sts::371604478497:assumed-role/devops-eks-atlantis-role/1689432777102819771 is not authorized to perform: kms:DescribeKey on resource: arn:aws:kms:ap-northeast-2:371604478497:key/77270bdb-91e1-4576-ae99-46bcffb63a3a because no resource-based policy allows the kms:DescribeKey action
func (d Decision) AccessDeniedMessage(req Request) string {
	if d.Allowed {
		return ""
	}
	if d.ExplicitDeny {
		return fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s with an explicit deny in a resource-based policy",
			req.Principal, req.Action, req.Resource)
	}
	return fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s because no resource-based policy allows the %s action",
		req.Principal, req.Action, req.Resource, req.Action)
}

// Explain describes the decision of this one policy in several lines: the
// verdict, then for each statement whether its principal, action, resource
// and each of its conditions matched, with the operator, key and the values
// compared for a condition that failed. Authorization.Explain describes
// KMS's whole answer.
func (d Decision) Explain() string {
	var b strings.Builder
	req := d.Request
	switch {
	case d.Allowed && d.Delegated:
		b.WriteString("ALLOWED only if an IAM policy also allows it: ")
		if r := firstApplying(&d, Allow); r != nil {
			fmt.Fprintf(&b, "%s allows the caller's account, which delegates to IAM\n", statementName(*r))
		}
	case d.Allowed:
		b.WriteString("ALLOWED: ")
		if r := firstApplying(&d, Allow); r != nil {
			fmt.Fprintf(&b, "%s allows it\n", statementName(*r))
		}
	case d.ExplicitDeny:
		b.WriteString("DENIED (explicit deny): ")
		if r := firstApplying(&d, Deny); r != nil {
			fmt.Fprintf(&b, "%s denies it\n", statementName(*r))
		}
	default:
		b.WriteString("DENIED (implicit deny): no statement allows it\n")
	}
	fmt.Fprintf(&b, "request: principal %s, action %s, resource %s\n",
		orNone(req.Principal), orNone(req.Action), orNone(req.Resource))
	writeStatements(&b, &d, "")
	return b.String()
}

// writeStatements writes each statement's result, indented.
func writeStatements(b *strings.Builder, d *Decision, indent string) {
	if len(d.Statements) == 0 {
		b.WriteString(indent + "the policy has no statements\n")
	}
	for _, r := range d.Statements {
		verdict := "does not apply"
		if r.Applies {
			verdict = "applies"
		}
		fmt.Fprintf(b, "%s%s (%s): %s\n", indent, statementName(r), r.Effect, verdict)
		if r.Ineffective != "" {
			fmt.Fprintf(b, "%s  %s\n", indent, r.Ineffective)
		}
		principal := matchWord(r.PrincipalMatched)
		if r.Delegates {
			principal += " (through the caller's account: delegates to IAM)"
		}
		fmt.Fprintf(b, "%s  principal: %s\n", indent, principal)
		fmt.Fprintf(b, "%s  action:    %s\n", indent, matchWord(r.ActionMatched))
		fmt.Fprintf(b, "%s  resource:  %s\n", indent, matchWord(r.ResourceMatched))
		for _, c := range r.Conditions {
			if c.Matched {
				fmt.Fprintf(b, "%s  condition %s %s: holds\n", indent, c.Operator, c.Key)
				continue
			}
			fmt.Fprintf(b, "%s  condition %s %s: FAILED: %s\n", indent, c.Operator, c.Key, conditionFailure(c))
		}
	}
}

func statementName(r StatementResult) string {
	if r.Sid != "" {
		return fmt.Sprintf("statement %d (Sid %s)", r.Index, quote(r.Sid))
	}
	return fmt.Sprintf("statement %d", r.Index)
}

func matchWord(ok bool) string {
	if ok {
		return "matches"
	}
	return "DOES NOT MATCH"
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// maxExplained bounds how much of one value an explanation repeats. It is
// larger than maxQuoted so that whole measurements are shown: a NitroTPM PCR
// may be up to 96 bytes, 192 hex digits (KMS Developer Guide, "Condition keys
// for NitroTPM").
const maxExplained = 256

// conditionFailure says why a condition failed.
func conditionFailure(c ConditionResult) string {
	base := c.Operator
	if i := strings.LastIndexByte(base, ':'); i >= 0 {
		base = base[i+1:]
	}
	if base == "Null" {
		if c.KeyPresent {
			return fmt.Sprintf("the request has the key (value %s) but the policy wants it absent", quoteList(c.RequestValues))
		}
		return "the request does not have the key but the policy wants it present"
	}
	if !c.KeyPresent {
		if strings.HasPrefix(c.Operator, "ForAnyValue:") {
			return fmt.Sprintf("the request does not have the key; ForAnyValue needs a value matching %s", values("policy value", c.PolicyValues))
		}
		return fmt.Sprintf("the request does not have the key; the policy wants %s", quoteList(c.PolicyValues))
	}
	req := values("request value", c.RequestValues)
	pol := values("policy value", c.PolicyValues)
	switch {
	case strings.Contains(base, "Not") && len(c.RequestValues) == 1:
		return fmt.Sprintf("%s matches %s, which %s forbids", req, pol, base)
	case strings.Contains(base, "Not") && strings.HasPrefix(c.Operator, "ForAnyValue:"):
		return fmt.Sprintf("every one of %s matches %s, which %s forbids", req, pol, base)
	case strings.Contains(base, "Not"):
		return fmt.Sprintf("one of %s matches %s, which %s forbids", req, pol, base)
	case len(c.RequestValues) == 1:
		return fmt.Sprintf("%s does not match %s", req, pol)
	case strings.HasPrefix(c.Operator, "ForAllValues:"):
		return fmt.Sprintf("not every one of %s matches %s", req, pol)
	default:
		return fmt.Sprintf("none of %s matches %s", req, pol)
	}
}

// values returns "what v" or "whats [v1, v2]".
func values(what string, vs []string) string {
	if len(vs) == 1 {
		return what + " " + quoteList(vs)
	}
	return what + "s " + quoteList(vs)
}

// quoteList quotes the values, "a" or ["a", "b"].
func quoteList(vs []string) string {
	if len(vs) == 1 {
		return quoteN(vs[0], maxExplained)
	}
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = quoteN(v, maxExplained)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
