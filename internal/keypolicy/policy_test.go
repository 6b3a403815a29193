package keypolicy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want *Policy
	}{
		{
			name: "statement as an object, principal star",
			doc:  `{"Version":"2012-10-17","Id":"key-default-1","Statement":{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}`,
			want: &Policy{Version: Version2012, ID: "key-default-1", Statements: []Statement{{
				Sid: "Enable IAM User Permissions", Effect: Allow,
				Principal: &Principals{Wildcard: true},
				Action:    []string{"kms:*"}, Resource: []string{"*"},
			}}},
		},
		{
			name: "statement array, AWS principals of every form, Service",
			doc: document(
				`{"Effect":"Allow","Principal":{"AWS":["111122223333","arn:aws:iam::111122223333:root","arn:aws:iam::111122223333:user/alice","arn:aws:iam::111122223333:role/path/app","arn:aws:sts::111122223333:assumed-role/app/s1","arn:aws:sts::111122223333:federated-user/bob","AROA123456789EXAMPLE","*"]},"Action":["kms:Decrypt","kms:Generate*"],"Resource":"*"}`,
				`{"Effect":"Deny","Principal":{"Service":"logs.us-east-1.amazonaws.com"},"NotAction":"kms:Describe?ey","NotResource":["arn:aws:kms:*:111122223333:key/*"]}`,
			),
			want: &Policy{Version: Version2012, Statements: []Statement{
				{
					Effect: Allow,
					Principal: &Principals{AWS: []string{
						"111122223333", "arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/alice",
						"arn:aws:iam::111122223333:role/path/app", "arn:aws:sts::111122223333:assumed-role/app/s1",
						"arn:aws:sts::111122223333:federated-user/bob", "AROA123456789EXAMPLE", "*",
					}},
					Action:   []string{"kms:Decrypt", "kms:Generate*"},
					Resource: []string{"*"},
				},
				{
					Effect:      Deny,
					Principal:   &Principals{Service: []string{"logs.us-east-1.amazonaws.com"}},
					NotAction:   []string{"kms:Describe?ey"},
					NotResource: []string{"arn:aws:kms:*:111122223333:key/*"},
				},
			}},
		},
		{
			name: "conditions keep document order; values may be lists, booleans and numbers",
			doc: document(`{"Effect":"Allow","Principal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*","Condition":{
				"StringEqualsIgnoreCase":{"kms:RecipientAttestation:PCR1":"AB","kms:RecipientAttestation:PCR0":["cd","ef"]},
				"ForAllValues:StringLikeIfExists":{"kms:EncryptionContextKeys":["tenant*", 7]},
				"Bool":{"aws:SecureTransport":true},
				"Null":{"kms:EncryptionContext:tenant":"FALSE"}}}`),
			want: &Policy{Version: Version2012, Statements: []Statement{{
				Effect: Allow, Principal: &Principals{AWS: []string{"111122223333"}},
				Action: []string{"kms:Decrypt"}, Resource: []string{"*"},
				Conditions: []Condition{
					{Operator: "StringEqualsIgnoreCase", Base: "StringEqualsIgnoreCase", Key: "kms:RecipientAttestation:PCR1", Values: []string{"AB"}},
					{Operator: "StringEqualsIgnoreCase", Base: "StringEqualsIgnoreCase", Key: "kms:RecipientAttestation:PCR0", Values: []string{"cd", "ef"}},
					{Operator: "ForAllValues:StringLikeIfExists", Qualifier: ForAllValues, Base: "StringLike", IfExists: true, Key: "kms:EncryptionContextKeys", Values: []string{"tenant*", "7"}},
					{Operator: "Bool", Base: "Bool", Key: "aws:SecureTransport", Values: []string{"true"}},
					{Operator: "Null", Base: "Null", Key: "kms:EncryptionContext:tenant", Values: []string{"false"}},
				},
			}}},
		},
		{
			name: "no Version is 2008-10-17, where ${ is literal",
			doc:  `{"Statement":[{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"arn:aws:kms:us-east-1:111122223333:key/${x}"}]}`,
			want: &Policy{Version: Version2008, Statements: []Statement{{
				Effect: Allow, Principal: &Principals{Wildcard: true},
				Action: []string{"kms:Decrypt"}, Resource: []string{"arn:aws:kms:us-east-1:111122223333:key/${x}"},
			}}},
		},
		{
			name: "statement without Action or Resource is accepted (KMS gives it no effect)",
			doc:  document(`{"Effect":"Allow","Principal":"*"}`),
			want: &Policy{Version: Version2012, Statements: []Statement{{Effect: Allow, Principal: &Principals{Wildcard: true}}}},
		},
		{
			name: "NotPrincipal with Deny",
			doc:  document(`{"Effect":"Deny","NotPrincipal":{"AWS":["arn:aws:iam::111122223333:user/alice","111122223333"]},"Action":"kms:*","Resource":"*"}`),
			want: &Policy{Version: Version2012, Statements: []Statement{{
				Effect: Deny, NotPrincipal: &Principals{AWS: []string{"arn:aws:iam::111122223333:user/alice", "111122223333"}},
				Action: []string{"kms:*"}, Resource: []string{"*"},
			}}},
		},
		{
			name: "Latin-1 characters, tabs and CRLF are allowed",
			doc:  "{\r\n\t\"Statement\": {\"Sid\": \"Clé de l'équipe ±\", \"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"kms:Decrypt\", \"Resource\": \"*\"}}",
			want: &Policy{Version: Version2008, Statements: []Statement{{
				Sid: "Clé de l'équipe ±", Effect: Allow, Principal: &Principals{Wildcard: true},
				Action: []string{"kms:Decrypt"}, Resource: []string{"*"},
			}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustParse(t, tt.doc)
			diff(t, "policy", got, tt.want, cmpPolicy)
		})
	}
}

