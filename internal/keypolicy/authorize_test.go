package keypolicy

import (
	"strings"
	"testing"
)

// mustParseIdentity parses an identity-based policy and fails the test on
// error.
func mustParseIdentity(t testing.TB, doc string) *Policy {
	t.Helper()
	p, err := ParseIdentity([]byte(doc))
	if err != nil {
		t.Fatalf("ParseIdentity: %v\ndocument: %s", err, doc)
	}
	return p
}

func TestAuthorize(t *testing.T) {
	const (
		other        = "arn:aws:iam::999988887777:user/mallory"
		rootAdmin    = `{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"` + testRoot + `"},"Action":"kms:*","Resource":"*"}`
		userDecrypt  = `{"Sid":"Alice","Effect":"Allow","Principal":{"AWS":"` + testUser + `"},"Action":"kms:Decrypt","Resource":"*"}`
		otherDecrypt = `{"Sid":"Mallory","Effect":"Allow","Principal":{"AWS":"` + other + `"},"Action":"kms:Decrypt","Resource":"*"}`
		denyAll      = `{"Sid":"NoDecrypt","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`
	)
	iamAllow := IdentityPolicy{Name: "allow-kms", Policy: mustParseIdentity(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`)}
	iamOtherKey := IdentityPolicy{Name: "other-key", Policy: mustParseIdentity(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:*:111122223333:key/other"}]}`)}
	iamDeny := IdentityPolicy{Name: "deny-decrypt", Policy: mustParseIdentity(t, `{"Version":"2012-10-17","Statement":[{"Sid":"Stop","Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}`)}
	grant := func(grantee string, ops ...string) Grant {
		return Grant{ID: "g1", GranteePrincipal: grantee, Operations: ops}
	}

	tests := []struct {
		name        string
		keyPolicy   string // "" for none
		principal   string
		action      string
		known       bool
		identity    []IdentityPolicy
		grants      []Grant
		ec          map[string]string
		constraints bool
		want        Outcome
		summary     string // substring of Summary
		message     string // substring of AccessDeniedMessage; "" for none
	}{
		{
			name: "key policy names the user: allowed directly", keyPolicy: document(userDecrypt),
			principal: testUser, action: "kms:Decrypt", want: OutcomeKeyPolicy,
			summary: `ALLOWED: statement 0 (Sid "Alice") of the key policy allows it`,
		},
		{
			name: "account statement, IAM not given: allowed only if IAM allows", keyPolicy: document(rootAdmin),
			principal: testUser, action: "kms:Decrypt", want: OutcomeNeedsIAM,
			summary: `ALLOWED only if an IAM policy also allows it: statement 0 (Sid "Admins") of the key policy allows the caller's account, which delegates`,
		},
		{
			name: "account statement and an IAM allow", keyPolicy: document(rootAdmin),
			principal: testSession, action: "kms:Decrypt", known: true, identity: []IdentityPolicy{iamAllow}, want: OutcomeIAM,
			summary: `ALLOWED: statement 0 (Sid "Admins") of the key policy delegates to IAM, and statement 0 of the identity-based policy "allow-kms" allows it`,
		},
		{
			name: "account statement, IAM allows only another key", keyPolicy: document(rootAdmin),
			principal: testUser, action: "kms:Decrypt", known: true, identity: []IdentityPolicy{iamOtherKey}, want: OutcomeImplicitDeny,
			summary: `delegates to IAM, and no identity-based policy of the caller allows it`,
			message: "because no identity-based policy allows the kms:Decrypt action",
		},
		{
			name: "account statement, no identity policies at all", keyPolicy: document(rootAdmin),
			principal: testUser, action: "kms:Decrypt", known: true, want: OutcomeImplicitDeny,
			message: "because no identity-based policy allows the kms:Decrypt action",
		},
		{
			name: "the account's root user needs no IAM policy", keyPolicy: document(rootAdmin),
			principal: testRoot, action: "kms:PutKeyPolicy", known: true, want: OutcomeKeyPolicy,
		},
		{
			name: "an IAM deny beats the key policy's direct allow", keyPolicy: document(userDecrypt),
			principal: testUser, action: "kms:Decrypt", known: true, identity: []IdentityPolicy{iamAllow, iamDeny}, want: OutcomeDenyIAM,
			summary: `DENIED (explicit deny): statement 0 (Sid "Stop") of the identity-based policy "deny-decrypt" denies it`,
			message: "with an explicit deny in an identity-based policy",
		},
		{
			name: "a grant allows what the key policy does not", keyPolicy: document(rootAdmin),
			principal: "arn:aws:iam::111122223333:user/bob", action: "kms:Decrypt", grants: []Grant{grant("arn:aws:iam::111122223333:user/bob", "Decrypt")},
			want: OutcomeGrant, summary: "ALLOWED: grant g1 allows it",
		},
		{
			name: "a key policy deny beats a grant", keyPolicy: document(rootAdmin, denyAll),
			principal: testUser, action: "kms:Decrypt", grants: []Grant{grant(testUser, "Decrypt")},
			want: OutcomeDenyKeyPolicy, summary: `DENIED (explicit deny): statement 1 (Sid "NoDecrypt") of the key policy denies it`,
			message: "with an explicit deny in a resource-based policy",
		},
		{
			name: "an IAM deny beats a grant", keyPolicy: document(rootAdmin),
			principal: testUser, action: "kms:Decrypt", known: true, identity: []IdentityPolicy{iamDeny}, grants: []Grant{grant(testUser, "Decrypt")},
			want: OutcomeDenyIAM,
		},
		{
			name: "a grant for another operation does not apply", keyPolicy: document(userDecrypt),
			principal: "arn:aws:iam::111122223333:user/bob", action: "kms:Decrypt", grants: []Grant{grant("arn:aws:iam::111122223333:user/bob", "Encrypt")},
			want: OutcomeImplicitDeny, summary: "no statement of the key policy allows it, and no grant does",
			message: "because no resource-based policy allows the kms:Decrypt action",
		},
		{
			name: "a grant for a role admits its sessions", keyPolicy: document(userDecrypt),
			principal: testSession, action: "kms:Decrypt", grants: []Grant{grant(testRole, "Decrypt")}, want: OutcomeGrant,
		},
		{
			name: "a grant for an account admits its root user", keyPolicy: document(userDecrypt),
			principal: testRoot, action: "kms:Decrypt", grants: []Grant{grant(testAccount, "Decrypt")}, want: OutcomeGrant,
		},
		{
			name: "a grant for an account does not admit its users", keyPolicy: document(userDecrypt),
			principal: "arn:aws:iam::111122223333:user/bob", action: "kms:Decrypt", grants: []Grant{grant(testAccount, "Decrypt")}, want: OutcomeImplicitDeny,
		},
		{
			name: "grant constraint EncryptionContextEquals: keys without case, values with", keyPolicy: document(userDecrypt),
			principal: testRole, action: "kms:Decrypt", constraints: true, ec: map[string]string{"Tenant": "acme"},
			grants: []Grant{{ID: "g", GranteePrincipal: testRole, Operations: []string{"Decrypt"}, EncryptionContextEquals: map[string]string{"tenant": "acme"}}},
			want:   OutcomeGrant,
		},
		{
			name: "grant constraint EncryptionContextEquals: value case differs", keyPolicy: document(userDecrypt),
			principal: testRole, action: "kms:Decrypt", constraints: true, ec: map[string]string{"tenant": "ACME"},
			grants: []Grant{{ID: "g", GranteePrincipal: testRole, Operations: []string{"Decrypt"}, EncryptionContextEquals: map[string]string{"tenant": "acme"}}},
			want:   OutcomeImplicitDeny,
		},
		{
			name: "grant constraint EncryptionContextEquals: an extra pair", keyPolicy: document(userDecrypt),
			principal: testRole, action: "kms:Decrypt", constraints: true, ec: map[string]string{"tenant": "acme", "x": "y"},
			grants: []Grant{{ID: "g", GranteePrincipal: testRole, Operations: []string{"Decrypt"}, EncryptionContextEquals: map[string]string{"tenant": "acme"}}},
			want:   OutcomeImplicitDeny,
		},
		{
			name: "grant constraint EncryptionContextSubset: extra pairs are fine", keyPolicy: document(userDecrypt),
			principal: testRole, action: "kms:Decrypt", constraints: true, ec: map[string]string{"tenant": "acme", "x": "y"},
			grants: []Grant{{ID: "g", GranteePrincipal: testRole, Operations: []string{"Decrypt"}, EncryptionContextSubset: map[string]string{"tenant": "acme"}}},
			want:   OutcomeGrant,
		},
		{
			name: "grant constraint EncryptionContextSubset: a pair missing", keyPolicy: document(userDecrypt),
			principal: testRole, action: "kms:Decrypt", constraints: true, ec: map[string]string{"x": "y"},
			grants: []Grant{{ID: "g", GranteePrincipal: testRole, Operations: []string{"Decrypt"}, EncryptionContextSubset: map[string]string{"tenant": "acme"}}},
			want:   OutcomeImplicitDeny,
		},
		{
			name: "grant constraints do not apply to operations without encryption context", keyPolicy: document(userDecrypt),
			principal: testRole, action: "kms:DescribeKey",
			grants: []Grant{{ID: "g", GranteePrincipal: testRole, Operations: []string{"DescribeKey"}, EncryptionContextSubset: map[string]string{"tenant": "acme"}}},
			want:   OutcomeGrant,
		},
		{
			name: "cross-account: the key policy names the caller, IAM not given", keyPolicy: document(otherDecrypt),
			principal: other, action: "kms:Decrypt", want: OutcomeNeedsIAM,
			summary: "but the caller is in another account",
		},
		{
			name: "cross-account: the key policy and the caller's IAM allow", keyPolicy: document(otherDecrypt),
			principal: other, action: "kms:Decrypt", known: true, identity: []IdentityPolicy{iamAllow}, want: OutcomeIAM,
		},
		{
			name: "cross-account: the caller's IAM does not allow", keyPolicy: document(otherDecrypt),
			principal: other, action: "kms:Decrypt", known: true, want: OutcomeImplicitDeny,
		},
		{
			name: "another account, not in the key policy", keyPolicy: document(rootAdmin),
			principal: other, action: "kms:Decrypt", known: true, identity: []IdentityPolicy{iamAllow}, want: OutcomeImplicitDeny,
			message: "because no resource-based policy allows the kms:Decrypt action",
		},
		{
			name: "no resource policy (an alias): IAM decides", principal: testUser, action: "kms:UpdateAlias",
			known: true, identity: []IdentityPolicy{iamAllow}, want: OutcomeIAM,
			summary: "(the resource has no resource-based policy)",
		},
		{
			name: "no resource policy, IAM not given", principal: testUser, action: "kms:UpdateAlias", want: OutcomeNeedsIAM,
		},
		{
			name: "no resource policy, IAM allows nothing", principal: testUser, action: "kms:UpdateAlias", known: true, want: OutcomeImplicitDeny,
			message: "because no identity-based policy allows the kms:UpdateAlias action",
		},
		{
			name: "no resource policy, the account's root user", principal: testRoot, action: "kms:UpdateAlias", want: OutcomeIAM,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Input{
				Request:           Request{Principal: tt.principal, Action: tt.action, Resource: testKeyARN, Context: CallerContext(tt.principal)},
				IdentityKnown:     tt.known,
				Identity:          tt.identity,
				Grants:            tt.grants,
				EncryptionContext: tt.ec,
				ConstraintsApply:  tt.constraints,
			}
			if tt.keyPolicy != "" {
				in.KeyPolicy = mustParse(t, tt.keyPolicy)
			}
			a := Authorize(in)
			if a.Outcome != tt.want {
				t.Fatalf("Outcome = %s, want %s\n%s", a.Outcome, tt.want, a.Explain())
			}
			wantAllowed := tt.want == OutcomeKeyPolicy || tt.want == OutcomeIAM || tt.want == OutcomeGrant
			if a.Allowed != wantAllowed || a.Conditional != (tt.want == OutcomeNeedsIAM) {
				t.Errorf("Allowed = %v, Conditional = %v for %s", a.Allowed, a.Conditional, a.Outcome)
			}
			if !strings.Contains(a.Summary(), tt.summary) {
				t.Errorf("Summary = %q, want it to contain %q", a.Summary(), tt.summary)
			}
			msg := a.AccessDeniedMessage()
			if wantAllowed || tt.want == OutcomeNeedsIAM {
				if msg != "" {
					t.Errorf("AccessDeniedMessage = %q for an allowed request", msg)
				}
			} else if !strings.Contains(msg, tt.message) || !strings.HasPrefix(msg, "User: "+tt.principal+" is not authorized to perform: "+tt.action+" on resource: ") {
				t.Errorf("AccessDeniedMessage = %q, want it to contain %q", msg, tt.message)
			}
		})
	}
}

