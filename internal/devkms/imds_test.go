package devkms_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

// lockedBuffer collects devkms's logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const roleARN = "arn:aws:iam::111122223333:role/enclave-parent"

// rolePrincipal is the principal of the IMDS role's credentials with the
// default role and instance ID.
const rolePrincipal = "arn:aws:sts::111122223333:assumed-role/enclave-parent/i-0123456789abcdef0"

// imdsServer is a devkms serving IMDS, with its logs.
type imdsServer struct {
	*devkmstest.Instance
	logs *lockedBuffer
}

// startIMDS starts devkms with IMDS, the operator alice's access key and
// every log line kept; clock nil means the real clock.
func startIMDS(t *testing.T, clock *fakeClock, opts ...devkmstest.Option) *imdsServer {
	t.Helper()
	logs := &lockedBuffer{}
	opts = append([]devkmstest.Option{
		devkmstest.WithIMDS(),
		devkmstest.WithCredentials(alice),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			if clock != nil {
				c.Now = clock.Now
			}
		}),
	}, opts...)
	s := &imdsServer{Instance: devkmstest.Start(t, opts...), logs: logs}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("devkms's logs:\n%s", logs)
		}
	})
	return s
}

// imdsDo sends one request to the IMDS and returns the status, the headers
// and the body.
func imdsDo(t *testing.T, s *imdsServer, method, path string, header map[string]string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.IMDSURL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// imdsToken gets a session token living ttl seconds.
func imdsToken(t *testing.T, s *imdsServer, ttl int) string {
	t.Helper()
	status, _, tok := imdsDo(t, s, http.MethodPut, "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": strconv.Itoa(ttl)}, nil)
	if status != http.StatusOK || tok == "" {
		t.Fatalf("PUT /latest/api/token: %d %q", status, tok)
	}
	return tok
}

// imdsGet GETs a metadata path with a fresh token and wants 200.
func imdsGet(t *testing.T, s *imdsServer, path string) string {
	t.Helper()
	status, _, body := imdsDo(t, s, http.MethodGet, path, map[string]string{"X-aws-ec2-metadata-token": imdsToken(t, s, 60)}, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", path, status, body)
	}
	return body
}

// roleDocument is the role's credential document, as an SDK reads it.
type roleDocument struct {
	Code, Type, LastUpdated, Expiration string
	AccessKeyId, SecretAccessKey, Token string
}

func (d roleDocument) credential() devkms.Credential {
	return devkms.Credential{AccessKeyID: d.AccessKeyId, SecretAccessKey: d.SecretAccessKey, SessionToken: d.Token, Principal: rolePrincipal}
}

func (d roleDocument) expiration(t *testing.T) time.Time {
	t.Helper()
	e, err := time.Parse(time.RFC3339, d.Expiration)
	if err != nil {
		t.Fatalf("Expiration %q: %v", d.Expiration, err)
	}
	return e
}

func getRoleDocument(t *testing.T, s *imdsServer) roleDocument {
	t.Helper()
	var d roleDocument
	body := imdsGet(t, s, "/latest/meta-data/iam/security-credentials/enclave-parent")
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("credential document: %v\n%s", err, body)
	}
	return d
}

// errorTitle is the title of IMDS's XHTML error page for status.
func errorTitle(status int) string {
	return fmt.Sprintf("<title>%d - %s</title>", status, http.StatusText(status))
}

