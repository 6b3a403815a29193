package keypolicy

import (
	"fmt"
	"strings"
)

// SetQualifier is the set operator prefix of a condition operator.
type SetQualifier string

// The set qualifiers (IAM User Guide, "Set operators for multivalued context
// keys").
const (
	// NoQualifier: the operator as written, without a set prefix.
	NoQualifier SetQualifier = ""
	// ForAnyValue: at least one request value must satisfy the operator; an
	// absent or empty key does not.
	ForAnyValue SetQualifier = "ForAnyValue"
	// ForAllValues: every request value must satisfy the operator; an absent
	// or empty key does ("The ForAllValues set operator also returns true if
	// there are no context keys in the request").
	ForAllValues SetQualifier = "ForAllValues"
)

// operator is a base condition operator (no qualifier, no IfExists).
type operator uint8

const (
	opStringEquals operator = iota + 1
	opStringNotEquals
	opStringEqualsIgnoreCase
	opStringNotEqualsIgnoreCase
	opStringLike
	opStringNotLike
	opArnEquals
	opArnNotEquals
	opArnLike
	opArnNotLike
	opBool
	opNull
)

var operatorNames = map[string]operator{
	"StringEquals":              opStringEquals,
	"StringNotEquals":           opStringNotEquals,
	"StringEqualsIgnoreCase":    opStringEqualsIgnoreCase,
	"StringNotEqualsIgnoreCase": opStringNotEqualsIgnoreCase,
	"StringLike":                opStringLike,
	"StringNotLike":             opStringNotLike,
	"ArnEquals":                 opArnEquals,
	"ArnNotEquals":              opArnNotEquals,
	"ArnLike":                   opArnLike,
	"ArnNotLike":                opArnNotLike,
	"Bool":                      opBool,
	"Null":                      opNull,
}

// unsupportedOperators are valid IAM condition operators (IAM User Guide,
// "IAM JSON policy elements: Condition operators") that keypolicy refuses
// rather than evaluates: none of the KMS condition keys devkms fills is a
// number, a date, an IP address or binary.
var unsupportedOperators = map[string]bool{
	"NumericEquals": true, "NumericNotEquals": true, "NumericLessThan": true,
	"NumericLessThanEquals": true, "NumericGreaterThan": true, "NumericGreaterThanEquals": true,
	"DateEquals": true, "DateNotEquals": true, "DateLessThan": true,
	"DateLessThanEquals": true, "DateGreaterThan": true, "DateGreaterThanEquals": true,
	"BinaryEquals": true, "IpAddress": true, "NotIpAddress": true,
}

// negated reports whether the operator is a "Not" operator, which IAM
// evaluates as true when the key is absent and whose multiple values are
// combined with NOR (IAM User Guide, "Conditions with multiple context keys
// or values").
func (o operator) negated() bool {
	switch o {
	case opStringNotEquals, opStringNotEqualsIgnoreCase, opStringNotLike, opArnNotEquals, opArnNotLike:
		return true
	}
	return false
}

// Condition is one key of one operator of a Condition element, e.g.
// "StringEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": "..."}.
type Condition struct {
	// Operator is the operator as written, e.g.
	// "ForAnyValue:StringEqualsIfExists".
	Operator string `json:"operator"`
	// Qualifier, Base and IfExists are Operator taken apart: the set
	// qualifier, the base operator ("StringEquals") and the IfExists suffix.
	Qualifier SetQualifier `json:"qualifier,omitempty"`
	Base      string       `json:"base"`
	IfExists  bool         `json:"ifExists,omitempty"`
	// Key is the condition key as written. Keys are compared with the
	// request context case-insensitively.
	Key string `json:"key"`
	// Values are the policy values; a request value satisfies the condition
	// when it matches any of them (none of them, for the Not operators).
	// Bool and Null values are normalised to "true" or "false".
	Values []string `json:"values"`

	op   operator
	lkey string // strings.ToLower(Key)
}