func TestParseRejects(t *testing.T) {
	stmt := func(body string) string { return document(`{` + body + `}`) }
	const ok = `"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"`
	tests := []struct {
		name          string
		doc           string
		wantStatement int
		wantReason    string // substring of Reason
	}{
		{"empty document", ``, -1, "is empty"},
		{"whitespace only", " \n\t ", -1, "is empty"},
		{"bad JSON: truncated", `{"Version":"2012-10-17","Statement":[`, -1, "not valid JSON"},
		{"bad JSON: trailing comma", `{"Statement":{` + ok + `,}}`, -1, "not valid JSON"},
		{"bad JSON: data after the document", document(`{`+ok+`}`) + `{}`, -1, "data after the end"},
		{"not an object", `[` + document(`{`+ok+`}`) + `]`, -1, "must be a JSON object"},
		{"invalid UTF-8", "{\"Statement\":{\"Sid\":\"\xff\"," + ok + "}}", -1, "not valid UTF-8"},
		{"control character", "{\"Statement\":{\"Sid\":\"a\x01\"," + ok + "}}", -1, "U+0001"},
		{"character beyond Latin-1", "{\"Statement\":{\"Sid\":\"Ā\"," + ok + "}}", -1, "U+0100"},
		{"duplicate member", `{"Statement":{"Effect":"Allow","Effect":"Deny","Principal":"*","Action":"kms:Decrypt","Resource":"*"}}`, -1, `"Effect" appears twice`},
		{"nested too deep", document(`{` + ok + `,"Condition":{"StringEquals":{"kms:k":[["x"]]}}}`), -1, "nests objects or arrays deeper"},
		{"unknown Version", `{"Version":"2012-10-18","Statement":{` + ok + `}}`, -1, "Version must be"},
		{"unknown top-level element", `{"Version":"2012-10-17","Statements":{` + ok + `}}`, -1, `unknown top-level element "Statements"`},
		{"no Statement", `{"Version":"2012-10-17"}`, -1, "no Statement element"},
		{"empty Statement list", `{"Version":"2012-10-17","Statement":[]}`, -1, "no statements"},
		{"Statement is a string", `{"Statement":"Allow"}`, -1, "object or an array"},
		{"statement is a string", document(`"x"`), 0, "a statement must be an object"},
		{"missing Effect", stmt(`"Principal":"*","Action":"kms:Decrypt","Resource":"*"`), 0, "no Effect element"},
		{"unknown Effect", stmt(`"Effect":"Permit","Principal":"*","Action":"kms:Decrypt","Resource":"*"`), 0, `Effect "Permit" is not valid`},
		{"Effect is case-sensitive", stmt(`"Effect":"allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"`), 0, `Effect "allow" is not valid`},
		{"Effect not a string", stmt(`"Effect":true,"Principal":"*","Action":"kms:Decrypt","Resource":"*"`), 0, "Effect a boolean is not valid"},
		{"element names are case-sensitive", stmt(`"effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"`), 0, `unknown statement element "effect"`},
		{"Sid not a string", stmt(`"Sid":1,` + ok), 0, "Sid must be a string"},
		{"no principal", stmt(`"Effect":"Allow","Action":"kms:Decrypt","Resource":"*"`), 0, "must contain one or more principals"},
		{"Principal and NotPrincipal", stmt(`"Effect":"Deny","Principal":"*","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*"`), 0, "both Principal and NotPrincipal"},
		{"principal string other than star", stmt(`"Effect":"Allow","Principal":"111122223333","Action":"kms:Decrypt","Resource":"*"`), 0, "invalid principals"},
		{"principal user name", stmt(`"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:Decrypt","Resource":"*"`), 0, "invalid principals"},
		{"principal partial wildcard", stmt(`"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/app-*"},"Action":"kms:Decrypt","Resource":"*"`), 0, "uses a wildcard"},
		{"principal is a group", stmt(`"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:group/admins"},"Action":"kms:Decrypt","Resource":"*"`), 0, "invalid principals"},
		{"principal account too short", stmt(`"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::11112222333:root"},"Action":"kms:Decrypt","Resource":"*"`), 0, "12-digit account"},
		{"principal session without session name", stmt(`"Effect":"Allow","Principal":{"AWS":"arn:aws:sts::111122223333:assumed-role/app"},"Action":"kms:Decrypt","Resource":"*"`), 0, "assumed-role/ROLE/SESSION"},
		{"principal Federated", stmt(`"Effect":"Allow","Principal":{"Federated":"cognito-identity.amazonaws.com"},"Action":"kms:Decrypt","Resource":"*"`), 0, `principal type "Federated" is not supported`},
		{"principal empty object", stmt(`"Effect":"Allow","Principal":{},"Action":"kms:Decrypt","Resource":"*"`), 0, "names no principal"},
		{"principal empty list", stmt(`"Effect":"Allow","Principal":{"AWS":[]},"Action":"kms:Decrypt","Resource":"*"`), 0, "empty list"},
		{"bad service principal", stmt(`"Effect":"Allow","Principal":{"Service":"logs"},"Action":"kms:Decrypt","Resource":"*"`), 0, "not a service principal"},
		{"NotPrincipal with Allow", stmt(`"Effect":"Allow","NotPrincipal":{"AWS":"111122223333"},"Action":"kms:Decrypt","Resource":"*"`), 0, "only with \"Effect\": \"Deny\""},
		{"NotPrincipal star", stmt(`"Effect":"Deny","NotPrincipal":"*","Action":"kms:Decrypt","Resource":"*"`), 0, "NotPrincipal cannot be \"*\""},
		{"Action and NotAction", stmt(`"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","NotAction":"kms:Encrypt","Resource":"*"`), 0, "both Action and NotAction"},
		{"Resource and NotResource", stmt(`"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","NotResource":"*"`), 0, "both Resource and NotResource"},
		{"Action without service", stmt(`"Effect":"Allow","Principal":"*","Action":"Decrypt","Resource":"*"`), 0, "prefaced by a service"},
		{"Action with two colons", stmt(`"Effect":"Allow","Principal":"*","Action":"kms:De:crypt","Resource":"*"`), 0, "only one colon"},
		{"Action bad service", stmt(`"Effect":"Allow","Principal":"*","Action":"k ms:Decrypt","Resource":"*"`), 0, "service \"k ms\" is not valid"},
		{"Action empty list", stmt(`"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"`), 0, "Action is an empty list"},
		{"Action not strings", stmt(`"Effect":"Allow","Principal":"*","Action":[1],"Resource":"*"`), 0, "must list strings"},
		{"Resource not an ARN", stmt(`"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"key/1"`), 0, `must be in ARN format or "*"`},
		{"Resource policy variable", stmt(`"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"arn:aws:kms:us-east-1:111122223333:key/${aws:username}"`), 0, "policy variable"},
		{"Condition not an object", stmt(ok + `,"Condition":[]`), 0, "Condition must be an object"},
		{"unknown operator", stmt(ok + `,"Condition":{"StringEqualz":{"kms:k":"v"}}`), 0, `unknown condition operator "StringEqualz"`},
		{"unknown qualifier", stmt(ok + `,"Condition":{"ForSomeValues:StringEquals":{"kms:k":"v"}}`), 0, "unknown condition operator"},
		{"operator names are case-sensitive", stmt(ok + `,"Condition":{"stringequals":{"kms:k":"v"}}`), 0, "unknown condition operator"},
		{"unsupported IAM operator", stmt(ok + `,"Condition":{"NumericLessThan":{"kms:k":"1"}}`), 0, "does not evaluate NumericLessThan"},
		{"Null with IfExists", stmt(ok + `,"Condition":{"NullIfExists":{"kms:k":"true"}}`), 0, "Null cannot take IfExists"},
		{"Null with a qualifier", stmt(ok + `,"Condition":{"ForAnyValue:Null":{"kms:k":"true"}}`), 0, "takes no set qualifier"},
		{"operator block not an object", stmt(ok + `,"Condition":{"StringEquals":"v"}`), 0, "must map condition keys"},
		{"operator block empty", stmt(ok + `,"Condition":{"StringEquals":{}}`), 0, "names no condition key"},
		{"condition key without service", stmt(ok + `,"Condition":{"StringEquals":{"CallerAccount":"1"}}`), 0, "prefaced by a service"},
		{"condition value null", stmt(ok + `,"Condition":{"StringEquals":{"kms:k":null}}`), 0, "not null"},
		{"condition value empty list", stmt(ok + `,"Condition":{"StringEquals":{"kms:k":[]}}`), 0, "empty list of values"},
		{"condition value object", stmt(ok + `,"Condition":{"StringEquals":{"kms:k":{"a":"b"}}}`), 0, "not an object"},
		{"Bool value not a boolean", stmt(ok + `,"Condition":{"Bool":{"aws:SecureTransport":"yes"}}`), 0, "not true or false"},
		{"condition policy variable", stmt(ok + `,"Condition":{"StringEquals":{"kms:k":"${aws:username}"}}`), 0, "policy variables"},
		{"error names the statement index", document(`{`+ok+`}`, `{"Sid":"second","Effect":"Maybe","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`), 1, `Effect "Maybe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse accepted the document: %+v", p)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error is %T (%v), want *ParseError", err, err)
			}
			if got, want := pe.Exception, ExceptionMalformedPolicyDocument; got != want {
				t.Errorf("Exception = %q, want %q", got, want)
			}
			if got, want := pe.Statement, tt.wantStatement; got != want {
				t.Errorf("Statement = %d, want %d (%v)", got, want, err)
			}
			if !strings.Contains(pe.Reason, tt.wantReason) {
				t.Errorf("Reason = %q, want it to contain %q", pe.Reason, tt.wantReason)
			}
			if !strings.HasPrefix(err.Error(), "keypolicy: ") {
				t.Errorf("Error() = %q, want the keypolicy: prefix", err.Error())
			}
		})
	}
}

func TestParseErrorFormat(t *testing.T) {
	_, err := Parse([]byte(document(
		`{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`,
		`{"Sid":"Allow use","Effect":"Permit","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`,
	)))
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("error is %T (%v), want *ParseError", err, err)
	}
	want := &ParseError{
		Exception: ExceptionMalformedPolicyDocument,
		Statement: 1,
		Sid:       "Allow use",
		Reason:    `Effect "Permit" is not valid: it must be "Allow" or "Deny"`,
	}
	diff(t, "ParseError", pe, want)
	if got, want := err.Error(), `keypolicy: statement 1 (Sid "Allow use"): Effect "Permit" is not valid: it must be "Allow" or "Deny"`; got != want {
		t.Errorf("Error() = %q\nwant      %q", got, want)
	}
	if got, want := pe.Message(), `Effect "Permit" is not valid: it must be "Allow" or "Deny" (statement 1, Sid "Allow use")`; got != want {
		t.Errorf("Message() = %q\nwant        %q", got, want)
	}
}

