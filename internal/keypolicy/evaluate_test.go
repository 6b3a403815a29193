package keypolicy

import (
	"strings"
	"testing"
)

func TestPrincipalMatching(t *testing.T) {
	tests := []struct {
		name      string
		principal string // the Principal element
		caller    string
		want      bool
	}{
		{"star matches anyone", `"*"`, testUser, true},
		{"AWS star matches anyone", `{"AWS":"*"}`, "arn:aws:iam::999988887777:user/mallory", true},
		{"star matches an anonymous caller", `"*"`, "", true},
		{"root ARN matches a user of the account", `{"AWS":"` + testRoot + `"}`, testUser, true},
		{"root ARN matches a session of the account", `{"AWS":"` + testRoot + `"}`, testSession, true},
		{"root ARN matches the root", `{"AWS":"` + testRoot + `"}`, testRoot, true},
		{"root ARN does not match another account", `{"AWS":"` + testRoot + `"}`, "arn:aws:iam::999988887777:user/alice", false},
		{"root ARN does not match another partition", `{"AWS":"` + testRoot + `"}`, "arn:aws-cn:iam::111122223333:user/alice", false},
		{"bare account ID matches a user of the account", `{"AWS":"111122223333"}`, testUser, true},
		{"bare account ID matches a bare account caller", `{"AWS":"111122223333"}`, "111122223333", true},
		{"bare account ID does not match another account", `{"AWS":"111122223333"}`, "arn:aws:iam::999988887777:root", false},
		{"user ARN matches the user", `{"AWS":"` + testUser + `"}`, testUser, true},
		{"user ARN does not match another user", `{"AWS":"` + testUser + `"}`, "arn:aws:iam::111122223333:user/bob", false},
		{"user ARN does not match the account root", `{"AWS":"` + testUser + `"}`, testRoot, false},
		{"role ARN matches the role", `{"AWS":"` + testRole + `"}`, testRole, true},
		{"role ARN matches a session of the role", `{"AWS":"` + testRole + `"}`, testSession, true},
		{"role ARN with a path matches a session of the role", `{"AWS":"arn:aws:iam::111122223333:role/service/app"}`, testSession, true},
		{"role ARN does not match a session of another role", `{"AWS":"` + testRole + `"}`, "arn:aws:sts::111122223333:assumed-role/app2/s", false},
		{"role ARN does not match the same role name in another account", `{"AWS":"` + testRole + `"}`, "arn:aws:sts::999988887777:assumed-role/app/s", false},
		{"role ARN does not match a user of the same name", `{"AWS":"` + testRole + `"}`, "arn:aws:iam::111122223333:user/app", false},
		{"session ARN matches that session only", `{"AWS":"` + testSession + `"}`, testSession, true},
		{"session ARN does not match another session", `{"AWS":"` + testSession + `"}`, "arn:aws:sts::111122223333:assumed-role/app/other", false},
		{"session ARN does not match the role", `{"AWS":"` + testSession + `"}`, testRole, false},
		{"federated user ARN", `{"AWS":"arn:aws:sts::111122223333:federated-user/bob"}`, "arn:aws:sts::111122223333:federated-user/bob", true},
		{"unique ID of a deleted role matches no one", `{"AWS":"AROA123456789EXAMPLE"}`, testSession, false},
		{"service principal matches the service", `{"Service":"logs.us-east-1.amazonaws.com"}`, "logs.us-east-1.amazonaws.com", true},
		{"service principal does not match another service", `{"Service":"logs.us-east-1.amazonaws.com"}`, "s3.amazonaws.com", false},
		{"service principal does not match a user", `{"Service":"logs.us-east-1.amazonaws.com"}`, testUser, false},
		{"account does not match a service caller", `{"AWS":"111122223333"}`, "logs.us-east-1.amazonaws.com", false},
		{"one of a list", `{"AWS":["arn:aws:iam::111122223333:user/bob","` + testUser + `"]}`, testUser, true},
		{"malformed caller ARN matches only star", `{"AWS":"111122223333"}`, "arn:aws:iam::111122223333", false},
		{"anonymous caller matches no account", `{"AWS":"111122223333"}`, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, document(`{"Effect":"Allow","Principal":`+tt.principal+`,"Action":"kms:Decrypt","Resource":"*"}`))
			d := p.Evaluate(Request{Principal: tt.caller, Action: "kms:Decrypt", Resource: testKeyARN})
			if got := d.Statements[0].PrincipalMatched; got != tt.want {
				t.Errorf("PrincipalMatched = %v, want %v", got, tt.want)
			}
			if d.Allowed != tt.want {
				t.Errorf("Allowed = %v, want %v", d.Allowed, tt.want)
			}
		})
	}
}