// parseOperator takes an operator name apart.
func parseOperator(name string) (q SetQualifier, base string, ifExists bool, op operator, err error) {
	rest := name
	if r, ok := strings.CutPrefix(rest, "ForAnyValue:"); ok {
		q, rest = ForAnyValue, r
	} else if r, ok := strings.CutPrefix(rest, "ForAllValues:"); ok {
		q, rest = ForAllValues, r
	}
	if r, ok := strings.CutSuffix(rest, "IfExists"); ok && r != "" {
		ifExists, rest = true, r
	}
	op, known := operatorNames[rest]
	switch {
	case known:
	case unsupportedOperators[rest]:
		return "", "", false, 0, malformedf("condition operator %s is valid IAM but keypolicy does not evaluate %s", quote(name), rest)
	default:
		return "", "", false, 0, malformedf("unknown condition operator %s", quote(name))
	}
	if op == opNull && ifExists {
		// IAM User Guide, condition operators: IfExists can be added to
		// "any condition operator name except the Null condition".
		return "", "", false, 0, malformedf("condition operator %s is not valid: Null cannot take IfExists", quote(name))
	}
	if op == opNull && q != NoQualifier {
		return "", "", false, 0, malformedf("condition operator %s is not valid: Null tests whether a key exists and takes no set qualifier", quote(name))
	}
	return q, rest, ifExists, op, nil
}

// parseConditions parses a Condition element into its conditions, in the
// order the document lists them.
func parseConditions(v jsonValue, version string) ([]Condition, error) {
	if v.kind != jsonObject {
		return nil, malformedf("Condition must be an object, not %s", v.kind)
	}
	var out []Condition
	for _, om := range v.members {
		q, base, ifExists, op, err := parseOperator(om.name)
		if err != nil {
			return nil, err
		}
		if om.value.kind != jsonObject {
			return nil, malformedf("condition operator %s must map condition keys to values, not be %s", quote(om.name), om.value.kind)
		}
		if len(om.value.members) == 0 {
			return nil, malformedf("condition operator %s names no condition key", quote(om.name))
		}
		for _, km := range om.value.members {
			if err := checkConditionKey(km.name); err != nil {
				return nil, err
			}
			values, err := conditionValues(km.value, om.name, km.name)
			if err != nil {
				return nil, err
			}
			for i, s := range values {
				switch op {
				case opBool, opNull:
					l := strings.ToLower(s)
					if l != "true" && l != "false" {
						return nil, malformedf("condition %s %s: value %s is not true or false", om.name, quote(km.name), quote(s))
					}
					values[i] = l
				default:
					if version == Version2012 && strings.Contains(s, "${") {
						return nil, malformedf("condition %s %s: policy variables (%s) are not supported by keypolicy", om.name, quote(km.name), quote(s))
					}
				}
			}
			out = append(out, Condition{
				Operator:  om.name,
				Qualifier: q,
				Base:      base,
				IfExists:  ifExists,
				Key:       km.name,
				Values:    values,
				op:        op,
				lkey:      strings.ToLower(km.name),
			})
		}
	}
	return out, nil
}

// checkConditionKey checks that a condition key has a service prefix
// ("kms:", "aws:"). IAM refuses keys without one: "Actions/Conditions must be
// prefaced by a vendor, e.g., iam, sdb, ec2, etc." (MalformedPolicyDocument
// reason, as reproduced by getmoto/moto iam/policy_validation.py).
func checkConditionKey(k string) error {
	prefix, name, ok := strings.Cut(k, ":")
	if !ok || prefix == "" || name == "" || strings.ContainsAny(k, " \t\r\n") {
		return malformedf("condition key %s must be prefaced by a service, e.g. \"kms:CallerAccount\"", quote(k))
	}
	return nil
}

