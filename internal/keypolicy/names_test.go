package keypolicy

import (
	"strings"
	"testing"
)

func TestCheckConditionKey(t *testing.T) {
	tests := []struct {
		key  string
		want string // "" when known; otherwise a substring of the reason
	}{
		{"kms:RecipientAttestation:ImageSha384", ""},
		{"KMS:recipientattestation:imagesha384", ""},
		{"kms:RecipientAttestation:PCR0", ""},
		{"kms:RecipientAttestation:PCR31", ""},
		{"kms:RecipientAttestation:PCR32", "the Nitro Secure Module has PCR0 to PCR31"},
		{"kms:RecipientAttestation:PCR01", "not an enclave PCR key"},
		{"kms:RecipientAttestation:NitroTPMPCR0", ""},
		{"kms:RecipientAttestation:NitroTPMPCR23", ""},
		{"kms:RecipientAttestation:NitroTPMPCR24", "a NitroTPM has PCR0 to PCR23"},
		{"kms:EncryptionContext:tenant", ""},
		{"kms:EncryptionContext:", "needs an encryption context key"},
		{"kms:EncryptionContextKeys", ""},
		{"kms:CallerAccount", ""},
		{"kms:ViaService", ""},
		{"kms:GrantIsForAWSResource", ""},
		{"kms:GrantOperations", ""},
		{"kms:GranteePrincipal", ""},
		{"kms:RetiringPrincipal", ""},
		{"kms:GrantConstraintType", ""},
		{"kms:BypassPolicyLockoutSafetyCheck", ""},
		{"aws:PrincipalArn", ""},
		{"aws:SourceIp", ""},
		{"aws:ResourceTag/team", ""},
		{"aws:ResourceTag/", "not a condition key KMS sets"},
		{"ec2:SourceInstanceARN", ""},
		{"kms:RecipientAttestaion:PCR0", `(did you mean "kms:RecipientAttestation:PCR0"?)`},
		{"kms:RecipientAttestation:ImageSHA385", `(did you mean "kms:RecipientAttestation:ImageSha384"?)`},
		{"kms:EncryptionContex:tenant", `(did you mean "kms:EncryptionContext:tenant"?)`},
		{"kms:CallerAcount", `(did you mean "kms:CallerAccount"?)`},
		{"s3:prefix", "neither a KMS nor a global condition key"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := CheckConditionKey(tt.key)
			switch {
			case tt.want == "" && got != "":
				t.Errorf("CheckConditionKey = %q, want a known key", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("CheckConditionKey = %q, want it to contain %q", got, tt.want)
			}
		})
	}
}

