package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// Steps of opening an upstream connection, as ConnectError names them.
const (
	StepConnect = "connect"
	StepTLS     = "TLS handshake"
)

// ConnectError is a failure to open an upstream connection. Its message
// names the step and the route, never a secret.
type ConnectError struct {
	Step     string // StepConnect or StepTLS
	Endpoint string // the TLS server name (StepTLS)
	Through  string // the dial address, or "direct"
	Err      error
}

func (e *ConnectError) Error() string {
	if e.Step == StepTLS {
		return fmt.Sprintf("upstream: failed TLS handshake with %s through %s: %v", e.Endpoint, e.Through, e.Err)
	}
	return fmt.Sprintf("upstream: failed to connect to KMS through %s: %v", e.Through, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ConnectionError tells the SDK's retryer (see retryConnectErrors) whether
// another attempt may succeed: yes for a failed connect or a
// connection dropped mid-handshake (the vsock-proxy closes it when it cannot
// reach KMS), no for a certificate that does not verify or a peer that does
// not speak TLS.
func (e *ConnectError) ConnectionError() bool {
	if e.Step != StepTLS {
		return true
	}
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	return !errors.As(e.Err, &cv) && !errors.As(e.Err, &rh)
}

// retryConnectErrors decides retries of failed connections before the SDK's
// own checks, which retry every transport error (smithyhttp.RequestSendError
// reports itself as a connection error): a certificate that does not verify
// will not verify on the next attempt either.
var retryConnectErrors = retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
	var ce *ConnectError
	if errors.As(err, &ce) {
		return aws.BoolTernary(ce.ConnectionError())
	}
	return aws.UnknownTernary
})

// TimeoutError is a call that ran out of time: its context's deadline
// passed After the call started.
type TimeoutError struct {
	After time.Duration
	Err   error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("upstream: KMS did not answer within %s: %v", roundBudget(e.After), e.Err)
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// roundBudget rounds the time a call had, when it was measured a moment
// after its deadline was set, for people: 9.9997s is "10s".
func roundBudget(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}

// WaitError is a call that never started: every worker of Do (and so every
// one of the --upstream-conns connections) stayed busy until the caller's
// context ended. Nothing was sent to KMS.
type WaitError struct {
	Conns  int           // --upstream-conns
	Waited time.Duration // how long the call waited
	Err    error         // the context's error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("upstream: all %d connections to KMS stayed busy for %s, until the request's deadline; the request was not sent to KMS", e.Conns, roundBudget(e.Waited))
}

func (e *WaitError) Unwrap() error { return e.Err }

// CredentialsError is a failure to get credentials for signing.
type CredentialsError struct{ Err error }

func (e *CredentialsError) Error() string {
	msg := e.Err.Error()
	if strings.HasPrefix(msg, "credentials: ") {
		return msg
	}
	return "credentials: " + msg
}

func (e *CredentialsError) Unwrap() error { return e.Err }

// ToKMSError turns an error from a KMS() call into the error the caller
// should see:
//
//   - an error KMS answered keeps its exception type, message and HTTP
//     status unchanged;
//   - credentials that could not be had: KMSInternalException "credentials: ...";
//   - out of time: DependencyTimeoutException "upstream: KMS did not answer
//     within 10s";
//   - never sent, every connection busy until the deadline (WaitError):
//     ThrottlingException naming --upstream-conns;
//   - no connection: KMSInternalException naming the step and the route;
//   - input the SDK refused before sending it (a required member missing,
//     a string too short, a number out of range: smithy.InvalidParamsError
//     from the operation's input validation, or a request it could not
//     serialize): ValidationException, status 400, as KMS answers input
//     that fails its own constraints ("1 validation error detected: ...",
//     KMS API reference, Common Errors). The caller sent it; it is no
//     fault of kmsproxyd's.
//   - anything else: KMSInternalException "upstream: ...".
//
// A nil error gives nil; an *kmsapi.Error is returned as it is.
func ToKMSError(err error) *kmsapi.Error {
	if err == nil {
		return nil
	}
	var ke *kmsapi.Error
	if errors.As(err, &ke) {
		return ke
	}
	if ve := validationError(err); ve != nil {
		return ve
	}
	// Credentials first: an IMDS failure also carries an HTTP response
	// error, from IMDS, which must not pass for one from KMS.
	var ce *CredentialsError
	if errors.As(err, &ce) {
		return kmsapi.Errorf(kmsapi.KMSInternal, "%s", ce.Error())
	}
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status := respErr.HTTPStatusCode()
		var apiErr smithy.APIError
		if errors.As(err, &apiErr) && isExceptionName(apiErr.ErrorCode()) {
			if status == 0 {
				status = kmsapi.StatusFor(apiErr.ErrorCode())
			}
			return &kmsapi.Error{Type: apiErr.ErrorCode(), Message: apiErr.ErrorMessage(), Status: status}
		}
		if status >= 300 {
			// Not a KMS error body: an HTML page from something in the
			// path, an empty 5xx. Its text is not for the caller.
			return kmsapi.Errorf(kmsapi.KMSInternal, "upstream: KMS answered HTTP %d without a KMS error", status)
		}
	}
	var we *WaitError
	if errors.As(err, &we) {
		// kmsproxyd's own capacity, like --max-inflight: the caller should
		// back off and retry; KMS itself never saw the request.
		return kmsapi.Errorf(kmsapi.Throttling, "%s: raise --upstream-conns (and the vsock-proxy's workers) or send fewer concurrent requests", we.Error())
	}
	var te *TimeoutError
	if errors.As(err, &te) {
		return kmsapi.Errorf(kmsapi.DependencyTimeout, "upstream: KMS did not answer within %s", roundBudget(te.After))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return kmsapi.Errorf(kmsapi.DependencyTimeout, "upstream: KMS did not answer before the request's deadline")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return kmsapi.Errorf(kmsapi.DependencyTimeout, "upstream: KMS did not answer in time: %v", ne)
	}
	var conn *ConnectError
	if errors.As(err, &conn) {
		return kmsapi.Errorf(kmsapi.KMSInternal, "%s", conn.Error())
	}
	if errors.Is(err, context.Canceled) {
		return kmsapi.Errorf(kmsapi.KMSInternal, "upstream: the request was canceled before KMS answered")
	}
	var de *smithy.DeserializationError
	if errors.As(err, &de) {
		// Its text may quote the answer, which can hold plaintext.
		return kmsapi.Errorf(kmsapi.KMSInternal, "upstream: failed to decode KMS's answer")
	}
	return kmsapi.Errorf(kmsapi.KMSInternal, "upstream: failed to call KMS: %v", err)
}

// isExceptionName accepts what KMS puts in __type after the SDK strips any
// namespace: an identifier such as NotFoundException.
func isExceptionName(s string) bool {
	if s == "" || s == "UnknownError" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// validationError returns the ValidationException for an error the SDK
// raised on the caller's input before sending it, or nil. Its messages name
// members and constraints, never values (smithy-go validation.go).
func validationError(err error) *kmsapi.Error {
	var ipe smithy.InvalidParamsError
	if errors.As(err, &ipe) {
		errs := ipe.Errs()
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = strings.TrimSuffix(e.Error(), ".")
		}
		return kmsapi.Errorf(kmsapi.Validation, "%d validation error%s detected: %s", len(msgs), plural(len(msgs)), strings.Join(msgs, "; "))
	}
	var se *smithy.SerializationError
	if errors.As(err, &se) {
		// Its text may quote the input, which can hold plaintext.
		return kmsapi.Errorf(kmsapi.Validation, "the request cannot be sent to KMS: a member's value cannot be serialized")
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
