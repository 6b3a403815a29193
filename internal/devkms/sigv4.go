package devkms

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// SigV4 constants (AWS General Reference, "Signature Version 4 signing
// process" and "Elements of an AWS API request signature").
const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	amzDateFormat   = "20060102T150405Z"
	signingService  = "kms"
	securityTokenHd = "X-Amz-Security-Token"
	// MaxSignatureSkew is how far a request's X-Amz-Date may be from the
	// server's clock. For KMS-style JSON endpoints AWS allows 15 minutes, as
	// its InvalidSignatureException shows: "Signature expired:
	// 20170111T204052Z is now earlier than 20170111T225449Z
	// (20170111T230949Z - 15 min.)" (upmc-enterprises/registry-creds issue
	// 24; aws/aws-sdk-js issue 254).
	MaxSignatureSkew = 15 * time.Minute
)

// The authentication errors, in AWS's words:
//   - no Authorization header: MissingAuthenticationTokenException, "Missing
//     Authentication Token" (AWS common errors: "The request must contain
//     either a valid (registered) AWS access key ID or X.509 certificate.");
//   - unknown access key or wrong session token: UnrecognizedClientException,
//     "The security token included in the request is invalid.";
//   - wrong signature: InvalidSignatureException, "The request signature we
//     calculated does not match the signature you provided. Check your AWS
//     Secret Access Key and signing method. Consult the service documentation
//     for details." (seen verbatim in smithy545/aws-apps-scripts issue 12);
//   - temporary credentials past their expiry: ExpiredTokenException, "The
//     security token included in the request is expired" (no full stop;
//     status 400: KMS Decrypt in boto/boto3 issue 1127, getsops/sops issue
//     621).
const (
	msgMissingToken    = "Missing Authentication Token"
	msgUnrecognized    = "The security token included in the request is invalid."
	msgSignatureDiffer = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
	msgExpiredToken    = "The security token included in the request is expired"
)

// incompleteSignature is the exception AWS JSON-protocol services answer a
// malformed Authorization header with: {"__type":"IncompleteSignatureException",
// "message":"'...' not a valid key=value pair (missing equal-sign) in
// Authorization header: ..."} (status 400; iann0036/cloud9-sync issue 10,
// awslabs/fhir-works-on-aws-deployment issue 379 for DynamoDB).
const incompleteSignature = kmsapi.IncompleteSignature

// authenticator verifies SigV4 signatures against the configured access keys
// with aws-sdk-go-v2's own signer: it re-signs a copy of the request holding
// exactly the headers the caller signed, with the stored secret and the
// caller's X-Amz-Date, and compares the signatures in constant time.
type authenticator struct {
	keys map[string]Credential
	// temporary finds credentials issued while devkms runs (the IMDS
	// role's) by access key ID, with their expiry; nil when there are
	// none. They are accepted until they expire, then answered
	// ExpiredTokenException.
	temporary func(accessKeyID string) (Credential, time.Time, bool)
	region    string
	now       func() time.Time
	signer    *v4.Signer
}

func newAuthenticator(creds []Credential, region string, now func() time.Time) *authenticator {
	a := &authenticator{keys: make(map[string]Credential, len(creds)), region: region, now: now, signer: v4.NewSigner()}
	for _, c := range creds {
		a.keys[c.AccessKeyID] = c
	}
	return a
}

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	accessKeyID   string
	date          string // scope date, YYYYMMDD
	region        string
	service       string
	signedHeaders []string
	signature     string
}

func parseAuthorization(h string) (sigV4Auth, error) {
	alg, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || alg != sigV4Algorithm {
		return sigV4Auth{}, kmsapi.Errorf(incompleteSignature, "Authorization header must use the %s algorithm", sigV4Algorithm)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return sigV4Auth{}, kmsapi.Errorf(incompleteSignature, "'%s' not a valid key=value pair (missing equal-sign) in Authorization header", shorten(strings.TrimSpace(part)))
		}
		fields[k] = v
	}
	// AWS's IncompleteSignatureException names each missing element:
	// "Authorization header requires 'Credential' parameter." etc.
	for _, name := range []string{"Credential", "SignedHeaders", "Signature"} {
		if fields[name] == "" {
			return sigV4Auth{}, kmsapi.Errorf(incompleteSignature, "Authorization header requires '%s' parameter.", name)
		}
	}
	scope := strings.Split(fields["Credential"], "/")
	if len(scope) != 5 || scope[4] != "aws4_request" {
		return sigV4Auth{}, kmsapi.Errorf(incompleteSignature, "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term")
	}
	return sigV4Auth{
		accessKeyID:   scope[0],
		date:          scope[1],
		region:        scope[2],
		service:       scope[3],
		signedHeaders: strings.Split(fields["SignedHeaders"], ";"),
		signature:     fields["Signature"],
	}, nil
}

