package keypolicy

import (
	"errors"
	"strings"
	"testing"
)

// seedDocuments seed FuzzParse: the policy shapes devkms meets (the KMS
// default key policy, a Nitro Enclaves attestation policy, a CloudTrail-style
// encryption context policy, NotPrincipal/NotAction/NotResource, every
// operator family) and a few malformed ones near the valid grammar.
var seedDocuments = []string{
	// The default key policy KMS attaches to keys created programmatically.
	`{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`,
	// Attestation-bound use by a role, as `kmsproxyctl policy generate` writes.
	`{"Version":"2012-10-17","Statement":[{"Sid":"Enable enclave data processing","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:role/data-processing"},"Action":["kms:Decrypt","kms:GenerateDataKey","kms:GenerateRandom"],"Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"9fedcba8abcdef7abcdef6abcdef5abcdef4abcdef3abcdef2abcdef1abcdef1abcdef0abcdef1abcdef2abcdef3","kms:RecipientAttestation:PCR0":"9fedcba8abcdef7abcdef6abcdef5abcdef4abcdef3abcdef2abcdef1abcdef1abcdef0abcdef1abcdef2abcdef3"}}}]}`,
	`{"Statement":{"Effect":"Allow","Principal":"*","Action":["kms:Decrypt","kms:ReEncryptFrom"],"Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"},"StringLike":{"kms:EncryptionContext:aws:cloudtrail:arn":"arn:aws:cloudtrail:*:111122223333:trail/*"}}}}`,
	`{"Version":"2012-10-17","Statement":[{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:sts::111122223333:assumed-role/app/s","arn:aws:iam::111122223333:role/app","111122223333"]},"NotAction":"kms:Describe*","NotResource":"arn:aws:kms:*:999988887777:key/*"}]}`,
	`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"logs.us-east-1.amazonaws.com","AWS":"*"},"Action":"kms:*","Resource":"*","Condition":{"ForAnyValue:StringEqualsIgnoreCaseIfExists":{"kms:EncryptionContextKeys":["a",1,true]},"ForAllValues:StringNotLike":{"kms:EncryptionContextKeys":"s?c*"},"Null":{"kms:EncryptionContext:tenant":"false"},"Bool":{"aws:SecureTransport":true},"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/app-*"},"StringNotEqualsIfExists":{"kms:ViaService":"s3.us-east-1.amazonaws.com"}}}]}`,
	`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*"}]}`,
	// Malformed near misses.
	``,
	`{}`,
	`{"Statement":[]}`,
	`{"Statement":{"Effect":"Permit","Principal":"*","Action":"kms:Decrypt","Resource":"*"}}`,
	`{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"NumericLessThan":{"kms:k":"1"}}}}`,
	`{"Statement":{"Effect":"Allow","Effect":"Deny"}}`,
	`{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::1111:root"},"Action":"kms:Decrypt","Resource":"*"}]`,
	`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	"{\"Statement\":{\"Sid\":\"\xff\xfe\"}}",
}

// FuzzParse checks that Parse never panics, that every error is a
// *ParseError with an exception name, and that whatever it accepts can be
// evaluated and explained without panicking.
func FuzzParse(f *testing.F) {
	if len(seedDocuments) == 0 {
		f.Fatal("FuzzParse has no seeds")
	}
	for _, s := range seedDocuments {
		f.Add([]byte(s))
	}
	requests := []Request{
		{Principal: "arn:aws:sts::111122223333:assumed-role/app/s", Action: "kms:Decrypt", Resource: testKeyARN,
			Context: MergeContext(CallerContext("arn:aws:sts::111122223333:assumed-role/app/s"), EncryptionContext(map[string]string{"tenant": "blue"}))},
		{Principal: "", Action: "", Resource: ""},
		{Principal: "logs.us-east-1.amazonaws.com", Action: "KMS:GENERATEDATAKEY", Resource: "not an arn"},
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := Parse(doc)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError: %v", err, err)
			}
			if pe.Exception != ExceptionMalformedPolicyDocument && pe.Exception != ExceptionLimitExceeded {
				t.Fatalf("unknown exception %q", pe.Exception)
			}
			if (pe.Exception == ExceptionLimitExceeded) != (len(doc) > MaxPolicySize) {
				t.Fatalf("exception %q for a %d-byte document", pe.Exception, len(doc))
			}
			if !strings.HasPrefix(err.Error(), "keypolicy: ") || pe.Message() == "" {
				t.Fatalf("badly formed error %q", err.Error())
			}
			return
		}
		if len(p.Statements) == 0 {
			t.Fatal("accepted a policy without statements")
		}
		for _, req := range requests {
			d := p.Evaluate(req)
			if d.Allowed && d.ExplicitDeny {
				t.Fatal("decision both allows and explicitly denies")
			}
			if len(d.Statements) != len(p.Statements) {
				t.Fatalf("%d statement results for %d statements", len(d.Statements), len(p.Statements))
			}
			if d.Explain() == "" {
				t.Fatal("empty explanation")
			}
			if (d.AccessDeniedMessage(req) == "") != d.Allowed {
				t.Fatal("AccessDeniedMessage disagrees with Allowed")
			}
			a := Authorize(Input{Request: req, KeyPolicy: p, IdentityKnown: true,
				Grants:           []Grant{{ID: "g", GranteePrincipal: req.Principal, Operations: []string{"Decrypt"}, EncryptionContextSubset: map[string]string{"tenant": "blue"}}},
				ConstraintsApply: true})
			if a.Allowed && (a.Outcome == OutcomeDenyKeyPolicy || a.Outcome == OutcomeImplicitDeny) {
				t.Fatalf("allowed with outcome %s", a.Outcome)
			}
			if d.ExplicitDeny && a.Allowed {
				t.Fatal("a key policy Deny did not win")
			}
			if (a.AccessDeniedMessage() == "") != (a.Allowed || a.Conditional) || a.Explain() == "" || a.Summary() == "" {
				t.Fatalf("inconsistent authorization: %+v", a)
			}
		}
		for _, w := range p.Warnings() {
			if w.Message == "" {
				t.Fatal("empty warning")
			}
		}
	})
}

// FuzzParseIdentity checks ParseIdentity as FuzzParse checks Parse: no
// panic, typed errors, no principal in what it accepts.
func FuzzParseIdentity(f *testing.F) {
	seeds := append([]string{
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`,
		`{"Version":"2012-10-17","Statement":{"Effect":"Deny","NotAction":["kms:Describe*","s3:*"],"NotResource":"arn:aws:kms:*:*:key/*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}`,
	}, seedDocuments...)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := ParseIdentity(doc)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "keypolicy: ") {
				t.Fatalf("error %T %v is not a *ParseError", err, err)
			}
			return
		}
		if !p.Identity {
			t.Fatal("an identity-based policy not marked so")
		}
		for _, s := range p.Statements {
			if s.Principal != nil || s.NotPrincipal != nil || (s.Resource == nil && s.NotResource == nil) {
				t.Fatalf("accepted a statement with a principal or without a resource: %+v", s)
			}
		}
		p.Warnings()
	})
}