func TestNotPrincipal(t *testing.T) {
	// The policy allows the whole account, then denies everyone not named
	// in NotPrincipal.
	allowAccount := `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:*","Resource":"*"}`
	tests := []struct {
		name         string
		notPrincipal string
		caller       string
		wantDenied   bool // the Deny statement applies
	}{
		{"user and account named: user exempt", `["` + testUser + `","` + testRoot + `"]`, testUser, false},
		{"only the user named: deny still applies", `["` + testUser + `"]`, testUser, true},
		{"other user of the account is denied", `["` + testUser + `","` + testRoot + `"]`, "arn:aws:iam::111122223333:user/bob", true},
		{"session, role and account named: session exempt", `["` + testSession + `","` + testRole + `","111122223333"]`, testSession, false},
		{"session and account named, role not: denied", `["` + testSession + `","111122223333"]`, testSession, true},
		{"role and account named, session not: denied", `["` + testRole + `","111122223333"]`, testSession, true},
		{"account named: root exempt", `["` + testRoot + `"]`, testRoot, false},
		{"account named: its users are not", `["` + testRoot + `"]`, testUser, true},
		{"service named: service exempt", `{"Service":"logs.us-east-1.amazonaws.com"}`, "logs.us-east-1.amazonaws.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			np := tt.notPrincipal
			if strings.HasPrefix(np, "[") {
				np = `{"AWS":` + np + `}`
			}
			p := mustParse(t, document(allowAccount, `{"Effect":"Deny","NotPrincipal":`+np+`,"Action":"kms:Decrypt","Resource":"*"}`))
			d := p.Evaluate(Request{Principal: tt.caller, Action: "kms:Decrypt", Resource: testKeyARN})
			if got := d.Statements[1].PrincipalMatched; got != tt.wantDenied {
				t.Errorf("Deny statement PrincipalMatched = %v, want %v", got, tt.wantDenied)
			}
			if d.ExplicitDeny != tt.wantDenied {
				t.Errorf("ExplicitDeny = %v, want %v\n%s", d.ExplicitDeny, tt.wantDenied, d.Explain())
			}
		})
	}
}

