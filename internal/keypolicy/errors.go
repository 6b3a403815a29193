package keypolicy

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Exception names KMS answers PutKeyPolicy and CreateKey with when it refuses
// a key policy (KMS API reference, PutKeyPolicy, "Errors").
const (
	// ExceptionMalformedPolicyDocument: the document is not a valid key
	// policy.
	ExceptionMalformedPolicyDocument = "MalformedPolicyDocumentException"
	// ExceptionLimitExceeded: the document is larger than MaxPolicySize. The
	// PutKeyPolicy API reference says of the Policy parameter: "If the key
	// policy exceeds the length constraint, KMS returns a
	// LimitExceededException."
	ExceptionLimitExceeded = "LimitExceededException"
)

// ParseError says why Parse refused a key policy document. Its Reason is a
// sentence in the style of the messages KMS puts in
// MalformedPolicyDocumentException, and Exception is the KMS exception name
// devkms answers with.
type ParseError struct {
	// Exception is ExceptionMalformedPolicyDocument or ExceptionLimitExceeded.
	Exception string
	// Statement is the index of the offending statement in the Statement
	// array, or -1 when the problem is with the document as a whole.
	Statement int
	// Sid is the Sid of the offending statement, when it has one.
	Sid string
	// Reason says what is wrong, without location.
	Reason string
}

// Error implements error: "keypolicy: statement 1 (Sid "x"): reason".
func (e *ParseError) Error() string { return "keypolicy: " + e.Text() }

// Text is Error without the package name, for messages to users:
// `statement 1 (Sid "x"): reason`.
func (e *ParseError) Text() string {
	switch {
	case e.Statement < 0:
		return e.Reason
	case e.Sid != "":
		return fmt.Sprintf("statement %d (Sid %s): %s", e.Statement, quote(e.Sid), e.Reason)
	default:
		return fmt.Sprintf("statement %d: %s", e.Statement, e.Reason)
	}
}

// Message is the text devkms puts in the KMS error it answers with: the
// reason and, for a statement, where it is.
func (e *ParseError) Message() string {
	switch {
	case e.Statement < 0:
		return e.Reason
	case e.Sid != "":
		return fmt.Sprintf("%s (statement %d, Sid %s)", e.Reason, e.Statement, quote(e.Sid))
	default:
		return fmt.Sprintf("%s (statement %d)", e.Reason, e.Statement)
	}
}

func malformed(reason string) *ParseError {
	return &ParseError{Exception: ExceptionMalformedPolicyDocument, Statement: -1, Reason: reason}
}

func malformedf(format string, args ...any) *ParseError {
	return malformed(fmt.Sprintf(format, args...))
}

// maxQuoted bounds how much of an untrusted policy string an error message
// repeats, so that an error never carries a whole blob of the document.
const maxQuoted = 64

// quote returns s in Go quoted form, shortened to maxQuoted runes.
func quote(s string) string { return quoteN(s, maxQuoted) }

// quoteN returns s in Go quoted form, shortened to max runes.
func quoteN(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return strconv.Quote(s)
	}
	n := 0
	for i := range s {
		if n == max {
			return strconv.Quote(s[:i]) + "…"
		}
		n++
	}
	return strconv.Quote(s)
}
