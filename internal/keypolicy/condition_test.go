package keypolicy

import "testing"

// ctx builds a request context from key/values pairs.
func ctx(kv ...any) map[string][]string {
	out := map[string][]string{}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		switch v := kv[i+1].(type) {
		case string:
			out[k] = append(out[k], v)
		case []string:
			out[k] = append(out[k], v...)
		}
	}
	return out
}

func TestConditionOperators(t *testing.T) {
	const pcr = "kms:RecipientAttestation:PCR0"
	const eck = "kms:EncryptionContextKeys"
	tests := []struct {
		name      string
		condition string // the Condition element
		context   map[string][]string
		want      bool
	}{
		// StringEquals: exact, case-sensitive; values OR'd; absent key fails.
		{"StringEquals match", `{"StringEquals":{"kms:CallerAccount":"111122223333"}}`, ctx("kms:CallerAccount", "111122223333"), true},
		{"StringEquals mismatch", `{"StringEquals":{"kms:CallerAccount":"111122223333"}}`, ctx("kms:CallerAccount", "444455556666"), false},
		{"StringEquals is case-sensitive", `{"StringEquals":{"kms:EncryptionContext:tenant":"Blue"}}`, ctx("kms:EncryptionContext:tenant", "blue"), false},
		{"StringEquals has no wildcards", `{"StringEquals":{"kms:EncryptionContext:tenant":"b*"}}`, ctx("kms:EncryptionContext:tenant", "blue"), false},
		{"StringEquals values are OR'd", `{"StringEquals":{"kms:CallerAccount":["444455556666","111122223333"]}}`, ctx("kms:CallerAccount", "111122223333"), true},
		{"StringEquals absent key fails", `{"StringEquals":{"kms:CallerAccount":"111122223333"}}`, ctx(), false},
		{"StringEquals key present with no values counts as absent", `{"StringEquals":{"kms:CallerAccount":"111122223333"}}`, map[string][]string{"kms:CallerAccount": {}}, false},
		{"StringEqualsIfExists absent key holds", `{"StringEqualsIfExists":{"kms:CallerAccount":"111122223333"}}`, ctx(), true},
		{"StringEqualsIfExists present key is checked", `{"StringEqualsIfExists":{"kms:CallerAccount":"111122223333"}}`, ctx("kms:CallerAccount", "444455556666"), false},
		// Condition key names are not case-sensitive.
		{"key name case-insensitive (policy upper)", `{"StringEquals":{"KMS:CALLERACCOUNT":"111122223333"}}`, ctx("kms:CallerAccount", "111122223333"), true},
		{"key name case-insensitive (context upper)", `{"StringEquals":{"kms:calleraccount":"111122223333"}}`, ctx("KMS:CallerAccount", "111122223333"), true},

		// StringNotEquals: NOR of the values; absent key holds.
		{"StringNotEquals different", `{"StringNotEquals":{"kms:CallerAccount":"111122223333"}}`, ctx("kms:CallerAccount", "444455556666"), true},
		{"StringNotEquals same", `{"StringNotEquals":{"kms:CallerAccount":"111122223333"}}`, ctx("kms:CallerAccount", "111122223333"), false},
		{"StringNotEquals values are NOR'd", `{"StringNotEquals":{"kms:CallerAccount":["444455556666","111122223333"]}}`, ctx("kms:CallerAccount", "111122223333"), false},
		{"StringNotEquals absent key holds", `{"StringNotEquals":{"kms:CallerAccount":"111122223333"}}`, ctx(), true},
		{"StringNotEquals several request values, one listed", `{"StringNotEquals":{"kms:EncryptionContextKeys":"a"}}`, ctx(eck, []string{"a", "b"}), false},
		{"StringNotEqualsIfExists absent key holds", `{"StringNotEqualsIfExists":{"kms:CallerAccount":"111122223333"}}`, ctx(), true},

		// IgnoreCase variants.
		{"StringEqualsIgnoreCase upper policy, lower request", `{"StringEqualsIgnoreCase":{"` + pcr + `":"ABCDEF01"}}`, ctx(pcr, "abcdef01"), true},
		{"StringEqualsIgnoreCase mismatch", `{"StringEqualsIgnoreCase":{"` + pcr + `":"ABCDEF01"}}`, ctx(pcr, "abcdef02"), false},
		{"StringEqualsIgnoreCase absent key fails", `{"StringEqualsIgnoreCase":{"` + pcr + `":"ABCDEF01"}}`, ctx(), false},
		{"StringEqualsIgnoreCaseIfExists absent key holds", `{"StringEqualsIgnoreCaseIfExists":{"` + pcr + `":"ABCDEF01"}}`, ctx(), true},
		{"StringNotEqualsIgnoreCase same but for case", `{"StringNotEqualsIgnoreCase":{"` + pcr + `":"ABCDEF01"}}`, ctx(pcr, "abcdef01"), false},
		{"StringNotEqualsIgnoreCase different", `{"StringNotEqualsIgnoreCase":{"` + pcr + `":"ABCDEF01"}}`, ctx(pcr, "00"), true},
		{"StringNotEqualsIgnoreCase absent key holds", `{"StringNotEqualsIgnoreCase":{"` + pcr + `":"ABCDEF01"}}`, ctx(), true},

		// StringLike: * and ?, case-sensitive.
		{"StringLike star", `{"StringLike":{"kms:EncryptionContext:aws:cloudtrail:arn":"arn:aws:cloudtrail:*:111122223333:trail/*"}}`, ctx("kms:EncryptionContext:aws:cloudtrail:arn", "arn:aws:cloudtrail:us-east-1:111122223333:trail/main"), true},
		{"StringLike star matches empty", `{"StringLike":{"kms:EncryptionContext:t":"ab*"}}`, ctx("kms:EncryptionContext:t", "ab"), true},
		{"StringLike question mark is one character", `{"StringLike":{"kms:EncryptionContext:t":"a?c"}}`, ctx("kms:EncryptionContext:t", "abc"), true},
		{"StringLike question mark is not zero characters", `{"StringLike":{"kms:EncryptionContext:t":"a?c"}}`, ctx("kms:EncryptionContext:t", "ac"), false},
		{"StringLike question mark matches one Latin-1 character", `{"StringLike":{"kms:EncryptionContext:t":"caf?"}}`, ctx("kms:EncryptionContext:t", "café"), true},
		{"StringLike is case-sensitive", `{"StringLike":{"kms:EncryptionContext:t":"Ab*"}}`, ctx("kms:EncryptionContext:t", "abc"), false},
		{"StringLike backtracks", `{"StringLike":{"kms:EncryptionContext:t":"*a*b"}}`, ctx("kms:EncryptionContext:t", "xaxaxb"), true},
		{"StringLike absent key fails", `{"StringLike":{"kms:EncryptionContext:t":"*"}}`, ctx(), false},
		{"StringNotLike matching value", `{"StringNotLike":{"kms:EncryptionContext:t":"prod-*"}}`, ctx("kms:EncryptionContext:t", "prod-1"), false},
		{"StringNotLike other value", `{"StringNotLike":{"kms:EncryptionContext:t":"prod-*"}}`, ctx("kms:EncryptionContext:t", "dev-1"), true},
		{"StringNotLike absent key holds", `{"StringNotLike":{"kms:EncryptionContext:t":"prod-*"}}`, ctx(), true},
		{"StringLikeIfExists absent key holds", `{"StringLikeIfExists":{"kms:EncryptionContext:t":"prod-*"}}`, ctx(), true},

		// ArnLike / ArnEquals: per-part wildcards.
		{"ArnLike role wildcard", `{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/app-*"}}`, ctx("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app-web"), true},
		{"ArnLike star does not cross a colon", `{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*"}}`, ctx("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app"), false},
		{"ArnEquals takes wildcards too", `{"ArnEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/*"}}`, ctx("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app"), true},
		{"ArnLike non-ARN request value", `{"ArnLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/*"}}`, ctx("aws:PrincipalArn", "alice"), false},
		{"ArnNotLike matching", `{"ArnNotLike":{"aws:PrincipalArn":"arn:aws:iam::*:role/app-*"}}`, ctx("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app-web"), false},
		{"ArnNotEquals absent key holds", `{"ArnNotEquals":{"aws:PrincipalArn":"arn:aws:iam::111122223333:role/app"}}`, ctx(), true},

		// Bool.
		{"Bool true", `{"Bool":{"kms:GrantIsForAWSResource":"true"}}`, ctx("kms:GrantIsForAWSResource", "true"), true},
		{"Bool JSON true vs request TRUE", `{"Bool":{"kms:GrantIsForAWSResource":true}}`, ctx("kms:GrantIsForAWSResource", "TRUE"), true},
		{"Bool false vs true", `{"Bool":{"kms:GrantIsForAWSResource":"false"}}`, ctx("kms:GrantIsForAWSResource", "true"), false},
		{"Bool non-boolean request value", `{"Bool":{"kms:GrantIsForAWSResource":"true"}}`, ctx("kms:GrantIsForAWSResource", "yes"), false},
		{"Bool absent key fails", `{"Bool":{"kms:GrantIsForAWSResource":"true"}}`, ctx(), false},
		{"BoolIfExists absent key holds", `{"BoolIfExists":{"kms:GrantIsForAWSResource":"true"}}`, ctx(), true},

		// Null.
		{"Null true, key absent", `{"Null":{"` + pcr + `":"true"}}`, ctx(), true},
		{"Null true, key present", `{"Null":{"` + pcr + `":"true"}}`, ctx(pcr, "ab"), false},
		{"Null false, key present", `{"Null":{"` + pcr + `":"false"}}`, ctx(pcr, "ab"), true},
		{"Null false, key absent", `{"Null":{"` + pcr + `":false}}`, ctx(), false},
		{"Null false, key with no values", `{"Null":{"` + pcr + `":"false"}}`, map[string][]string{pcr: nil}, false},

		// ForAnyValue.
		{"ForAnyValue one of several matches", `{"ForAnyValue:StringEquals":{"` + eck + `":["tenant","project"]}}`, ctx(eck, []string{"other", "tenant"}), true},
		{"ForAnyValue none matches", `{"ForAnyValue:StringEquals":{"` + eck + `":["tenant"]}}`, ctx(eck, []string{"other", "x"}), false},
		{"ForAnyValue absent key fails", `{"ForAnyValue:StringEquals":{"` + eck + `":["tenant"]}}`, ctx(), false},
		{"ForAnyValue empty key fails", `{"ForAnyValue:StringEquals":{"` + eck + `":["tenant"]}}`, map[string][]string{eck: {}}, false},
		{"ForAnyValue IfExists absent key holds", `{"ForAnyValue:StringEqualsIfExists":{"` + eck + `":["tenant"]}}`, ctx(), true},
		{"ForAnyValue negated: some value unlisted", `{"ForAnyValue:StringNotEquals":{"` + eck + `":["tenant","project"]}}`, ctx(eck, []string{"tenant", "other"}), true},
		{"ForAnyValue negated: all values listed", `{"ForAnyValue:StringNotEquals":{"` + eck + `":["tenant","project"]}}`, ctx(eck, []string{"tenant", "project"}), false},
		{"ForAnyValue negated: absent key fails", `{"ForAnyValue:StringNotEquals":{"` + eck + `":["tenant"]}}`, ctx(), false},
		{"ForAnyValue StringLike", `{"ForAnyValue:StringLike":{"` + eck + `":"ten*"}}`, ctx(eck, []string{"a", "tenant"}), true},
		{"ForAnyValue Bool", `{"ForAnyValue:Bool":{"kms:b":"true"}}`, ctx("kms:b", []string{"false", "true"}), true},

		// ForAllValues.
		{"ForAllValues all listed", `{"ForAllValues:StringEquals":{"` + eck + `":["tenant","project"]}}`, ctx(eck, []string{"project", "tenant"}), true},
		{"ForAllValues one unlisted", `{"ForAllValues:StringEquals":{"` + eck + `":["tenant","project"]}}`, ctx(eck, []string{"tenant", "other"}), false},
		{"ForAllValues absent key holds", `{"ForAllValues:StringEquals":{"` + eck + `":["tenant"]}}`, ctx(), true},
		{"ForAllValues empty key holds", `{"ForAllValues:StringEquals":{"` + eck + `":["tenant"]}}`, map[string][]string{eck: {}}, true},
		{"ForAllValues IgnoreCase", `{"ForAllValues:StringEqualsIgnoreCase":{"` + eck + `":["Tenant"]}}`, ctx(eck, []string{"TENANT", "tenant"}), true},
		{"ForAllValues negated: none listed", `{"ForAllValues:StringNotLike":{"` + eck + `":["secret*"]}}`, ctx(eck, []string{"tenant", "project"}), true},
		{"ForAllValues negated: one listed", `{"ForAllValues:StringNotLike":{"` + eck + `":["secret*"]}}`, ctx(eck, []string{"tenant", "secret-x"}), false},
		{"ForAllValues negated: absent key holds", `{"ForAllValues:StringNotEquals":{"` + eck + `":["x"]}}`, ctx(), true},

		// Several keys and several operators are AND'd.
		{"two keys both hold", `{"StringEquals":{"kms:a":"1","kms:b":"2"}}`, ctx("kms:a", "1", "kms:b", "2"), true},
		{"two keys, one fails", `{"StringEquals":{"kms:a":"1","kms:b":"2"}}`, ctx("kms:a", "1", "kms:b", "3"), false},
		{"two operators both hold", `{"StringEquals":{"kms:a":"1"},"Null":{"kms:b":"false"}}`, ctx("kms:a", "1", "kms:b", "x"), true},
		{"two operators, one fails", `{"StringEquals":{"kms:a":"1"},"Null":{"kms:b":"false"}}`, ctx("kms:a", "1"), false},
		{"same key under two operators", `{"StringLike":{"kms:a":"1*"},"StringNotEquals":{"kms:a":"12"}}`, ctx("kms:a", "12"), false},
		{"key name folds across byte lengths (Kelvin sign)", `{"StringEquals":{"kms:key":"v"}}`, ctx("kms:\u212aey", "v"), true},
		{"key name of another length", `{"StringEquals":{"kms:key":"v"}}`, ctx("kms:keys", "v", "kms:ke", "v"), false},
		// Keys that differ only in case are one key.
		{"context keys merged across case", `{"ForAllValues:StringEquals":{"kms:k":["x"]}}`, map[string][]string{"kms:k": {"x"}, "KMS:K": {"y"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, document(`{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":`+tt.condition+`}`))
			d := p.Evaluate(Request{Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN, Context: tt.context})
			if d.Allowed != tt.want {
				t.Errorf("Allowed = %v, want %v\n%s", d.Allowed, tt.want, d.Explain())
			}
			if got := d.Statements[0].ConditionsMatched; got != tt.want {
				t.Errorf("ConditionsMatched = %v, want %v", got, tt.want)
			}
			held := true
			for _, c := range d.Statements[0].Conditions {
				held = held && c.Matched
			}
			if held != tt.want {
				t.Errorf("AND of condition results = %v, want %v", held, tt.want)
			}
		})
	}
}