// authenticate returns the principal of a signed request, or the KMS-shaped
// error AWS would answer.
func (a *authenticator) authenticate(ctx context.Context, r *http.Request, body []byte) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", kmsapi.Errorf(kmsapi.MissingAuthenticationToken, msgMissingToken)
	}
	auth, err := parseAuthorization(h)
	if err != nil {
		return "", err
	}
	cred, ok := a.keys[auth.accessKeyID]
	var expires time.Time
	if !ok && a.temporary != nil {
		cred, expires, ok = a.temporary(auth.accessKeyID)
	}
	if !ok {
		return "", kmsapi.Errorf(kmsapi.UnrecognizedClient, msgUnrecognized)
	}
	if tok := r.Header.Get(securityTokenHd); subtle.ConstantTimeCompare([]byte(tok), []byte(cred.SessionToken)) != 1 {
		return "", kmsapi.Errorf(kmsapi.UnrecognizedClient, msgUnrecognized)
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if amzDate == "" {
		return "", kmsapi.Errorf(incompleteSignature, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
	}
	signed, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return "", kmsapi.Errorf(incompleteSignature, "X-Amz-Date %q is not in the form %s", shorten(amzDate), amzDateFormat)
	}
	now := a.now().UTC()
	if signed.Before(now.Add(-MaxSignatureSkew)) {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			signed.Format(amzDateFormat), now.Add(-MaxSignatureSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	if signed.After(now.Add(MaxSignatureSkew)) {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			signed.Format(amzDateFormat), now.Add(MaxSignatureSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	if auth.date != signed.Format("20060102") {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.",
			shorten(auth.date), signed.Format("20060102"), amzDate)
	}
	if auth.region != a.region {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, "Credential should be scoped to a valid region, not '%s'. ", shorten(auth.region))
	}
	if auth.service != signingService {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, "Credential should be scoped to correct service: '%s'. ", signingService)
	}
	want, err := a.expectedSignature(ctx, r, body, auth, cred, signed)
	if err != nil {
		return "", err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(auth.signature)) != 1 {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, msgSignatureDiffer)
	}
	// Checked last, so that only a holder of the whole credential learns
	// that it has expired.
	if !expires.IsZero() && !now.Before(expires) {
		return "", kmsapi.Errorf(kmsapi.ExpiredToken, msgExpiredToken)
	}
	return cred.Principal, nil
}

// expectedSignature signs a copy of r that carries only the headers the
// caller listed in SignedHeaders.
func (a *authenticator) expectedSignature(ctx context.Context, r *http.Request, body []byte, auth sigV4Auth, cred Credential, signed time.Time) (string, error) {
	u := &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	cp, err := http.NewRequestWithContext(ctx, r.Method, u.String(), nil)
	if err != nil {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, msgSignatureDiffer)
	}
	cp.Host = r.Host
	for _, name := range auth.signedHeaders {
		switch name {
		case "host":
		case "content-length":
			// The signer adds content-length itself when the request's
			// ContentLength is positive.
			if cl := r.Header.Get("Content-Length"); cl != "" {
				n, err := strconv.ParseInt(cl, 10, 64)
				if err != nil || n != int64(len(body)) {
					return "", kmsapi.Errorf(kmsapi.InvalidSignature, msgSignatureDiffer)
				}
			}
			cp.ContentLength = int64(len(body))
		default:
			if vs := r.Header.Values(name); len(vs) > 0 {
				cp.Header[http.CanonicalHeaderKey(name)] = slices.Clone(vs)
			}
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.SecretAccessKey, SessionToken: cred.SessionToken}
	if err := a.signer.SignHTTP(ctx, creds, cp, hex.EncodeToString(sum[:]), signingService, a.region, signed); err != nil {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, msgSignatureDiffer)
	}
	ours, err := parseAuthorization(cp.Header.Get("Authorization"))
	if err != nil {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, msgSignatureDiffer)
	}
	// The SDK signer never signs some headers (User-Agent, Expect, ...); a
	// caller that signed one cannot be verified this way.
	if !slices.Equal(ours.signedHeaders, auth.signedHeaders) {
		return "", kmsapi.Errorf(kmsapi.InvalidSignature, "%s (signed headers %s cannot be verified; devkms verifies %s)",
			msgSignatureDiffer, shorten(strings.Join(auth.signedHeaders, ";")), strings.Join(ours.signedHeaders, ";"))
	}
	return ours.signature, nil
}
