package policy

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMatch(t *testing.T) {
	const arnPattern = "arn:aws:kms:*:111122223333:key/*"
	tests := []struct {
		name    string
		pattern string
		s       string
		want    bool
	}{
		{"empty matches empty", "", "", true},
		{"empty matches nothing else", "", "a", false},
		{"literal", "alias/app", "alias/app", true},
		{"literal is not a prefix match", "alias/app", "alias/app2", false},
		{"literal is case-sensitive", "alias/app", "alias/App", false},
		{"star matches empty", "*", "", true},
		{"star matches colons and slashes", "*", "arn:aws:kms:us-east-1:1:alias/a/b", true},
		{"stars in a row", "**", "", true},
		{"question needs a character", "?", "", false},
		{"question matches one byte", "?", "a", true},
		{"question matches one multi-byte character", "?", "é", true},
		{"two questions are not one character", "??", "é", false},
		{"question matches an invalid byte", "?", "\xff", true},
		{"question does not match two", "?", "ab", false},
		{"prefix star", "alias/app-*", "alias/app-", true},
		{"prefix star needs the prefix", "alias/app-*", "alias/app", false},
		{"prefix star crosses slashes", "alias/app-*", "alias/app-x/y", true},
		{"suffix star", "*-prod", "app-prod", true},
		{"suffix star mismatch", "*-prod", "app-prod2", false},
		{"infix star", "a*b", "ab", true},
		{"infix star long", "a*b", "axxxb", true},
		{"infix star trailing text", "a*b", "axxbc", false},
		{"backtracking", "a*b*c", "abXbYbc", true},
		{"backtracking mismatch", "a*b*c", "abXbYb", false},
		{"star then question", "*?", "", false},
		{"star then question one", "*?", "x", true},
		{"question then star", "prod-?*", "prod-", false},
		{"key ARN in the account", arnPattern, "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"key ARN in any region", arnPattern, "arn:aws:kms:cn-north-1:111122223333:key/x", true},
		{"key ARN in another account", arnPattern, "arn:aws:kms:us-east-1:444455556666:key/x", false},
		{"alias ARN against a key ARN pattern", arnPattern, "arn:aws:kms:us-east-1:111122223333:alias/x", false},
		{"star spans colons (KMS refuses such a KeyId; AllowAnsweredKey then checks the answer)", arnPattern, "arn:aws:kms:us-east-1:444455556666:key/x:111122223333:key/y", true},
		{"many stars no match", "*a*a*a*a*a*a*a*a*b", strings.Repeat("a", 200), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := match(tt.pattern, tt.s); got != tt.want {
				t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
			}
			if got := globRegexp(tt.pattern).MatchString(tt.s); got != tt.want {
				t.Errorf("reference regexp for %q on %q = %v, want %v (test table is wrong)", tt.pattern, tt.s, got, tt.want)
			}
		})
	}
}