// FuzzEvaluate runs fuzzed principals, actions, resources and context
// values against a policy that uses every operator family, checking that
// evaluation never panics and that its verdict agrees with its
// per-statement results.
func FuzzEvaluate(f *testing.F) {
	p, err := Parse([]byte(seedDocuments[4]))
	if err != nil {
		f.Fatalf("Parse of the seed policy: %v", err)
	}
	deny, err := Parse([]byte(seedDocuments[3]))
	if err != nil {
		f.Fatalf("Parse of the seed policy: %v", err)
	}
	f.Add("arn:aws:sts::111122223333:assumed-role/app/s", "kms:Decrypt", testKeyARN, "a", "arn:aws:iam::111122223333:role/app-x")
	f.Add("", "", "", "", "")
	f.Add("111122223333", "kms:*", "*", "sec", "arn:aws:iam::*:role/app-*")
	f.Add("arn:aws:iam::111122223333:user/é", "kms:?", "arn:aws:kms:::", "\xff", "arn:::::")
	f.Fuzz(func(t *testing.T, principal, action, resource, value, arn string) {
		req := Request{
			Principal: principal, Action: action, Resource: resource,
			Context: map[string][]string{
				"kms:EncryptionContextKeys":    {value, strings.ToUpper(value)},
				"kms:EncryptionContext:tenant": {value},
				"aws:SecureTransport":          {value},
				"AWS:PrincipalArn":             {arn},
				"kms:ViaService":               {value},
			},
		}
		for _, pol := range []*Policy{p, deny} {
			d := pol.Evaluate(req)
			allow, denied := false, false
			for _, r := range d.Statements {
				if r.Applies && r.Effect == Allow {
					allow = true
				}
				if r.Applies && r.Effect == Deny {
					denied = true
				}
			}
			if d.ExplicitDeny != denied || d.Allowed != (allow && !denied) {
				t.Fatalf("verdict (allowed %v, deny %v) disagrees with statements (allow %v, deny %v)", d.Allowed, d.ExplicitDeny, allow, denied)
			}
			_ = d.Explain()
		}
	})
}
