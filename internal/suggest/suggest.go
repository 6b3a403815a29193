// Package suggest finds the name a user probably meant when they typed an
// unknown one: a policy field, a KMS operation, a command, a condition key.
// Every tool of kmsproxy says "did you mean" the same way through it.
package suggest

import "strings"

// Closest returns the candidate closest to name, or "" when none is close
// enough to be a plausible typo. Names are compared without case, "_" and
// "-", so "decrypt", "encryptionContext" and "credentials-push" find their
// intended spelling; otherwise a candidate is close when its optimal string
// alignment distance (Levenshtein plus transposition of neighbours, so
// "Decrpyt" is one edit from "Decrypt") is at most a third of its length.
func Closest(name string, candidates []string) string {
	const maxLen = 64 // longer input is no typo of any name we know
	if name == "" || len(name) > maxLen {
		return ""
	}
	n := normalizeName(name)
	best, bestDist := "", -1
	for _, c := range candidates {
		d := osaDistance(n, normalizeName(c))
		if d > len(c)/3 {
			continue
		}
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func normalizeName(s string) string {
	s = strings.ToLower(s)
	return strings.NewReplacer("_", "", "-", "").Replace(s)
}

// osaDistance is the optimal string alignment distance between a and b,
// counted in bytes (the names compared are ASCII).
func osaDistance(a, b string) int {
	// Three rows of the dynamic programming table are enough: the current
	// one, the previous one, and the one before it for transpositions.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// DidYouMean is Closest formatted for the end of an error reason:
// ` (did you mean "Decrypt"?)`, or "" when nothing is close.
func DidYouMean(name string, candidates []string) string {
	if s := Closest(name, candidates); s != "" {
		return ` (did you mean "` + s + `"?)`
	}
	return ""
}