// TestAuthorizeReason: the one-line reasons devkms logs name the deciding
// statement and condition.
func TestAuthorizeReason(t *testing.T) {
	const image = "7fb5c55bc2ecbb68ed99a13d7122abfc0666b926a79d5379bc58b9445c84217f59cfdd36c08b2c79552928702efe23e4"
	p := mustParse(t, document(
		`{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"`+testRoot+`"},"Action":"kms:Encrypt","Resource":"*"}`,
		`{"Sid":"Enclave","Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"`+image+`"}}}`,
		`{"Sid":"DenyUnattested","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringNotEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"`+image+`"}}}`,
	))
	tests := []struct {
		name      string
		principal string
		ctx       map[string][]string
		want      string
	}{
		{"explicit deny names the condition that held", testSession, nil,
			`statement 2 (Sid "DenyUnattested") of the key policy denies it: condition StringNotEqualsIgnoreCase kms:RecipientAttestation:ImageSha384 holds (the request has no value for it)`},
		{"explicit deny shows the request's value", testSession, map[string][]string{KeyImageSha384: {"00"}},
			`condition StringNotEqualsIgnoreCase kms:RecipientAttestation:ImageSha384 holds (the request has value "00")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Authorize(Input{KeyPolicy: p, Request: Request{Principal: tt.principal, Action: "kms:Decrypt", Resource: testKeyARN, Context: tt.ctx}})
			if got := a.Reason(); !strings.Contains(got, tt.want) {
				t.Errorf("Reason =\n %s\nwant it to contain\n %s", got, tt.want)
			}
		})
	}

	// The nearest miss of an implicit deny: the Allow that would have
	// applied but for a condition.
	q := mustParse(t, document(`{"Sid":"Enclave","Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"`+image+`"}}}`))
	a := Authorize(Input{KeyPolicy: q, Request: Request{Principal: testSession, Action: "kms:Decrypt", Resource: testKeyARN}})
	want := `no statement of the key policy allows it; statement 0 (Sid "Enclave") would, but its condition StringEqualsIgnoreCase kms:RecipientAttestation:ImageSha384 fails: the request does not have the key`
	if got := a.Reason(); !strings.HasPrefix(got, want) {
		t.Errorf("Reason =\n %s\nwant\n %s", got, want)
	}
}

func TestAuthorizeExplain(t *testing.T) {
	p := mustParse(t, document(`{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"`+testRoot+`"},"Action":"kms:*","Resource":"*"}`))
	iam := IdentityPolicy{Name: "admin.json", Policy: mustParseIdentity(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Describe*","Resource":"*"}]}`)}
	a := Authorize(Input{
		KeyPolicy: p, IdentityKnown: true, Identity: []IdentityPolicy{iam},
		Request: Request{Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN},
		Grants:  []Grant{{ID: "abc", Name: "ebs", GranteePrincipal: "arn:aws:iam::111122223333:user/bob", Operations: []string{"Decrypt"}}},
	})
	want := `DENIED (implicit deny): statement 0 (Sid "Admins") of the key policy delegates to IAM, and no identity-based policy of the caller allows it
request: principal arn:aws:iam::111122223333:user/alice, action kms:Decrypt, resource ` + testKeyARN + `
key policy:
  statement 0 (Sid "Admins") (Allow): applies
    principal: matches (through the caller's account: delegates to IAM)
    action:    matches
    resource:  matches
identity-based policy "admin.json":
  statement 0 (Allow): does not apply
    principal: matches
    action:    DOES NOT MATCH
    resource:  matches
grant abc (name "ebs"): does not apply
  grantee arn:aws:iam::111122223333:user/bob: DOES NOT MATCH
  operations Decrypt: matches
  constraints: matches
`
	diff(t, "Explain", a.Explain(), want)
}

// TestAuthorizeNamesTheDirectStatement: when a statement for the account
// and one for the caller both apply, the one for the caller decided.
func TestAuthorizeNamesTheDirectStatement(t *testing.T) {
	p := mustParse(t, document(
		`{"Sid":"Account","Effect":"Allow","Principal":{"AWS":"`+testRoot+`"},"Action":"kms:Encrypt","Resource":"*"}`,
		`{"Sid":"Role","Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Encrypt","Resource":"*"}`,
	))
	a := Authorize(Input{KeyPolicy: p, Request: Request{Principal: testSession, Action: "kms:Encrypt", Resource: testKeyARN}})
	if got, want := a.Summary(), `ALLOWED: statement 1 (Sid "Role") of the key policy allows it`; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
}