func TestIMDSToken(t *testing.T) {
	s := startIMDS(t, nil)
	const ttlHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		status int
	}{
		{"TTL 1 second, the minimum", "PUT", "/latest/api/token", map[string]string{ttlHeader: "1"}, 200},
		{"TTL 21600 seconds, the maximum", "PUT", "/latest/api/token", map[string]string{ttlHeader: "21600"}, 200},
		{"TTL 0", "PUT", "/latest/api/token", map[string]string{ttlHeader: "0"}, 400},
		{"TTL 21601", "PUT", "/latest/api/token", map[string]string{ttlHeader: "21601"}, 400},
		{"negative TTL", "PUT", "/latest/api/token", map[string]string{ttlHeader: "-60"}, 400},
		{"TTL not a number", "PUT", "/latest/api/token", map[string]string{ttlHeader: "6h"}, 400},
		{"no TTL", "PUT", "/latest/api/token", nil, 400},
		{"X-Forwarded-For", "PUT", "/latest/api/token", map[string]string{ttlHeader: "60", "X-Forwarded-For": "203.0.113.7"}, 403},
		{"version-specific path", "PUT", "/2021-03-23/api/token", map[string]string{ttlHeader: "60"}, 403},
		{"GET the token endpoint", "GET", "/latest/api/token", map[string]string{ttlHeader: "60"}, 405},
		{"POST the token endpoint", "POST", "/latest/api/token", map[string]string{ttlHeader: "60"}, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := imdsDo(t, s, tt.method, tt.path, tt.header, nil)
			if status != tt.status {
				t.Fatalf("%s %s: status %d, want %d\n%s", tt.method, tt.path, status, tt.status, body)
			}
			if status != http.StatusOK {
				if !strings.Contains(body, errorTitle(status)) || h.Get("Content-Type") != "text/html" {
					t.Errorf("error page %q (%s), want IMDS's page titled %s", body, h.Get("Content-Type"), errorTitle(status))
				}
				return
			}
			// The TTL comes back in the same header (the SDKs read it).
			if got, want := h.Get(ttlHeader), tt.header[ttlHeader]; got != want {
				t.Errorf("%s in the answer = %q, want %q", ttlHeader, got, want)
			}
			if got := imdsGetWith(t, s, "/latest/meta-data/instance-id", body); got != 200 {
				t.Errorf("the new token does not work: %d", got)
			}
		})
	}
	if logs := s.logs.String(); !strings.Contains(logs, "X-Forwarded-For header (a relayed request) is refused") {
		t.Errorf("the log does not say why the X-Forwarded-For PUT was refused:\n%s", logs)
	}
}

func imdsGetWith(t *testing.T, s *imdsServer, path, token string) int {
	t.Helper()
	status, _, _ := imdsDo(t, s, http.MethodGet, path, map[string]string{"X-aws-ec2-metadata-token": token}, nil)
	return status
}

// TestIMDSTokenRequired: every GET needs a valid token of this devkms's
// own, unexpired; IMDSv1 requests (no token) are refused as on an instance
// that requires IMDSv2.
func TestIMDSTokenRequired(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := startIMDS(t, clock)
	other := startIMDS(t, clock)
	good := imdsToken(t, s, 60)
	// Another base64 digit in the middle: still decodes, MAC differs.
	flipped := []byte(good)
	if flipped[10] == 'A' {
		flipped[10] = 'B'
	} else {
		flipped[10] = 'A'
	}
	const path = "/latest/meta-data/placement/region"
	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"valid", good, 200},
		{"IMDSv1 request without a token", "", 401},
		{"garbage", "not-a-token", 401},
		{"one character changed", string(flipped), 401},
		{"too long", good + "AAAA", 401},
		{"from another devkms", imdsToken(t, other, 60), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.token != "" {
				h["X-aws-ec2-metadata-token"] = tt.token
			}
			status, resp, body := imdsDo(t, s, http.MethodGet, path, h, nil)
			if status != tt.status {
				t.Fatalf("status %d, want %d\n%s", status, tt.status, body)
			}
			if status == 401 && (!strings.Contains(body, errorTitle(401)) || resp.Get("Content-Type") != "text/html") {
				t.Errorf("401 page %q", body)
			}
		})
	}
	t.Run("expiry", func(t *testing.T) {
		tok := imdsToken(t, s, 2)
		clock.Set(clock.Now().Add(2*time.Second - time.Nanosecond))
		if got := imdsGetWith(t, s, path, tok); got != 200 {
			t.Fatalf("a token 1ns before its TTL ends: %d, want 200", got)
		}
		clock.Set(clock.Now().Add(time.Nanosecond))
		if got := imdsGetWith(t, s, path, tok); got != 401 {
			t.Fatalf("a token at the end of its TTL: %d, want 401", got)
		}
	})
	logs := s.logs.String()
	for _, want := range []string{"an IMDSv1 request, refused because this IMDS requires IMDSv2", "the token expired at", "not one this IMDS issued"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	checkNoSecrets(t, s, good)
}