func TestConditionResultValues(t *testing.T) {
	p := mustParse(t, document(`{"Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":"*","Condition":{
		"StringEquals":{"kms:EncryptionContext:tenant":["blue","green"],"kms:CallerAccount":"111122223333"},
		"ForAnyValue:StringLike":{"kms:EncryptionContextKeys":"ten*"}}}`))
	d := p.Evaluate(Request{
		Principal: testUser, Action: "kms:Decrypt", Resource: testKeyARN,
		Context: ctx("kms:encryptioncontext:TENANT", "red", "kms:EncryptionContextKeys", []string{"tenant"}),
	})
	want := []ConditionResult{
		{Operator: "StringEquals", Key: "kms:EncryptionContext:tenant", PolicyValues: []string{"blue", "green"}, RequestValues: []string{"red"}, KeyPresent: true, Matched: false},
		{Operator: "StringEquals", Key: "kms:CallerAccount", PolicyValues: []string{"111122223333"}, Matched: false},
		{Operator: "ForAnyValue:StringLike", Key: "kms:EncryptionContextKeys", PolicyValues: []string{"ten*"}, RequestValues: []string{"tenant"}, KeyPresent: true, Matched: true},
	}
	diff(t, "condition results", d.Statements[0].Conditions, want)
}

func TestWildcardMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		s       string
		fold    bool
		want    bool
	}{
		{"empty matches empty", "", "", false, true},
		{"star matches empty", "*", "", false, true},
		{"literal", "kms:Decrypt", "kms:Decrypt", false, true},
		{"literal differs", "kms:Decrypt", "kms:Encrypt", false, false},
		{"fold", "KMS:DECRYPT", "kms:Decrypt", true, true},
		{"no fold", "KMS:DECRYPT", "kms:Decrypt", false, false},
		{"prefix star", "kms:Generate*", "kms:GenerateDataKeyPair", true, true},
		{"inner star", "kms:*Key", "kms:GenerateDataKey", true, true},
		{"inner star no match", "kms:*Key", "kms:GenerateDataKeyPair", true, false},
		{"question marks", "kms:???rypt", "kms:Decrypt", true, true},
		{"question mark needs a character", "kms:Decrypt?", "kms:Decrypt", true, false},
		{"many stars", "**a**b**", "xxaxxbxx", false, true},
		{"pathological backtracking", "a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false, false},
		{"multi-byte rune", "?", "é", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wildcardMatch(tt.pattern, tt.s, tt.fold); got != tt.want {
				t.Errorf("wildcardMatch(%q, %q, %v) = %v, want %v", tt.pattern, tt.s, tt.fold, got, tt.want)
			}
		})
	}
}