func TestKnownAction(t *testing.T) {
	for _, a := range []string{"kms:Decrypt", "KMS:decrypt", "kms:ReEncryptFrom", "kms:CreateGrant", "kms:UpdateAlias"} {
		if !KnownAction(a) {
			t.Errorf("KnownAction(%q) = false", a)
		}
	}
	for _, a := range []string{"kms:ReEncrypt", "kms:Decrpyt", "s3:GetObject", "Decrypt"} {
		if KnownAction(a) {
			t.Errorf("KnownAction(%q) = true", a)
		}
	}
	if got := CanonicalAction("kms:generatedatakey"); got != "kms:GenerateDataKey" {
		t.Errorf("CanonicalAction = %q", got)
	}
	if got := SuggestAction("kms:Decrpyt"); got != "kms:Decrypt" {
		t.Errorf("SuggestAction = %q", got)
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name      string
		statement string
		want      []string // one substring per expected warning, in order
	}{
		{"misspelt action", `{"Sid":"S","Effect":"Deny","Principal":"*","Action":"kms:Decrpyt","Resource":"*"}`,
			[]string{`statement 0 (Sid "S"): Action "kms:Decrpyt" is not a KMS action, so it never applies (did you mean "kms:Decrypt"?)`}},
		{"ReEncrypt is no action", `{"Effect":"Deny","Principal":"*","Action":"kms:ReEncrypt","Resource":"*"}`,
			[]string{`(did you mean "kms:ReEncrypt*"? ReEncrypt is authorized as kms:ReEncryptFrom and kms:ReEncryptTo)`}},
		{"wildcard matching nothing", `{"Effect":"Deny","Principal":"*","NotAction":"kms:Decrpyt*","Resource":"*"}`,
			[]string{`NotAction "kms:Decrpyt*" matches no KMS action`}},
		{"another service's action", `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"s3:GetObject","Resource":"*"}`,
			[]string{`a key policy controls only KMS actions`}},
		{"misspelt condition key in a Deny: it never holds", `{"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:RecipientAttestaion:PCR0":"ab"}}}`,
			[]string{`condition StringEquals: "kms:RecipientAttestaion:PCR0" is not a condition key KMS sets (did you mean "kms:RecipientAttestation:PCR0"?); without it in the request the condition never holds`}},
		{"misspelt condition key under a Not operator: it always holds", `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringNotEquals":{"kms:CallerAcount":"1"}}}`,
			[]string{`the condition always holds`}},
		{"upper-case hex with a case-sensitive operator", `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR0":"ABCDEF"}}}`,
			[]string{`use StringEqualsIgnoreCase`}},
		{"Allow for everyone without a condition", `{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`,
			[]string{`allows everyone (Principal "*") without a condition`}},
		{"an enclave's and a NitroTPM's keys required together", `{"Sid":"Both","Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"ab","kms:RecipientAttestation:NitroTPMPCR4":"cd"}}}`,
			[]string{`statement 0 (Sid "Both"): its conditions need "kms:RecipientAttestation:ImageSha384", a Nitro Enclave's, and "kms:RecipientAttestation:NitroTPMPCR4", an EC2 instance's NitroTPM's: a request carries one attestation document, of one kind, so they never hold together`}},
		{"the two kinds in two operators of one Allow", `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringLike":{"kms:RecipientAttestation:PCR8":"*"},"StringEquals":{"kms:RecipientAttestation:NitroTPMPCR12":"cd"}}}`,
			[]string{`never hold together`}},
		{"either kind admitted: IfExists and Not operators hold without the key", `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCaseIfExists":{"kms:RecipientAttestation:ImageSha384":"ab"},"StringNotEqualsIgnoreCase":{"kms:RecipientAttestation:NitroTPMPCR4":"cd"},"StringEqualsIgnoreCase":{"kms:RecipientAttestation:NitroTPMPCR7":"ef"}}}`, nil},
		{"a Deny may name both kinds", `{"Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:PCR0":"ab","kms:RecipientAttestation:NitroTPMPCR4":"cd"}}}`, nil},
		{"nothing to say", `{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":["kms:Decrypt","kms:Generate*"],"Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:PCR0":"AB"}}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := mustParse(t, document(tt.statement)).Warnings()
			if len(ws) != len(tt.want) {
				t.Fatalf("got %d warnings, want %d: %v", len(ws), len(tt.want), ws)
			}
			for i, w := range ws {
				if !strings.Contains(w.String(), tt.want[i]) {
					t.Errorf("warning %d = %q, want it to contain %q", i, w, tt.want[i])
				}
			}
		})
	}

	// Identity-based policies may name every service's actions.
	p := mustParseIdentity(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","kms:Decrypt"],"Resource":"*"}]}`)
	if ws := p.Warnings(); len(ws) != 0 {
		t.Errorf("identity policy warnings: %v", ws)
	}
}

func TestParseIdentity(t *testing.T) {
	p := mustParseIdentity(t, `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:*:111122223333:key/*"}}`)
	if !p.Identity || len(p.Statements) != 1 || p.Statements[0].Principal != nil {
		t.Fatalf("parsed %+v", p)
	}
	d := p.Evaluate(Request{Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN})
	if !d.Allowed || d.Delegated {
		t.Errorf("identity policy decision: %+v", d)
	}

	rejects := []struct {
		name, doc, want string
	}{
		{"a principal", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}]}`, "should not specify a principal"},
		{"no resource", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*"}]}`, "no Resource or NotResource"},
		{"misspelt element", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Actoin":"kms:*","Resource":"*"}]}`, `unknown statement element "Actoin" (did you mean "Action"?)`},
		{"misspelt top-level element", `{"Version":"2012-10-17","Statment":[]}`, `(did you mean "Statement"?)`},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIdentity([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseIdentity = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestParseIdentitySizeLimit: IAM counts characters without white space, so
// indentation does not count against the limit.
func TestParseIdentitySizeLimit(t *testing.T) {
	build := func(n int, pad string) []byte {
		t.Helper()
		head := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*","Sid":"`
		tail := `"}]}`
		sid := strings.Repeat("a", n-len(head)-len(tail))
		return []byte(head + pad + sid + tail)
	}
	if _, err := ParseIdentity(build(MaxIdentityPolicySize, "")); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	if _, err := ParseIdentity(build(MaxIdentityPolicySize-1, "")); err != nil {
		t.Errorf("below the limit: %v", err)
	}
	_, err := ParseIdentity(build(MaxIdentityPolicySize+1, ""))
	if err == nil || !strings.Contains(err.Error(), "IAM allows at most 10240") {
		t.Errorf("past the limit: %v", err)
	}
	// White space is free, up to MaxIdentityPolicyBytes in all.
	spaced := []byte(strings.Replace(string(build(MaxIdentityPolicySize, "")), `{"Version"`, `{`+strings.Repeat(" ", 1000)+`"Version"`, 1))
	if _, err := ParseIdentity(spaced); err != nil {
		t.Errorf("at the limit with white space: %v", err)
	}
	tooLong := append([]byte(strings.Repeat(" ", MaxIdentityPolicyBytes)), '{', '}')
	if _, err := ParseIdentity(tooLong); err == nil {
		t.Error("past MaxIdentityPolicyBytes: accepted")
	}
}