// TestParseErrorQuotesBriefly checks that an error repeats at most a short
// prefix of an untrusted string from the document.
func TestParseErrorQuotesBriefly(t *testing.T) {
	long := strings.Repeat("A", 5000)
	_, err := Parse([]byte(document(`{"Effect":"` + long + `","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`)))
	if err == nil {
		t.Fatal("Parse accepted an unknown Effect")
	}
	if n := len(err.Error()); n > 200 {
		t.Errorf("error is %d bytes long, want a short one: %.120s…", n, err.Error())
	}
}

// sizedDocument returns a valid key policy of exactly n bytes, padded in
// its Sid.
func sizedDocument(t testing.TB, n int) []byte {
	t.Helper()
	head := `{"Version":"2012-10-17","Statement":[{"Sid":"`
	tail := `","Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}]}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("cannot build a %d-byte document", n)
	}
	doc := head + strings.Repeat("s", pad) + tail
	if len(doc) != n {
		t.Fatalf("built %d bytes, want %d", len(doc), n)
	}
	return []byte(doc)
}

func TestParseSizeLimit(t *testing.T) {
	if MaxPolicySize != 32768 {
		t.Fatalf("MaxPolicySize = %d, want KMS's 32768", MaxPolicySize)
	}
	t.Run("at the limit", func(t *testing.T) {
		p, err := Parse(sizedDocument(t, MaxPolicySize))
		if err != nil {
			t.Fatalf("Parse of a %d-byte policy: %v", MaxPolicySize, err)
		}
		if got := len(p.Statements[0].Sid); got < 32000 {
			t.Errorf("Sid is %d bytes, want the padding", got)
		}
	})
	t.Run("one past the limit", func(t *testing.T) {
		_, err := Parse(sizedDocument(t, MaxPolicySize+1))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("error is %T (%v), want *ParseError", err, err)
		}
		want := &ParseError{
			Exception: ExceptionLimitExceeded,
			Statement: -1,
			Reason:    fmt.Sprintf("the key policy is %d bytes; KMS allows at most %d bytes", MaxPolicySize+1, MaxPolicySize),
		}
		diff(t, "ParseError", pe, want)
	})
}

func TestStatementIneffective(t *testing.T) {
	tests := []struct {
		name string
		stmt string
		want string
	}{
		{"complete", `{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*"}`, ""},
		{"no Action", `{"Effect":"Allow","Principal":"*","Resource":"*"}`, "no Action or NotAction"},
		{"no Resource", `{"Effect":"Allow","Principal":"*","NotAction":"kms:Decrypt"}`, "no Resource or NotResource"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, document(tt.stmt))
			got := p.Statements[0].Ineffective()
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("Ineffective() = %q, want %q", got, tt.want)
			}
		})
	}
}
