package keypolicy

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// wildcardMatch reports whether s matches pattern, where "*" matches any run
// of characters (including none) and "?" exactly one character, the two
// wildcards of IAM's Action, Resource and StringLike matching. With fold the
// comparison ignores case (IAM action names are not case-sensitive).
//
// It runs in O(len(pattern)·len(s)) time without recursion: on a mismatch it
// returns to the last "*" and lets it absorb one more character.
func wildcardMatch(pattern, s string, fold bool) bool {
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			pc, pw := utf8.DecodeRuneInString(pattern[p:])
			sc, sw := utf8.DecodeRuneInString(s[i:])
			if pc == '*' {
				starP, starI = p, i
				p += pw
				continue
			}
			if pc == '?' || pc == sc || (fold && foldEqual(pc, sc)) {
				p += pw
				i += sw
				continue
			}
		}
		if starP < 0 {
			return false
		}
		_, sw := utf8.DecodeRuneInString(s[starI:])
		starI += sw
		i = starI
		p = starP + 1
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

func foldEqual(a, b rune) bool {
	return unicode.ToLower(a) == unicode.ToLower(b) || unicode.ToUpper(a) == unicode.ToUpper(b)
}

// arnMatch matches an ARN against an ARN pattern the way IAM's Arn*
// condition operators and the Resource element do: the six colon-separated
// parts (arn:partition:service:region:account:resource) are compared one by
// one, each may hold "*" and "?", and a wildcard never spans a colon between
// parts. A pattern of just "*" matches anything.
func arnMatch(pattern, arn string) bool {
	if pattern == "*" {
		return true
	}
	pp := strings.SplitN(pattern, ":", 6)
	ap := strings.SplitN(arn, ":", 6)
	if len(pp) != 6 || len(ap) != 6 {
		return false
	}
	for k := range pp {
		if !wildcardMatch(pp[k], ap[k], false) {
			return false
		}
	}
	return true
}