// globRegexp is the reference semantics of match: '*' is (?s:.*), '?' is
// (?s:.), everything else literal. Go's regexp, like match, reads an invalid
// UTF-8 byte as one character.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^`)
	for _, part := range strings.SplitAfter(pattern, "") {
		switch part {
		case "*":
			b.WriteString(`(?s:.*)`)
		case "?":
			b.WriteString(`(?s:.)`)
		default:
			b.WriteString(regexp.QuoteMeta(part))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

func TestCheckKeyPattern(t *testing.T) {
	valid := []string{
		"*",
		"?*",
		"*:alias/app-*",
		"arn:aws:kms:*:111122223333:key/*",
		"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"arn:aws-cn:kms:cn-north-1:111122223333:alias/app",
		"arn:aws:kms:*:*:alias/app-*",
		"arn:aws:*:*:111122223333:key/*",
		"arn:aws:kms:*:111122223333:*",
		"arn:aws:kms:*:1111222233??:k*",
		"arn:*",
		"alias/app-*",
		"alias/aws/ebs",
		"alias/A_b-C/d",
		"1234abcd-12ab-34cd-56ef-1234567890ab",
		"1234abcd-*",
		"mrk-1234abcd12ab34cd56ef1234567890ab",
		"mrk-*",
	}
	for _, p := range valid {
		if reason := checkKeyPattern(p); reason != "" {
			t.Errorf("checkKeyPattern(%q) = %q, want valid", p, reason)
		}
	}
	invalid := []string{
		"",
		"alias/",
		"alias/a b",
		"alias/a.b",
		"alias/[ab]",
		"alias/a\\*",
		"Alias/app",
		"ARN:aws:kms:*:111122223333:key/*",
		"arn:aws:kms",
		"arn:aws:s3:::bucket/key",
		"arn:aws:kms:us-east-1:11112222333:key/*",
		"arn:aws:kms:us-east-1:111122223333:alias",
		"app",
		"1234ABCD-*",
		"mrk-XYZ",
	}
	for _, p := range invalid {
		if reason := checkKeyPattern(p); reason == "" {
			t.Errorf("checkKeyPattern(%q) accepted it", p)
		}
	}
}

func TestCouldStartWith(t *testing.T) {
	tests := []struct {
		pattern, prefix string
		want            bool
	}{
		{"key/*", "key/", true},
		{"key/", "key/", true},
		{"key", "key/", false},
		{"*", "key/", true},
		{"k*", "key/", true},
		{"k?y/x", "key/", true},
		{"alias/x", "key/", false},
		{"", "key/", false},
	}
	for _, tt := range tests {
		if got := couldStartWith(tt.pattern, tt.prefix); got != tt.want {
			t.Errorf("couldStartWith(%q, %q) = %v, want %v", tt.pattern, tt.prefix, got, tt.want)
		}
	}
}

// FuzzMatch checks match against the regexp reference on arbitrary input.
func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"", ""}, {"*", ""}, {"?", "é"}, {"a*b*c", "abXbYbc"}, {"*?", "\xff"},
		{"arn:aws:kms:*:111122223333:key/*", "arn:aws:kms:us-east-1:111122223333:key/x"},
		{"alias/app-*", "alias/app-x/y"}, {"*a*a*b", "aaaaaaaa"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return // keep the reference regexp small
		}
		if !utf8.ValidString(pattern) {
			return // Parse refuses such patterns (checkKeyPattern, checkValuePattern)
		}
		if got, want := match(pattern, s), globRegexp(pattern).MatchString(s); got != want {
			t.Errorf("match(%q, %q) = %v, reference says %v", pattern, s, got, want)
		}
	})
}

// BenchmarkMatchWorstCase is a pattern that makes a naive recursive matcher
// exponential; match stays linear in practice.
func BenchmarkMatchWorstCase(b *testing.B) {
	pattern := strings.Repeat("a*", 16) + "b"
	s := strings.Repeat("a", 2048) // KMS's KeyId length limit
	for b.Loop() {
		if match(pattern, s) {
			b.Fatal("matched")
		}
	}
}

func TestPatternLengthLimit(t *testing.T) {
	keyAt := "alias/" + strings.Repeat("a", MaxPatternLength-len("alias/"))
	valueAt := strings.Repeat("v", MaxPatternLength)
	tests := []struct {
		name  string
		check func(string) string
		p     string
		want  string
	}{
		{"key pattern at the limit", checkKeyPattern, keyAt, ""},
		{"key pattern one past the limit", checkKeyPattern, keyAt + "a", "pattern is longer than 1024 bytes"},
		{"value pattern at the limit", checkValuePattern, valueAt, ""},
		{"value pattern one past the limit", checkValuePattern, valueAt + "v", "pattern is longer than 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.check(tt.p); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}

	// Through Parse, the error names the node and echoes a cut pattern.
	_, err := Parse([]byte("listeners:\n  parent:\n    keys: [\""+keyAt+"a\"]\n"), "policy.yaml")
	want := `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "` + keyAt[:maxEcho] + `"…: pattern is longer than 1024 bytes`
	if err == nil || err.Error() != want {
		t.Errorf("Parse = %v, want %s", err, want)
	}
	p := mustParse(t, "listeners:\n  parent:\n    encryption_context: {k: \""+valueAt+"\"}\n")
	if err := p.Rules(ListenerParent).AllowEncryptionContext(map[string]string{"k": valueAt}); err != nil {
		t.Errorf("a value pattern at the limit does not match itself: %v", err)
	}
}
