package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/aws/smithy-go"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// maxErrorMessage bounds how much of an error answer's message Error keeps.
// KMS messages are one sentence (an AccessDeniedException names a principal,
// an action and a key ARN: a few hundred bytes); anything longer is cut so a
// misbehaving server cannot flood a log line.
const maxErrorMessage = 1024

// Error is an error answer from one of kmsproxyd's control endpoints. They
// answer in KMS's error shape ({"__type": "...", "message": "..."}), so Code
// is a KMS exception name such as "ValidationException" or
// "AccessDeniedException". Error implements smithy.APIError, like the errors
// the KMS client returns, so one errors.As serves both:
//
//	var apiErr smithy.APIError
//	if errors.As(err, &apiErr) { log.Print(apiErr.ErrorCode()) }
type Error struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Code is the exception name, or the HTTP status text when the answer
	// was not in KMS's shape.
	Code string
	// Message is the server's explanation; it may be empty.
	Message string
}

var _ smithy.APIError = (*Error)(nil)

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// ErrorCode returns Code.
func (e *Error) ErrorCode() string { return e.Code }

// ErrorMessage returns Message.
func (e *Error) ErrorMessage() string { return e.Message }

// ErrorFault says whether the client (4xx) or the server (5xx) is at fault.
func (e *Error) ErrorFault() smithy.ErrorFault {
	switch {
	case e.StatusCode >= 500:
		return smithy.FaultServer
	case e.StatusCode >= 400:
		return smithy.FaultClient
	}
	return smithy.FaultUnknown
}

// newError reads an error answer. KMS and kmsproxyd write
// {"__type":"<Exception>","message":"..."}; some AWS services prefix the
// type with a namespace ("com.amazonaws.kms#NotFoundException") and
// capitalise "Message", which the AWS SDKs accept too.
func newError(status int, body []byte) *Error {
	e := &Error{StatusCode: status, Code: http.StatusText(status)}
	if e.Code == "" {
		e.Code = fmt.Sprintf("HTTP %d", status)
	}
	var shaped struct {
		Type     string `json:"__type"`
		Message  string `json:"message"`
		MessageC string `json:"Message"`
	}
	if json.Unmarshal(body, &shaped) == nil && shaped.Type != "" {
		if _, name, ok := strings.Cut(shaped.Type, "#"); ok {
			shaped.Type = name
		}
		e.Code = printable(shaped.Type, 128)
		e.Message = shaped.Message
		if e.Message == "" {
			e.Message = shaped.MessageC
		}
		e.Message = printable(e.Message, maxErrorMessage)
		return e
	}
	// Not KMS-shaped (a proxy's HTML page, /readyz's JSON): keep its first
	// line as the message.
	line, _, _ := strings.Cut(string(body), "\n")
	e.Message = printable(strings.TrimSpace(line), maxErrorMessage)
	return e
}

// printable returns s without control characters and cut to at most max
// bytes, so text from the server is safe to print on a terminal.
func printable(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > max {
			b.WriteString("...")
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// PolicyDenialPrefix starts the message of an AccessDeniedException that
// kmsproxyd's own policy decided (its listener rules, or the accounts and
// regions it pins), as opposed to one KMS answered (a key policy, an IAM
// policy or a grant). The fix differs: kmsproxyd's policy is a file in the
// enclave image (change it and rebuild, which changes the measurements),
// while KMS's decision is changed in KMS.
const PolicyDenialPrefix = kmsapi.PolicyDenialPrefix

// IsPolicyDenial reports whether err is kmsproxyd's policy refusing the
// request: an AccessDeniedException (from the KMS client or a control
// endpoint) whose message starts with PolicyDenialPrefix. It is false for
// KMS's own AccessDeniedException and for every other error.
func IsPolicyDenial(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == "AccessDeniedException" &&
		strings.HasPrefix(apiErr.ErrorMessage(), PolicyDenialPrefix)
}
