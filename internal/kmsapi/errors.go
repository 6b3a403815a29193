package kmsapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Exception names used by KMS and by the servers in this repository. The
// status codes follow the KMS API reference ("Errors" of each operation) and
// the AWS common errors page: client errors are 400, KMSInternalException
// and KeyUnavailableException 500, DependencyTimeoutException 503.
const (
	AccessDenied      = "AccessDeniedException"
	AlreadyExists     = "AlreadyExistsException"
	DependencyTimeout = "DependencyTimeoutException"
	Disabled          = "DisabledException"
	IncorrectKey      = "IncorrectKeyException"
	DryRunOperation   = "DryRunOperationException" // 412 (KMS API reference, Encrypt, Errors)
	// IncompleteSignature is what JSON-protocol services such as KMS answer
	// a malformed Authorization header with; the query protocol's code is
	// "IncompleteSignature".
	IncompleteSignature        = "IncompleteSignatureException"
	InvalidAliasName           = "InvalidAliasNameException"
	InvalidArn                 = "InvalidArnException"
	InvalidCiphertext          = "InvalidCiphertextException"
	InvalidGrantToken          = "InvalidGrantTokenException"
	InvalidKeyUsage            = "InvalidKeyUsageException"
	InvalidMarker              = "InvalidMarkerException"
	InvalidSignature           = "InvalidSignatureException"
	KMSInternal                = "KMSInternalException"
	KMSInvalidSignature        = "KMSInvalidSignatureException"
	KMSInvalidState            = "KMSInvalidStateException"
	KMSInvalidMac              = "KMSInvalidMacException"
	KeyUnavailable             = "KeyUnavailableException"
	LimitExceeded              = "LimitExceededException"
	MalformedPolicyDocument    = "MalformedPolicyDocumentException"
	MissingAuthenticationToken = "MissingAuthenticationTokenException"
	NotFound                   = "NotFoundException"
	Serialization              = "SerializationException"
	Throttling                 = "ThrottlingException"
	UnknownOperation           = "UnknownOperationException"
	UnrecognizedClient         = "UnrecognizedClientException"
	UnsupportedOperation       = "UnsupportedOperationException"
	Validation                 = "ValidationException"
	ExpiredToken               = "ExpiredTokenException"
	RequestExpired             = "RequestExpired"
)

// statusByType maps an exception name to the HTTP status KMS answers it with.
// Anything not listed is a client error (400), as in the KMS API reference.
var statusByType = map[string]int{
	KMSInternal:                http.StatusInternalServerError,
	KeyUnavailable:             http.StatusInternalServerError,
	DependencyTimeout:          http.StatusServiceUnavailable,
	MissingAuthenticationToken: http.StatusForbidden,
	DryRunOperation:            http.StatusPreconditionFailed,
	UnrecognizedClient:         http.StatusBadRequest,
	InvalidSignature:           http.StatusBadRequest,
	ExpiredToken:               http.StatusBadRequest,
}

// Error is a KMS-shaped error: the exception name, a message safe to show the
// caller, and the HTTP status it travels with. Messages never carry key
// material, plaintext or credentials.
type Error struct {
	Type    string
	Message string
	Status  int
}

// Error implements error.
func (e *Error) Error() string { return e.Type + ": " + e.Message }

// Errorf returns an *Error of the given exception type with KMS's status
// code for that type.
func Errorf(typ, format string, args ...any) *Error {
	return &Error{Type: typ, Message: fmt.Sprintf(format, args...), Status: StatusFor(typ)}
}

// StatusFor returns the HTTP status code KMS uses for an exception type.
func StatusFor(typ string) int {
	if s, ok := statusByType[typ]; ok {
		return s
	}
	return http.StatusBadRequest
}

// PolicyDenialPrefix starts the message of every AccessDeniedException that
// kmsproxyd's own policy file decided (a listener rule, a pinned account or
// region), so that callers can tell it from KMS's AccessDeniedException,
// which a key policy, an IAM policy or a grant decided and whose message
// never starts so (KMS's start "User: arn:..."). The two call for different
// fixes: the listener policy is baked into the enclave image, the key policy
// lives in KMS.
const PolicyDenialPrefix = "kmsproxyd policy: "

// PolicyDenied returns the AccessDeniedException for a refusal by
// kmsproxyd's policy: reason (a *policy.Denied) after PolicyDenialPrefix.
func PolicyDenied(reason error) *Error {
	return Errorf(AccessDenied, "%s%s", PolicyDenialPrefix, reason)
}

// IsPolicyDenial reports whether e is kmsproxyd's policy refusing a request
// (PolicyDenied), as opposed to an error KMS answered.
func IsPolicyDenial(e *Error) bool {
	return e != nil && e.Type == AccessDenied && strings.HasPrefix(e.Message, PolicyDenialPrefix)
}

// AsError returns err as a KMS-shaped error. Errors that are not already an
// *Error become KMSInternalException with the generic message given, so an
// internal error's text (which might name a file or a peer) never reaches a
// caller unintentionally.
func AsError(err error, internalMessage string) *Error {
	var ke *Error
	if errors.As(err, &ke) {
		return ke
	}
	return Errorf(KMSInternal, "%s", internalMessage)
}

// wireError is the body of a KMS error response.
type wireError struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

// WriteError writes err in KMS's error shape. A non-*Error is answered as
// KMSInternalException without its text.
func WriteError(w http.ResponseWriter, err error) {
	ke := AsError(err, "An internal error occurred.")
	status := ke.Status
	if status == 0 {
		status = StatusFor(ke.Type)
	}
	w.Header().Set("X-Amzn-ErrorType", ke.Type)
	WriteJSON(w, status, wireError{Type: ke.Type, Message: ke.Message})
}
