// Package client connects Go programs to kmsproxyd, the KMS proxy that runs
// inside a Nitro Enclave.
//
// kmsproxyd speaks the AWS KMS API itself, so a parent-instance app needs no
// new API to use it: New returns an ordinary aws-sdk-go-v2 *kms.Client whose
// HTTP transport dials the enclave instead of kms.<region>.amazonaws.com.
// Code written for AWS KMS (Decrypt, GenerateDataKey, GenerateRandom, ...) runs
// unchanged; kmsproxyd attaches the enclave's attestation, lets KMS encrypt the
// answer to the enclave's key, opens it inside the enclave and answers as KMS
// would have without attestation.
//
// Addresses use kmsproxy's syntax: "vsock://16:5000" (the enclave's CID and
// port, from the parent instance), "tcp://127.0.0.1:8000" (from inside the
// enclave, or through `kmsproxyctl bridge`) and "unix:///run/kmsproxy.sock".
//
// kmsproxyd signs its own calls to KMS with credentials it holds; it ignores
// the signature of the requests it receives. The client therefore sends them
// unsigned, with a placeholder region, unless the caller overrides either.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// Endpoint is the URL the KMS client and HTTPClient's requests name. The host
// is never resolved: every connection goes to the enclave address. It only
// appears in the Host header, which kmsproxyd ignores.
const Endpoint = "http://kmsproxy.enclave"

// Region is the placeholder region the KMS client is configured with.
// kmsproxyd calls KMS in its own --region whatever the client says; the SDK
// only needs some region to build requests.
const Region = "us-east-1"

// Connection pool settings of HTTPClient's transport.
const (
	// maxConnsPerHost keeps this many idle connections to the enclave for
	// reuse. net/http's default of 2 would make a busy app reconnect over
	// vsock for most concurrent calls; kmsproxyd itself admits 256 requests
	// in flight by default (--max-inflight).
	maxConnsPerHost = 32
	// idleConnTimeout is shorter than kmsproxyd's own idle timeout (two
	// minutes, proxy.IdleTimeout), so the client closes an idle connection
	// before the server does and never writes a request into a connection
	// the server is closing.
	idleConnTimeout = 90 * time.Second
	// responseHeaderTimeout bounds the wait for an answer after a request
	// was sent, for callers without a context deadline. kmsproxyd answers
	// within its --request-timeout (10 s by default) or with an error.
	responseHeaderTimeout = time.Minute
)

// New returns an AWS SDK KMS client whose requests go to the kmsproxyd at
// enclave ("vsock://CID:PORT", "tcp://HOST:PORT" or "unix:///path").
//
// The client is configured like config.LoadDefaultConfig would configure it
// (so AWS_MAX_ATTEMPTS, AWS_RETRY_MODE and the shared config file's retry and
// logging settings apply), except that it sends requests unsigned to
// Endpoint, through HTTPClient(enclave), in Region. No credentials are looked
// up and no connection is made until the first call; ctx bounds only the
// loading of the shared configuration. optFns run last and may override any
// option, for example o.Retryer or o.Region.
func New(ctx context.Context, enclave string, optFns ...func(*kms.Options)) (*kms.Client, error) {
	hc, err := HTTPClient(enclave)
	if err != nil {
		return nil, err
	}
	cfg, err := config.LoadDefaultConfig(ctx,
		config.WithRegion(Region),
		config.WithCredentialsProvider(aws.AnonymousCredentials{}),
	)
	if err != nil {
		return nil, fmt.Errorf("failed to load the AWS SDK configuration: %w", err)
	}
	// The HTTP client is set here rather than with config.WithHTTPClient:
	// LoadDefaultConfig refuses a plain *http.Client when AWS_CA_BUNDLE is
	// set (it wants to add the bundle to it), and the enclave's plain HTTP
	// needs no CA anyway.
	opts := append([]func(*kms.Options){func(o *kms.Options) {
		o.BaseEndpoint = aws.String(Endpoint)
		o.HTTPClient = hc
		o.Retryer = noRetryDependencyTimeout{o.Retryer}
	}}, optFns...)
	return kms.NewFromConfig(cfg, opts...), nil
}

// noRetryDependencyTimeout keeps the SDK's retry rules except for
// DependencyTimeoutException, which kmsproxyd answers only once it has spent
// its whole --request-timeout on KMS, retries included: the client retrying
// it would multiply that wait by the SDK's attempts (3 by default) and, with
// a typical 30 s deadline, end in a deadline error that hides the real cause
// (KMS did not answer kmsproxyd) behind "no answer from the enclave".
type noRetryDependencyTimeout struct{ aws.Retryer }

func (r noRetryDependencyTimeout) IsErrorRetryable(err error) bool {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode() == "DependencyTimeoutException" {
		return false
	}
	return r.Retryer.IsErrorRetryable(err)
}