var imdsTimeRE = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$`)

func TestIMDSPaths(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	s := startIMDS(t, clock, devkmstest.WithConfig(func(c *devkms.Config) { c.Region = "eu-west-2" }))
	tests := []struct {
		path   string
		status int
		want   string // the whole body; "" to skip
	}{
		{"/latest/meta-data/iam/security-credentials/", 200, "enclave-parent"},
		{"/latest/meta-data/iam/security-credentials", 200, "enclave-parent"},
		{"/latest/meta-data/placement/region", 200, "eu-west-2"},
		{"/latest/meta-data/instance-id", 200, "i-0123456789abcdef0"},
		{"/latest/meta-data/", 200, "iam/\ninstance-id\nplacement/"},
		{"/latest/meta-data/iam/", 200, "security-credentials/"},
		{"/latest/meta-data/placement/", 200, "region"},
		{"/latest/dynamic/instance-identity/", 200, "document"},
		{"/latest/", 200, "dynamic/\nmeta-data/"},
		{"/latest/meta-data/iam/security-credentials/enclave-parent", 200, ""},
		{"/latest/dynamic/instance-identity/document", 200, ""},
		// Everything else is 404, EC2's page.
		{"/latest/meta-data/iam/security-credentials/another-role", 404, ""},
		{"/latest/meta-data/iam/security-credentials/enclave-parent/", 404, ""},
		{"/latest/meta-data/instance-id/", 404, ""},
		{"/latest/meta-data/ami-id", 404, ""},
		{"/latest/user-data", 404, ""},
		{"/latest/meta-data/../dynamic/instance-identity/document", 404, ""},
		{"/2021-03-23/meta-data/instance-id", 404, ""},
		{"/", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			status, h, body := imdsDo(t, s, http.MethodGet, tt.path, map[string]string{"X-aws-ec2-metadata-token": imdsToken(t, s, 60)}, nil)
			if status != tt.status {
				t.Fatalf("status %d, want %d\n%s", status, tt.status, body)
			}
			wantType := "text/plain"
			if status != 200 {
				wantType = "text/html"
				if !strings.Contains(body, errorTitle(status)) {
					t.Errorf("body %q, want IMDS's %d page", body, status)
				}
			}
			if got := h.Get("Content-Type"); got != wantType {
				t.Errorf("Content-Type %q, want %q", got, wantType)
			}
			if tt.want != "" && body != tt.want {
				t.Errorf("body %q, want %q", body, tt.want)
			}
		})
	}

	t.Run("credential document", func(t *testing.T) {
		body := imdsGet(t, s, "/latest/meta-data/iam/security-credentials/enclave-parent")
		// EC2's members, in EC2's order and layout.
		var names []string
		for _, m := range regexp.MustCompile(`(?m)^  "([A-Za-z]+)" : `).FindAllStringSubmatch(body, -1) {
			names = append(names, m[1])
		}
		if diff := cmp.Diff([]string{"Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}, names); diff != "" {
			t.Errorf("members (-want +got):\n%s\n%s", diff, body)
		}
		var d roleDocument
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatal(err)
		}
		if d.Code != "Success" || d.Type != "AWS-HMAC" {
			t.Errorf("Code %q Type %q, want Success AWS-HMAC", d.Code, d.Type)
		}
		for _, ts := range []string{d.LastUpdated, d.Expiration} {
			if !imdsTimeRE.MatchString(ts) {
				t.Errorf("time %q is not in IMDS's form 2017-05-17T15:09:54Z", ts)
			}
		}
		if d.LastUpdated != "2026-03-01T12:00:00Z" || d.Expiration != "2026-03-01T13:00:00Z" {
			t.Errorf("LastUpdated %s Expiration %s, want the clock's time and one hour later", d.LastUpdated, d.Expiration)
		}
		if !regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`).MatchString(d.AccessKeyId) || len(d.SecretAccessKey) != 40 || len(d.Token) < 100 {
			t.Errorf("AccessKeyId %q, secret of %d characters, token of %d: want a temporary key ID, a 40-character secret and a long token",
				d.AccessKeyId, len(d.SecretAccessKey), len(d.Token))
		}
	})
	t.Run("identity document", func(t *testing.T) {
		body := imdsGet(t, s, "/latest/dynamic/instance-identity/document")
		var doc map[string]any
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatalf("%v\n%s", err, body)
		}
		for _, k := range []string{"accountId", "architecture", "availabilityZone", "billingProducts", "devpayProductCodes",
			"marketplaceProductCodes", "imageId", "instanceId", "instanceType", "kernelId", "pendingTime", "privateIp",
			"ramdiskId", "region", "version"} {
			if _, ok := doc[k]; !ok {
				t.Errorf("the document lacks %s", k)
			}
		}
		want := map[string]any{"accountId": "111122223333", "instanceId": "i-0123456789abcdef0", "region": "eu-west-2",
			"availabilityZone": "eu-west-2a", "pendingTime": "2026-03-01T12:00:00Z", "version": "2017-09-30"}
		for k, v := range want {
			if doc[k] != v {
				t.Errorf("%s = %v, want %v", k, doc[k], v)
			}
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		status, h, body := imdsDo(t, s, http.MethodHead, "/latest/meta-data/placement/region", map[string]string{"X-aws-ec2-metadata-token": imdsToken(t, s, 60)}, nil)
		if status != 200 || body != "" || h.Get("Content-Length") != "9" {
			t.Errorf("HEAD: %d, body %q, Content-Length %s; want 200, no body, 9", status, body, h.Get("Content-Length"))
		}
	})
	t.Run("other methods", func(t *testing.T) {
		for _, m := range []string{http.MethodPost, http.MethodDelete, http.MethodPut} {
			status, h, _ := imdsDo(t, s, m, "/latest/meta-data/instance-id", map[string]string{"X-aws-ec2-metadata-token": imdsToken(t, s, 60)}, nil)
			if status != 405 || h.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: %d Allow %q, want 405 and GET, HEAD", m, status, h.Get("Allow"))
			}
		}
	})
}

