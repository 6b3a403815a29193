package credentials

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Mode names where credentials come from (kmsproxyd --credentials).
type Mode string

const (
	ModeIMDS Mode = "imds"
	ModePush Mode = "push"
	ModeEnv  Mode = "env"
)

// ParseMode parses a --credentials value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeIMDS, ModePush, ModeEnv:
		return m, nil
	}
	return "", fmt.Errorf("credentials: unknown mode %q (want imds, push or env)", s)
}

// Provider is an aws.CredentialsProvider with a readiness report.
//
// Retrieve never blocks longer than its context allows, and its errors never
// contain a secret. Both methods are safe for concurrent use.
type Provider interface {
	aws.CredentialsProvider
	Status() Status
}

var (
	_ Provider = (*IMDS)(nil)
	_ Provider = (*Push)(nil)
	_ Provider = (*Env)(nil)
)

// Status reports whether a provider can sign requests now. It holds no
// secret.
type Status struct {
	Mode      Mode      `json:"mode"`
	Ready     bool      `json:"ready"`
	Expires   time.Time `json:"expires,omitzero"`     // zero when the credentials do not expire
	LastError string    `json:"last_error,omitempty"` // never contains secrets
	Updated   time.Time `json:"updated,omitzero"`     // when the credentials in use were obtained; zero if none
}

// Sentinel errors that callers may branch on with errors.Is.
var (
	// ErrNotReady: no credentials have been obtained yet.
	ErrNotReady = errors.New("no credentials yet")
	// ErrExpired: the credentials in hand have expired, or would within
	// ExpiryMargin.
	ErrExpired = errors.New("credentials expired")

	// Reasons a set of pushed or environment credentials is rejected; each
	// comes wrapped in a *ValidationError that names the field.
	ErrMissing     = errors.New("missing")
	ErrImplausible = errors.New("implausible value")
	ErrTooLarge    = errors.New("too large")
	ErrMalformed   = errors.New("malformed")
)

// ValidationError says which field of a set of credentials is wrong and why.
// It never contains the field's value.
type ValidationError struct {
	Field  string // "AccessKeyId", "Expiration", "AWS_SECRET_ACCESS_KEY", "body", ...
	Reason string // human explanation, free of secrets
	Err    error  // one of ErrMissing, ErrImplausible, ErrTooLarge, ErrMalformed, ErrExpired
}

func (e *ValidationError) Error() string {
	return "credentials: " + e.Field + ": " + e.Reason
}

func (e *ValidationError) Unwrap() error { return e.Err }

// statusError is a Retrieve error: a message for people and a sentinel for
// code.
type statusError struct {
	msg string
	err error
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.err }

// ExpiryMargin is how long before their Expiration credentials are treated
// as expired. A request signed just before expiry still has to travel through
// the vsock-proxy and be checked by KMS; half a minute covers a request at
// the default --request-timeout (10s) with room to spare.
const ExpiryMargin = 30 * time.Second

// Limits on credential fields, for pushed and environment credentials.
const (
	// minAccessKeyID and maxAccessKeyID are the length constraints of
	// AccessKeyId in the STS API reference (Credentials data type: "Minimum
	// length of 16. Maximum length of 128. Pattern: [\w]*").
	// https://docs.aws.amazon.com/STS/latest/APIReference/API_Credentials.html
	minAccessKeyID = 16
	maxAccessKeyID = 128

	// minSecretAccessKey and maxSecretAccessKey bound the secret access
	// key. AWS issues 40-character secrets (the IAM user guide's example is
	// wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY) and documents no maximum; the
	// bounds reject obvious mistakes (an access key ID or a token pasted in
	// the wrong field) without guessing at AWS's future formats.
	minSecretAccessKey = 16
	maxSecretAccessKey = 128

	// MaxSessionToken bounds a session token. The STS API reference says
	// the token's size is not fixed and that "as of this writing, the
	// typical size is less than 4096 bytes"; four times that leaves room for
	// session tags and future growth while keeping a pushed body small.
	MaxSessionToken = 16 << 10
)