// HTTPClient returns an HTTP client whose every connection goes to the
// kmsproxyd at enclave, whatever host the request URL names, for the control
// endpoints (GET Endpoint+"/readyz", "/metrics", "/v1/info", ...). It keeps
// connections alive for reuse, ignores HTTP_PROXY and friends (the enclave is
// never behind a proxy) and is safe for concurrent use.
func HTTPClient(enclave string) (*http.Client, error) {
	a, err := transport.Parse(enclave)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the enclave address: %w", err)
	}
	if a.Network == transport.VSOCK && a.CID == transport.AnyCID {
		return nil, fmt.Errorf("failed to parse the enclave address: %s has no CID (want vsock://CID:PORT, e.g. vsock://16:5000)", a)
	}
	// Request bodies are buffered so that the AWS SDK closing its body
	// when an answer arrives cannot close the connection (sdkhttp).
	return &http.Client{Transport: sdkhttp.BufferBodies(&http.Transport{
		Proxy:                 nil,
		DialContext:           transport.DialFunc(a),
		MaxIdleConns:          maxConnsPerHost,
		MaxIdleConnsPerHost:   maxConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
	}, 0)}, nil
}

// MaxControlResponse bounds what Info and Attestation read from kmsproxyd.
// The largest control answer is an attestation document: at most
// attestation.MaxDocumentSize (16.5 KiB) in base64 (22 KiB) inside a small
// JSON object; /v1/info is a few KiB with a long policy. 256 KiB is ample.
const MaxControlResponse = 256 << 10

// Info is what kmsproxyd reports about itself on GET /v1/info.
type Info struct {
	// Version is kmsproxyd's version.
	Version string `json:"version"`
	// Uptime is how long it has been serving, e.g. "1h2m3s".
	Uptime string `json:"uptime"`
	// PCRs are the enclave's measurements as the NSM reports them, by
	// index ("0", "1", ...) as lower-case hex; PCR0 is what key policies
	// call kms:RecipientAttestation:ImageSha384.
	PCRs map[string]string `json:"pcrs"`
	// KeyFingerprint identifies kmsproxyd's current recipient RSA key.
	KeyFingerprint string `json:"key_fingerprint"`
	// KeyBits is that key's size.
	KeyBits int `json:"key_bits"`
	// Settings is kmsproxyd's effective configuration (no secrets).
	Settings map[string]any `json:"settings"`
	// Policy summarises what each listener may do.
	Policy json.RawMessage `json:"policy"`
}

// GetInfo returns what the kmsproxyd at enclave reports on GET /v1/info.
func GetInfo(ctx context.Context, enclave string) (*Info, error) {
	hc, err := HTTPClient(enclave)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	var info Info
	if err := do(ctx, hc, http.MethodGet, "/v1/info", nil, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// AttestationRequest is the body of POST /v1/attestation: the fields a
// remote verifier wants the enclave's NSM to sign into a fresh document.
// The nonce is at most 1024 bytes (NSM's limit) and is signed as it is. The
// user data is at most 945 bytes: kmsproxyd signs it inside a structure
// that names the listener the request came in on and says the bytes are
// the caller's, so that no requested document reads as a statement of the
// enclave (docs/security.md, "Requested attestation documents").
type AttestationRequest struct {
	Nonce    []byte `json:"nonce,omitempty"`
	UserData []byte `json:"user_data,omitempty"`
}

// Attestation asks the kmsproxyd at enclave for a fresh attestation document
// carrying req's nonce and user data, and returns it as the NSM produced it
// (untagged COSE_Sign1, CBOR). Verify it before trusting anything in it.
func Attestation(ctx context.Context, enclave string, req AttestationRequest) ([]byte, error) {
	hc, err := HTTPClient(enclave)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	var out struct {
		Document []byte `json:"document"`
	}
	if err := do(ctx, hc, http.MethodPost, "/v1/attestation", req, &out); err != nil {
		return nil, err
	}
	if len(out.Document) == 0 {
		return nil, errors.New("failed to get an attestation document: the answer holds no document")
	}
	return out.Document, nil
}

// do sends a JSON request to one of kmsproxyd's control endpoints (path
// such as "/v1/info") with hc, an HTTPClient, and decodes a 2xx JSON answer
// into out (unless out is nil). A non-2xx answer is returned as an *Error.
// in, when not nil, is sent as the JSON body (a json.RawMessage as it is). At most MaxControlResponse
// bytes of the answer are read.
func do(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case json.RawMessage: // already encoded; the caller clears it
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("failed to encode the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, Endpoint+path, body)
	if err != nil {
		return fmt.Errorf("failed to build the request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("failed to reach kmsproxyd: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxControlResponse+1))
	if err != nil {
		return fmt.Errorf("failed to read the answer to %s %s: %w", method, path, err)
	}
	if len(b) > MaxControlResponse {
		return fmt.Errorf("failed to read the answer to %s %s: over %d bytes", method, path, MaxControlResponse)
	}
	if resp.StatusCode/100 != 2 {
		return newError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("failed to decode the answer to %s %s: %w", method, path, err)
	}
	return nil
}