func TestActionAndResourceMatching(t *testing.T) {
	tests := []struct {
		name     string
		elements string // Action/NotAction and Resource/NotResource members
		action   string
		resource string
		want     bool
	}{
		{"exact action", `"Action":"kms:Decrypt","Resource":"*"`, "kms:Decrypt", testKeyARN, true},
		{"action is case-insensitive", `"Action":"KMS:decrypt","Resource":"*"`, "kms:Decrypt", testKeyARN, true},
		{"kms:*", `"Action":"kms:*","Resource":"*"`, "kms:ReEncryptFrom", testKeyARN, true},
		{"star", `"Action":"*","Resource":"*"`, "kms:Sign", testKeyARN, true},
		{"kms:Generate*", `"Action":"kms:Generate*","Resource":"*"`, "kms:GenerateDataKeyPairWithoutPlaintext", testKeyARN, true},
		{"kms:Generate* not Decrypt", `"Action":"kms:Generate*","Resource":"*"`, "kms:Decrypt", testKeyARN, false},
		{"kms:ReEncrypt?rom", `"Action":"kms:ReEncrypt?rom","Resource":"*"`, "kms:ReEncryptFrom", testKeyARN, true},
		{"other service", `"Action":"s3:*","Resource":"*"`, "kms:Decrypt", testKeyARN, false},
		{"action list", `"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"`, "kms:Decrypt", testKeyARN, true},
		{"NotAction excludes", `"NotAction":"kms:Decrypt","Resource":"*"`, "kms:Decrypt", testKeyARN, false},
		{"NotAction admits others", `"NotAction":["kms:Decrypt","kms:Put*"],"Resource":"*"`, "kms:Encrypt", testKeyARN, true},
		{"NotAction wildcard excludes", `"NotAction":"kms:Put*","Resource":"*"`, "kms:PutKeyPolicy", testKeyARN, false},
		{"resource ARN exact", `"Action":"kms:Decrypt","Resource":"` + testKeyARN + `"`, "kms:Decrypt", testKeyARN, true},
		{"resource ARN wildcards", `"Action":"kms:Decrypt","Resource":"arn:aws:kms:*:111122223333:key/*"`, "kms:Decrypt", testKeyARN, true},
		{"resource ARN other account", `"Action":"kms:Decrypt","Resource":"arn:aws:kms:*:999988887777:key/*"`, "kms:Decrypt", testKeyARN, false},
		{"resource ARN is case-sensitive", `"Action":"kms:Decrypt","Resource":"arn:aws:kms:*:111122223333:KEY/*"`, "kms:Decrypt", testKeyARN, false},
		{"resource star does not cross parts", `"Action":"kms:Decrypt","Resource":"arn:aws:kms:*"`, "kms:Decrypt", testKeyARN, false},
		{"NotResource excludes", `"Action":"kms:Decrypt","NotResource":"arn:aws:kms:*:111122223333:key/*"`, "kms:Decrypt", testKeyARN, false},
		{"NotResource admits others", `"Action":"kms:Decrypt","NotResource":"arn:aws:kms:*:999988887777:key/*"`, "kms:Decrypt", testKeyARN, true},
		{"no Action: no effect", `"Resource":"*"`, "kms:Decrypt", testKeyARN, false},
		{"no Resource: no effect", `"Action":"kms:*"`, "kms:Decrypt", testKeyARN, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, document(`{"Effect":"Allow","Principal":"*",`+tt.elements+`}`))
			d := p.Evaluate(Request{Principal: testUser, Action: tt.action, Resource: tt.resource})
			if d.Allowed != tt.want {
				t.Errorf("Allowed = %v, want %v\n%s", d.Allowed, tt.want, d.Explain())
			}
		})
	}
}

func TestDenyPrecedence(t *testing.T) {
	p := mustParse(t, document(
		`{"Sid":"Allow all","Effect":"Allow","Principal":{"AWS":"`+testRoot+`"},"Action":"kms:*","Resource":"*"}`,
		`{"Sid":"No decrypt without tenant","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"Null":{"kms:EncryptionContext:tenant":"true"}}}`,
	))
	tests := []struct {
		name             string
		req              Request
		wantAllowed      bool
		wantExplicitDeny bool
		wantMessage      string
	}{
		{
			name:        "allowed",
			req:         Request{Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN, Context: EncryptionContext(map[string]string{"tenant": "blue"})},
			wantAllowed: true,
		},
		{
			name:             "explicit deny beats allow",
			req:              Request{Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN},
			wantExplicitDeny: true,
			wantMessage:      "User: arn:aws:iam::111122223333:user/alice is not authorized to perform: kms:Decrypt on resource: " + testKeyARN + " with an explicit deny in a resource-based policy",
		},
		{
			name:        "implicit deny",
			req:         Request{Principal: "arn:aws:iam::999988887777:user/mallory", Action: "kms:Encrypt", Resource: testKeyARN},
			wantMessage: "User: arn:aws:iam::999988887777:user/mallory is not authorized to perform: kms:Encrypt on resource: " + testKeyARN + " because no resource-based policy allows the kms:Encrypt action",
		},
		{
			name:             "deny applies even when no allow does",
			req:              Request{Principal: "arn:aws:iam::999988887777:user/mallory", Action: "kms:Decrypt", Resource: testKeyARN},
			wantExplicitDeny: true,
			wantMessage:      "User: arn:aws:iam::999988887777:user/mallory is not authorized to perform: kms:Decrypt on resource: " + testKeyARN + " with an explicit deny in a resource-based policy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Evaluate(tt.req)
			if d.Allowed != tt.wantAllowed || d.ExplicitDeny != tt.wantExplicitDeny {
				t.Errorf("Allowed, ExplicitDeny = %v, %v; want %v, %v\n%s", d.Allowed, d.ExplicitDeny, tt.wantAllowed, tt.wantExplicitDeny, d.Explain())
			}
			if got := d.AccessDeniedMessage(tt.req); got != tt.wantMessage {
				t.Errorf("AccessDeniedMessage =\n%q\nwant\n%q", got, tt.wantMessage)
			}
		})
	}
}