// Access key ID prefixes that sign SigV4 requests. The STS
// GetAccessKeyInfo reference: "Access key IDs beginning with AKIA are
// long-term credentials for an IAM user or the AWS account root user. Access
// key IDs beginning with ASIA are temporary credentials that are created
// using AWS STS operations."
// https://docs.aws.amazon.com/STS/latest/APIReference/API_GetAccessKeyInfo.html
const (
	prefixLongTerm  = "AKIA"
	prefixTemporary = "ASIA"
)

// fieldNames lets one validator report errors in the vocabulary of its
// source: JSON member names for pushed credentials, variable names for env.
type fieldNames struct {
	accessKeyID, secretAccessKey, sessionToken, expiration string
}

var (
	jsonFields = fieldNames{"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
	envFields  = fieldNames{envAccessKeyID, envSecretAccessKey, envSessionToken, envExpiration}
)

// validate checks that a set of credentials is plausible and not expired at
// now. Errors name the field and never echo a value.
func validate(c secret, names fieldNames, now time.Time) error {
	switch {
	case c.accessKeyID == "":
		return &ValidationError{names.accessKeyID, "required", ErrMissing}
	case len(c.accessKeyID) < minAccessKeyID || len(c.accessKeyID) > maxAccessKeyID:
		return &ValidationError{names.accessKeyID, fmt.Sprintf("length %d is outside %d..%d (STS AccessKeyId constraints)", len(c.accessKeyID), minAccessKeyID, maxAccessKeyID), ErrImplausible}
	case !isWord(c.accessKeyID):
		return &ValidationError{names.accessKeyID, "contains characters other than letters, digits and _", ErrImplausible}
	case !strings.HasPrefix(c.accessKeyID, prefixLongTerm) && !strings.HasPrefix(c.accessKeyID, prefixTemporary):
		return &ValidationError{names.accessKeyID, "does not start with AKIA (IAM user key) or ASIA (temporary STS key)", ErrImplausible}
	}
	switch {
	case c.secretAccessKey == "":
		return &ValidationError{names.secretAccessKey, "required", ErrMissing}
	case len(c.secretAccessKey) < minSecretAccessKey || len(c.secretAccessKey) > maxSecretAccessKey:
		return &ValidationError{names.secretAccessKey, fmt.Sprintf("length %d is outside %d..%d (AWS secret access keys are 40 characters)", len(c.secretAccessKey), minSecretAccessKey, maxSecretAccessKey), ErrImplausible}
	case !isVisibleASCII(c.secretAccessKey):
		return &ValidationError{names.secretAccessKey, "contains spaces, control or non-ASCII characters", ErrImplausible}
	}
	temporary := strings.HasPrefix(c.accessKeyID, prefixTemporary)
	switch {
	case len(c.sessionToken) > MaxSessionToken:
		return &ValidationError{names.sessionToken, fmt.Sprintf("%d bytes exceeds the %d-byte limit", len(c.sessionToken), MaxSessionToken), ErrTooLarge}
	case temporary && c.sessionToken == "":
		return &ValidationError{names.sessionToken, "required with a temporary ASIA access key", ErrMissing}
	case !temporary && c.sessionToken != "":
		return &ValidationError{names.sessionToken, "given with a long-term AKIA access key, which takes none", ErrImplausible}
	case !isVisibleASCII(c.sessionToken):
		return &ValidationError{names.sessionToken, "contains spaces, control or non-ASCII characters", ErrImplausible}
	}
	if !c.expires.IsZero() && expired(c.expires, now) {
		return &ValidationError{names.expiration, fmt.Sprintf("credentials expire at %s, less than %s from now (%s)", stamp(c.expires), ExpiryMargin, stamp(now)), ErrExpired}
	}
	return nil
}

// expired reports whether credentials expiring at exp count as expired at
// now.
func expired(exp, now time.Time) bool {
	return !now.Add(ExpiryMargin).Before(exp)
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func isWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func isVisibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