// TestIMDSWithAWSSDK: aws-sdk-go-v2's own IMDS client and role credentials
// provider (IMDSv2 only) read devkms's IMDS, and the credentials they get
// sign KMS calls that devkms attributes to the role's session.
func TestIMDSWithAWSSDK(t *testing.T) {
	s := startIMDS(t, nil, devkmstest.WithConfig(func(c *devkms.Config) { c.Region = "ap-southeast-2" }))
	client := imds.New(imds.Options{Endpoint: s.IMDSURL, ClientEnableState: imds.ClientEnabled, EnableFallback: aws.FalseTernary})
	region, err := client.GetRegion(ctx, nil)
	if err != nil || region.Region != "ap-southeast-2" {
		t.Fatalf("GetRegion: %+v, %v", region, err)
	}
	iid, err := client.GetInstanceIdentityDocument(ctx, nil)
	if err != nil {
		t.Fatalf("GetInstanceIdentityDocument: %v", err)
	}
	if iid.AccountID != "111122223333" || iid.InstanceID != "i-0123456789abcdef0" || iid.Region != "ap-southeast-2" || iid.PendingTime.IsZero() {
		t.Errorf("identity document %+v", iid.InstanceIdentityDocument)
	}
	creds, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = client }).Retrieve(ctx)
	if err != nil {
		t.Fatalf("ec2rolecreds: %v", err)
	}
	if !creds.CanExpire || creds.SessionToken == "" {
		t.Errorf("credentials %s: want temporary ones with a session token", creds.AccessKeyID)
	}
	key := s.CreateKey(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"`+roleARN+`"},"Action":["kms:Encrypt","kms:Decrypt"],"Resource":"*"}]}`)
	c := s.ClientWith(t, devkms.Credential{AccessKeyID: creds.AccessKeyID, SecretAccessKey: creds.SecretAccessKey, SessionToken: creds.SessionToken})
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &key, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("Encrypt with the role's credentials: %v", err)
	}
	if logs := s.logs.String(); !strings.Contains(logs, "principal="+rolePrincipal) {
		t.Errorf("devkms did not log the role's session as the principal:\n%s", logs)
	}
	checkNoSecrets(t, s, creds.SecretAccessKey, creds.SessionToken)
}

// checkNoSecrets fails t when a secret appears in devkms's logs.
func checkNoSecrets(t *testing.T, s *imdsServer, secrets ...string) {
	t.Helper()
	logs := s.logs.String()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(logs, sec) {
			t.Errorf("a secret (%d characters) appears in devkms's logs", len(sec))
		}
	}
}

// TestIMDSCredentialsPrincipal: the role's credentials stand for
// arn:aws:sts::ACCOUNT:assumed-role/ROLE/INSTANCE_ID, which key policies and
// IAM policies see as the role, like any other principal.
func TestIMDSCredentialsPrincipal(t *testing.T) {
	s := startIMDS(t, nil, devkmstest.WithConfig(func(c *devkms.Config) {
		c.IAMPolicies = map[string][]devkms.IAMPolicy{
			roleARN:         {{Name: "EncryptOnly", Policy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:Encrypt","Resource":"*"}]}`}},
			alice.Principal: {{Name: "All", Policy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`}},
		}
	}))
	role := s.ClientWith(t, getRoleDocument(t, s).credential())
	operator := s.ClientFor(t, alice.AccessKeyID)

	// A key policy naming the role (not the session) lets the session in,
	// for Decrypt too, which its IAM policy does not allow (a key policy
	// that names a principal needs no IAM policy), and nobody else.
	roleKey := s.CreateKey(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"`+roleARN+`"},"Action":"kms:*","Resource":"*"}]}`)
	enc, err := role.Encrypt(ctx, &kms.EncryptInput{KeyId: &roleKey, Plaintext: []byte("for the role")})
	if err != nil {
		t.Fatalf("Encrypt as the role: %v", err)
	}
	if _, err := role.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil {
		t.Fatalf("Decrypt as the role under a key policy naming it: %v", err)
	}
	_, err = operator.Encrypt(ctx, &kms.EncryptInput{KeyId: &roleKey, Plaintext: []byte("x")})
	wantAPIError(t, err, "AccessDeniedException", "User: "+alice.Principal+" is not authorized to perform: kms:Encrypt")

	// A key policy that delegates to IAM (names the account) lets the role
	// do what its IAM policy allows: Encrypt, not Decrypt.
	accountKey := s.CreateKey(t, "") // the default key policy: the account, i.e. IAM, decides
	enc, err = role.Encrypt(ctx, &kms.EncryptInput{KeyId: &accountKey, Plaintext: []byte("x")})
	if err != nil {
		t.Fatalf("Encrypt as the role under its IAM policy: %v", err)
	}
	_, err = role.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	wantAPIError(t, err, "AccessDeniedException", "User: "+rolePrincipal+" is not authorized to perform: kms:Decrypt")
}