// conditionValues reads the value(s) of one condition key. IAM accepts
// strings, numbers and booleans, alone or in a list.
func conditionValues(v jsonValue, op, key string) ([]string, error) {
	scalar := func(e jsonValue) (string, bool) {
		switch e.kind {
		case jsonString, jsonNumber:
			return e.text, true
		case jsonBool:
			if e.boolean {
				return "true", true
			}
			return "false", true
		}
		return "", false
	}
	if s, ok := scalar(v); ok {
		return []string{s}, nil
	}
	if v.kind != jsonArray {
		return nil, malformedf("condition %s %s: value must be a string, number, boolean or a list of them, not %s", op, quote(key), v.kind)
	}
	if len(v.elems) == 0 {
		return nil, malformedf("condition %s %s has an empty list of values", op, quote(key))
	}
	out := make([]string, 0, len(v.elems))
	for _, e := range v.elems {
		s, ok := scalar(e)
		if !ok {
			return nil, malformedf("condition %s %s: list value must be a string, number or boolean, not %s", op, quote(key), e.kind)
		}
		out = append(out, s)
	}
	return out, nil
}

// eval evaluates the condition against the request context. It
// returns the request values it compared and whether the condition holds.
//
// IAM rules (IAM User Guide, "IAM JSON policy elements: Condition operators"
// and "Set operators for multivalued context keys"):
//   - a key absent from the request (or present with no values) fails every
//     operator except the Not operators, which hold, and IfExists, which
//     holds; ForAnyValue fails and ForAllValues holds on an absent key;
//   - Null "true" holds when the key is absent, "false" when it is present;
//   - the policy values of one key are OR'd (NOR'd for a Not operator);
//   - ForAnyValue holds when some request value satisfies the operator,
//     ForAllValues when every one does. Without a qualifier a request with
//     several values holds for a positive operator when any of them matches,
//     and for a Not operator when none of them matches.
func (c *Condition) eval(ctx map[string][]string) (requestValues []string, ok bool) {
	vals := contextValues(ctx, c.lkey)
	present := len(vals) > 0
	if c.op == opNull {
		for _, want := range c.Values {
			if (want == "true") != present {
				return vals, true
			}
		}
		return vals, false
	}
	if !present {
		switch {
		case c.IfExists:
			return vals, true
		case c.Qualifier == ForAllValues:
			return vals, true
		case c.Qualifier == ForAnyValue:
			return vals, false
		}
		return vals, c.op.negated()
	}
	all := c.Qualifier == ForAllValues || (c.Qualifier == NoQualifier && c.op.negated())
	if all {
		for _, v := range vals {
			if !c.satisfiedBy(v) {
				return vals, false
			}
		}
		return vals, true
	}
	for _, v := range vals {
		if c.satisfiedBy(v) {
			return vals, true
		}
	}
	return vals, false
}

// satisfiedBy reports whether one request value satisfies the operator: it
// matches one of the policy values (or, for a Not operator, none of them).
func (c *Condition) satisfiedBy(v string) bool {
	m := false
	for _, p := range c.Values {
		if c.op.match(p, v) {
			m = true
			break
		}
	}
	if c.op.negated() {
		return !m
	}
	return m
}

// match compares one policy value with one request value under the positive
// form of the operator.
func (o operator) match(policy, request string) bool {
	switch o {
	case opStringEquals, opStringNotEquals:
		return policy == request
	case opStringEqualsIgnoreCase, opStringNotEqualsIgnoreCase:
		return strings.EqualFold(policy, request)
	case opStringLike, opStringNotLike:
		return wildcardMatch(policy, request, false)
	case opArnEquals, opArnNotEquals, opArnLike, opArnNotLike:
		// IAM: ArnEquals and ArnLike behave the same; both take wildcards
		// within each of the six colon-separated parts.
		return arnMatch(policy, request)
	case opBool:
		return strings.EqualFold(policy, request)
	}
	return false
}

// String describes the condition as it appears in the policy.
func (c *Condition) String() string {
	return fmt.Sprintf("%s %s", c.Operator, c.Key)
}