func TestEvaluateDecision(t *testing.T) {
	p := mustParse(t, document(
		`{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/admin"},"Action":["kms:Put*","kms:Describe*"],"Resource":"*"}`,
		`{"Sid":"Use","Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:CallerAccount":"111122223333"},"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"tenant"}}}`,
		`{"Effect":"Allow","Principal":"*","Resource":"*"}`,
	))
	req := Request{
		Principal: testSession,
		Action:    "kms:Decrypt",
		Resource:  testKeyARN,
		Context:   MergeContext(CallerContext(testSession), EncryptionContext(map[string]string{"tenant": "blue"})),
	}
	got := p.Evaluate(req)
	want := Decision{
		Allowed: true,
		Request: req,
		Statements: []StatementResult{
			{Index: 0, Sid: "Admins", Effect: Allow, ResourceMatched: true, ConditionsMatched: true},
			{
				Index: 1, Sid: "Use", Effect: Allow, PrincipalMatched: true, ActionMatched: true, ResourceMatched: true, ConditionsMatched: true, Applies: true,
				Conditions: []ConditionResult{
					{Operator: "StringEquals", Key: "kms:CallerAccount", PolicyValues: []string{"111122223333"}, RequestValues: []string{"111122223333"}, KeyPresent: true, Matched: true},
					{Operator: "ForAnyValue:StringEquals", Key: "kms:EncryptionContextKeys", PolicyValues: []string{"tenant"}, RequestValues: []string{"tenant"}, KeyPresent: true, Matched: true},
				},
			},
			{
				Index: 2, Effect: Allow, PrincipalMatched: true, ResourceMatched: true, ConditionsMatched: true,
				Ineffective: "the statement has no Action or NotAction element, so KMS gives it no effect",
			},
		},
	}
	diff(t, "decision", got, want)
	if msg := got.AccessDeniedMessage(req); msg != "" {
		t.Errorf("AccessDeniedMessage of an allowed request = %q, want \"\"", msg)
	}
}

func TestEvaluateNilPolicy(t *testing.T) {
	var p *Policy
	req := Request{Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN}
	d := p.Evaluate(req)
	if d.Allowed || d.ExplicitDeny || len(d.Statements) != 0 {
		t.Errorf("nil policy decision = %+v, want an implicit deny", d)
	}
	if !strings.Contains(d.AccessDeniedMessage(req), "because no resource-based policy allows the kms:Decrypt action") {
		t.Errorf("AccessDeniedMessage = %q", d.AccessDeniedMessage(req))
	}
	if !strings.Contains(d.Explain(), "no statements") {
		t.Errorf("Explain = %q, want it to say there are no statements", d.Explain())
	}
}