// TestIMDSCredentialsRotate moves devkms's clock through rotations: each set
// lives its lifetime, the next set is served lead before the current one
// expires (five minutes, half the lifetime for short ones), every set is
// accepted until its Expiration and answered ExpiredTokenException after.
func TestIMDSCredentialsRotate(t *testing.T) {
	body := []byte(`{"NumberOfBytes":8}`)
	for _, tt := range []struct {
		lifetime, lead time.Duration
	}{
		{2 * time.Minute, time.Minute},
		{10 * time.Minute, 5 * time.Minute},
		{time.Hour, 5 * time.Minute},
		{12 * time.Hour, 5 * time.Minute},
	} {
		t.Run(tt.lifetime.String(), func(t *testing.T) {
			start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
			clock := newFakeClock(start)
			s := startIMDS(t, clock, devkmstest.WithConfig(func(c *devkms.Config) { c.IMDSCredentialLifetime = tt.lifetime }))
			call := func(cred devkms.Credential) (int, string, string) {
				t.Helper()
				return doRaw(t, s.Instance, signedRequest(t, s.URL, cred, "us-east-1", clock.Now(), body))
			}
			wantOK := func(what string, cred devkms.Credential) {
				t.Helper()
				if status, typ, msg := call(cred); status != 200 {
					t.Fatalf("%s at %s: %d %s %s, want 200", what, clock.Now().Format(time.RFC3339), status, typ, msg)
				}
			}

			first := getRoleDocument(t, s)
			exp1 := first.expiration(t)
			if !exp1.Equal(start.Add(tt.lifetime)) {
				t.Fatalf("first set expires %s, want %s", exp1, start.Add(tt.lifetime))
			}
			wantOK("the first set", first.credential())

			// Up to lead before its expiry IMDS serves the same set.
			clock.Set(exp1.Add(-tt.lead - time.Second))
			if d := getRoleDocument(t, s); d.AccessKeyId != first.AccessKeyId {
				t.Fatalf("a new set %s before the rotation time", d.AccessKeyId)
			}
			// From then on, the next one.
			clock.Set(exp1.Add(-tt.lead))
			second := getRoleDocument(t, s)
			if second.AccessKeyId == first.AccessKeyId || second.SecretAccessKey == first.SecretAccessKey || second.Token == first.Token {
				t.Fatalf("no new set at the rotation time (lead %s)", tt.lead)
			}
			if second.LastUpdated != clock.Now().Format("2006-01-02T15:04:05Z") || !second.expiration(t).Equal(clock.Now().Add(tt.lifetime)) {
				t.Errorf("second set LastUpdated %s Expiration %s, want now and now+%s", second.LastUpdated, second.Expiration, tt.lifetime)
			}
			// Both sets work until the first one's Expiration.
			wantOK("the second set", second.credential())
			clock.Set(exp1.Add(-time.Second))
			wantOK("the first set one second before its Expiration", first.credential())
			clock.Set(exp1)
			status, typ, msg := call(first.credential())
			if status != 400 || typ != "ExpiredTokenException" || msg != "The security token included in the request is expired" {
				t.Fatalf("the first set at its Expiration: %d %s %q, want KMS's 400 ExpiredTokenException", status, typ, msg)
			}
			wantOK("the second set", second.credential())
			// The session token is required and checked.
			noToken, wrongToken := second.credential(), second.credential()
			noToken.SessionToken, wrongToken.SessionToken = "", first.Token
			for name, c := range map[string]devkms.Credential{"no session token": noToken, "another set's token": wrongToken} {
				if status, typ, _ := call(c); status != 400 || typ != "UnrecognizedClientException" {
					t.Errorf("%s: %d %s, want UnrecognizedClientException", name, status, typ)
				}
			}
			// A clock jump past every expiry: a fresh set, the old ones
			// expired.
			clock.Set(second.expiration(t).Add(3 * time.Hour))
			third := getRoleDocument(t, s)
			if third.AccessKeyId == second.AccessKeyId || !third.expiration(t).Equal(clock.Now().Add(tt.lifetime)) {
				t.Fatalf("after the jump: set %s expiring %s", third.AccessKeyId, third.Expiration)
			}
			wantOK("the set after the jump", third.credential())
			if _, typ, _ := call(second.credential()); typ != "ExpiredTokenException" {
				t.Errorf("the second set after the jump: %s, want ExpiredTokenException", typ)
			}
			checkNoSecrets(t, s, first.SecretAccessKey, first.Token, second.SecretAccessKey, second.Token, third.SecretAccessKey, third.Token)
			if logs := s.logs.String(); strings.Count(logs, "IMDS role credentials issued") != 3 {
				t.Errorf("want three issuances logged:\n%s", logs)
			}
		})
	}
}
