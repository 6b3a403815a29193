package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// match reports whether s matches the glob pattern. '*' matches any run of
// characters (none included, ':' and '/' included) and '?' matches exactly
// one character; every other character matches itself, case-sensitively. The
// KMS API reference says an encryption context must be "an exact
// case-sensitive match" (Decrypt, "EncryptionContext"), and key ARNs and key
// ids are written in one case. Matching a key identifier case-sensitively can
// only refuse more than KMS would distinguish, never less, so it fails
// closed.
//
// The algorithm backtracks only to the most recent '*', so its cost is at
// most len(pattern)*len(s) steps and never exponential (the approach of Russ
// Cox, "Glob Matching Can Be Simple And Fast Too", research.swtch.com/glob).
func match(pattern, s string) bool {
	px, sx := 0, 0
	// Where to resume after a mismatch: just past the last '*' in pattern,
	// with that star swallowing one more character of s. restartS == -1
	// means no star has been seen yet.
	restartP, restartS := 0, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				restartP = px
				restartS = sx
				px++
				continue
			case '?':
				if sx < len(s) {
					_, size := utf8.DecodeRuneInString(s[sx:])
					px++
					sx += size
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if restartS >= 0 && restartS < len(s) {
			_, size := utf8.DecodeRuneInString(s[restartS:])
			restartS += size
			px = restartP + 1
			sx = restartS
			continue
		}
		return false
	}
	return true
}

// MaxPatternLength bounds a key or encryption context value pattern. The
// longest identifier a key pattern has to cover is an alias ARN, about 320
// bytes (see maxEcho), and encryption context values are names and paths
// well under it. A bound keeps the matching work per request, at most
// pattern length × value length for patterns with many stars, small.
const MaxPatternLength = 1024

// hasWildcard reports whether a pattern contains '*' or '?'.
func hasWildcard(pattern string) bool {
	return strings.ContainsAny(pattern, "*?")
}

// couldStartWith reports whether some string starting with prefix matches
// pattern. prefix holds no wildcards.
func couldStartWith(pattern, prefix string) bool {
	for i := 0; i < len(prefix); i++ {
		if i == len(pattern) {
			return false
		}
		switch pattern[i] {
		case '*':
			return true
		case '?', prefix[i]:
		default:
			return false
		}
	}
	return true
}

// checkValuePattern says what is wrong with an encryption context value
// pattern, or returns "" when it is usable.
func checkValuePattern(p string) string {
	if p == "" {
		return `empty pattern matches only an empty value; use "*" for any value`
	}
	if len(p) > MaxPatternLength {
		return fmt.Sprintf("pattern is longer than %d bytes", MaxPatternLength)
	}
	if !utf8.ValidString(p) {
		return "pattern is not valid UTF-8"
	}
	for _, r := range p {
		switch {
		case r < 0x20 || r == 0x7f:
			return fmt.Sprintf("pattern holds the control character %U", r)
		case r == '[' || r == ']' || r == '\\':
			return fmt.Sprintf("character %q is not supported in a pattern: only * and ? are wildcards, there are no character classes or escapes (use ? to match %q)", r, r)
		}
	}
	return ""
}

// checkKeyPattern says what is wrong with a key pattern, or returns "" when
// it is usable. A pattern must be able to match a key identifier as a KMS
// request's KeyId carries it: a key id, a key ARN, an alias name or an alias
// ARN (KMS API reference, Decrypt, "KeyId"; ARN layout from the AWS General
// Reference, "Amazon Resource Names": arn:partition:service:region:account-id:
// resource). The character set is that of those forms: alias names may hold
// only "alphanumeric characters, forward slashes (/), underscores (_), and
// dashes (-)" (AWS KMS Developer Guide, "Create aliases"), key ids are
// lowercase hexadecimal UUIDs or "mrk-" and 32 hexadecimal digits, and ARNs
// add ":".
func checkKeyPattern(p string) string {
	if p == "" {
		return "empty pattern matches no key"
	}
	if len(p) > MaxPatternLength {
		return fmt.Sprintf("pattern is longer than %d bytes", MaxPatternLength)
	}
	for _, r := range p {
		if !isKeyPatternChar(r) {
			if r < 0x20 || r > 0x7e {
				return fmt.Sprintf("character %U cannot occur in a KMS key id, key ARN or alias; patterns use only * and ? as wildcards", r)
			}
			return fmt.Sprintf("character %q cannot occur in a KMS key id, key ARN or alias; patterns use only * and ? as wildcards", r)
		}
	}
	const wantForms = `a key ARN ("arn:aws:kms:REGION:ACCOUNT:key/ID"), an alias ARN ("arn:aws:kms:REGION:ACCOUNT:alias/NAME"), an alias name ("alias/NAME") or a key id`
	switch {
	case strings.HasPrefix(p, "arn:"):
		fields := strings.SplitN(p, ":", 6)
		if len(fields) < 6 {
			if strings.Contains(p, "*") {
				return "" // the star may stand for the missing fields
			}
			return "not a complete ARN: expected " + wantForms
		}
		service, account, resource := fields[2], fields[4], fields[5]
		if !match(service, "kms") {
			return fmt.Sprintf("ARN names the service %q, not kms", service)
		}
		if !hasWildcard(account) && !isDigits(account, 12) {
			return fmt.Sprintf("ARN account %q is not a 12-digit AWS account id", account)
		}
		if !couldStartWith(resource, "key/") && !couldStartWith(resource, "alias/") {
			return fmt.Sprintf("ARN resource %q is neither key/ID nor alias/NAME", resource)
		}
		return ""
	case strings.HasPrefix(p, "alias/"):
		if p == "alias/" {
			return `"alias/" alone names no alias; add a name or a wildcard ("alias/app-*")`
		}
		return ""
	case p[0] == '*' || p[0] == '?':
		return "" // matches across forms, e.g. "*:alias/app-*"
	}
	id := strings.TrimPrefix(p, "mrk-")
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || c == '-' || c == '*' || c == '?') {
			switch lower := strings.ToLower(p); {
			case strings.HasPrefix(lower, "alias/"):
				return fmt.Sprintf("not %s; the prefix is case-sensitive (did you mean %q?)", wantForms, "alias/"+p[len("alias/"):])
			case strings.HasPrefix(lower, "arn:"):
				return fmt.Sprintf("not %s; the prefix is case-sensitive (did you mean %q?)", wantForms, "arn:"+p[len("arn:"):])
			}
			return "not " + wantForms + " (key ids are lowercase hexadecimal with dashes)"
		}
	}
	return ""
}

func isKeyPatternChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		strings.ContainsRune(":/_-*?", r)
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