func TestExplain(t *testing.T) {
	p := mustParse(t, document(
		`{"Sid":"Use","Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{
			"StringEquals":{"kms:CallerAccount":"111122223333"},
			"ForAnyValue:StringEquals":{"kms:EncryptionContextKeys":"owner"},
			"StringNotEquals":{"kms:EncryptionContext:tenant":"red"},
			"ForAllValues:StringLike":{"kms:EncryptionContextKeys":["t*","o*"]},
			"Null":{"kms:EncryptionContext:project":"true"}}}`,
		`{"Sid":"Deny encrypt","Effect":"Deny","Principal":"*","Action":"kms:Encrypt","Resource":"*"}`,
		`{"Effect":"Allow","Principal":"*","Resource":"*"}`,
	))
	tests := []struct {
		name   string
		req    Request
		want   []string
		absent []string
	}{
		{
			name: "allowed",
			req: Request{Principal: testSession, Action: "kms:Decrypt", Resource: testKeyARN,
				Context: MergeContext(CallerContext(testSession), EncryptionContext(map[string]string{"tenant": "blue", "owner": "x"}))},
			want: []string{
				`ALLOWED: statement 0 (Sid "Use") allows it`,
				"request: principal " + testSession + ", action kms:Decrypt, resource " + testKeyARN,
				`statement 0 (Sid "Use") (Allow): applies`,
				"  condition StringEquals kms:CallerAccount: holds",
				`statement 1 (Sid "Deny encrypt") (Deny): does not apply`,
				"statement 2 (Allow): does not apply",
				"  the statement has no Action or NotAction element, so KMS gives it no effect",
			},
			absent: []string{"FAILED"},
		},
		{
			name: "every kind of condition failure",
			req: Request{Principal: testSession, Action: "kms:Decrypt", Resource: testKeyARN,
				Context: EncryptionContext(map[string]string{"tenant": "red", "project": "x"})},
			want: []string{
				"DENIED (implicit deny): no statement allows it",
				`  condition StringEquals kms:CallerAccount: FAILED: the request does not have the key; the policy wants "111122223333"`,
				`  condition ForAnyValue:StringEquals kms:EncryptionContextKeys: FAILED: none of request values ["project", "tenant"] matches policy value "owner"`,
				`  condition StringNotEquals kms:EncryptionContext:tenant: FAILED: request value "red" matches policy value "red", which StringNotEquals forbids`,
				`  condition ForAllValues:StringLike kms:EncryptionContextKeys: FAILED: not every one of request values ["project", "tenant"] matches policy values ["t*", "o*"]`,
				`  condition Null kms:EncryptionContext:project: FAILED: the request has the key (value "x") but the policy wants it absent`,
			},
		},
		{
			name: "explicit deny",
			req:  Request{Principal: testUser, Action: "kms:Encrypt", Resource: testKeyARN},
			want: []string{
				`DENIED (explicit deny): statement 1 (Sid "Deny encrypt") denies it`,
				"  principal: DOES NOT MATCH",
				"  action:    DOES NOT MATCH",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Evaluate(tt.req).Explain()
			for _, w := range tt.want {
				if !strings.Contains(got, w+"\n") {
					t.Errorf("Explain lacks line %q\ngot:\n%s", w, got)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(got, a) {
					t.Errorf("Explain contains %q\ngot:\n%s", a, got)
				}
			}
		})
	}
}

// TestPrincipalDelegation: a statement that names the caller's account
// allows it only by delegating to IAM, unless the caller is the account's
// root user; every other kind of match is direct.
func TestPrincipalDelegation(t *testing.T) {
	tests := []struct {
		name      string
		principal string
		caller    string
		delegated bool
	}{
		{"account root ARN, a user of the account", `{"AWS":"` + testRoot + `"}`, testUser, true},
		{"bare account ID, a session of the account", `{"AWS":"111122223333"}`, testSession, true},
		{"account root ARN, the root user", `{"AWS":"` + testRoot + `"}`, testRoot, false},
		{"the role itself, a session", `{"AWS":"` + testRole + `"}`, testSession, false},
		{"account and user named, the user", `{"AWS":["` + testRoot + `","` + testUser + `"]}`, testUser, false},
		{"star", `"*"`, testUser, false},
		{"a service", `{"Service":"logs.us-east-1.amazonaws.com"}`, "logs.us-east-1.amazonaws.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, document(`{"Effect":"Allow","Principal":`+tt.principal+`,"Action":"kms:Decrypt","Resource":"*"}`))
			d := p.Evaluate(Request{Principal: tt.caller, Action: "kms:Decrypt", Resource: testKeyARN})
			if !d.Allowed || d.Delegated != tt.delegated || d.Statements[0].Delegates != tt.delegated {
				t.Errorf("Allowed %v, Delegated %v, Delegates %v; want delegated %v", d.Allowed, d.Delegated, d.Statements[0].Delegates, tt.delegated)
			}
		})
	}
}
