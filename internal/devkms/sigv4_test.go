package devkms_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

var (
	alice = devkms.Credential{AccessKeyID: "AKIAALICE00000000001", SecretAccessKey: "alice-secret", Principal: "arn:aws:iam::111122223333:user/alice"}
	bob   = devkms.Credential{AccessKeyID: "AKIABOB0000000000001", SecretAccessKey: "bob-secret", Principal: "arn:aws:iam::111122223333:user/bob"}
	carol = devkms.Credential{AccessKeyID: "ASIACAROL00000000001", SecretAccessKey: "carol-secret", SessionToken: "carol-token",
		Principal: "arn:aws:sts::111122223333:assumed-role/admin/carol"}
)

// signedRequest builds a GenerateRandom request signed with cred at the
// given time by aws-sdk-go-v2's signer.
func signedRequest(t *testing.T, url string, cred devkms.Credential, region string, at time.Time, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "TrentService.GenerateRandom")
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: cred.AccessKeyID, SecretAccessKey: cred.SecretAccessKey, SessionToken: cred.SessionToken}
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "kms", region, at); err != nil {
		t.Fatal(err)
	}
	return req
}

func doRaw(t *testing.T, kmsd *devkmstest.Instance, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := kmsd.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Type, e.Message
}

func TestSigV4(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	kmsd := devkmstest.Start(t,
		devkmstest.WithCredentials(alice, bob, carol),
		devkmstest.WithConfig(func(c *devkms.Config) { c.Now = func() time.Time { return now } }),
	)
	// Only alice (and the account root, which nobody here is) may use the
	// key: the principal comes from the access key.
	keyID := kmsd.CreateKey(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"`+alice.Principal+`"},"Action":"kms:*","Resource":"*"}]}`)
	t.Run("signed by aws-sdk-go-v2", func(t *testing.T) {
		if _, err := kmsd.ClientFor(t, alice.AccessKeyID).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("x")}); err != nil {
			t.Fatalf("alice: %v", err)
		}
		_, err := kmsd.ClientFor(t, bob.AccessKeyID).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("x")})
		wantAPIError(t, err, "AccessDeniedException", "User: "+bob.Principal+" is not authorized to perform: kms:Encrypt")
		if _, err := kmsd.ClientFor(t, carol.AccessKeyID).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(4)}); err != nil {
			t.Fatalf("carol with her session token: %v", err)
		}
	})
	body := []byte(`{"NumberOfBytes":8}`)
	wrongSecret := alice
	wrongSecret.SecretAccessKey = "not-alice-secret"
	unknown := devkms.Credential{AccessKeyID: "AKIAUNKNOWN000000001", SecretAccessKey: "x"}
	carolNoToken := carol
	carolNoToken.SessionToken = ""
	tests := []struct {
		name   string
		req    func() *http.Request
		status int
		typ    string
		msg    string
	}{
		{"exactly 15 minutes old", func() *http.Request {
			return signedRequest(t, kmsd.URL, alice, "us-east-1", now.Add(-15*time.Minute), body)
		}, 200, "", ""},
		{"15 minutes and 1 second old", func() *http.Request {
			return signedRequest(t, kmsd.URL, alice, "us-east-1", now.Add(-15*time.Minute-time.Second), body)
		}, 400, "InvalidSignatureException", "Signature expired: " + now.Add(-15*time.Minute-time.Second).Format("20060102T150405Z") +
			" is now earlier than " + now.Add(-15*time.Minute).Format("20060102T150405Z") + " (" + now.Format("20060102T150405Z") + " - 15 min.)"},
		{"exactly 15 minutes ahead", func() *http.Request {
			return signedRequest(t, kmsd.URL, alice, "us-east-1", now.Add(15*time.Minute), body)
		}, 200, "", ""},
		{"15 minutes and 1 second ahead", func() *http.Request {
			return signedRequest(t, kmsd.URL, alice, "us-east-1", now.Add(15*time.Minute+time.Second), body)
		}, 400, "InvalidSignatureException", "Signature not yet current"},
		{"wrong secret", func() *http.Request {
			return signedRequest(t, kmsd.URL, wrongSecret, "us-east-1", now, body)
		}, 400, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."},
		{"body changed after signing", func() *http.Request {
			r := signedRequest(t, kmsd.URL, alice, "us-east-1", now, body)
			r.Body = io.NopCloser(strings.NewReader(`{"NumberOfBytes":9}`))
			return r
		}, 400, "InvalidSignatureException", "The request signature we calculated does not match"},
		{"unknown access key", func() *http.Request {
			return signedRequest(t, kmsd.URL, unknown, "us-east-1", now, body)
		}, 400, "UnrecognizedClientException", "The security token included in the request is invalid."},
		{"session token missing", func() *http.Request {
			return signedRequest(t, kmsd.URL, carolNoToken, "us-east-1", now, body)
		}, 400, "UnrecognizedClientException", "The security token included in the request is invalid."},
		{"scoped to another region", func() *http.Request {
			return signedRequest(t, kmsd.URL, alice, "eu-west-1", now, body)
		}, 400, "InvalidSignatureException", "Credential should be scoped to a valid region, not 'eu-west-1'."},
		{"no signature", func() *http.Request {
			r := signedRequest(t, kmsd.URL, alice, "us-east-1", now, body)
			r.Header.Del("Authorization")
			return r
		}, 403, "MissingAuthenticationTokenException", "Missing Authentication Token"},
		{"no X-Amz-Date", func() *http.Request {
			r := signedRequest(t, kmsd.URL, alice, "us-east-1", now, body)
			r.Header.Del("X-Amz-Date")
			return r
		}, 400, "IncompleteSignatureException", "X-Amz-Date"},
		{"malformed Authorization", func() *http.Request {
			r := signedRequest(t, kmsd.URL, alice, "us-east-1", now, body)
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
			return r
		}, 400, "IncompleteSignatureException", "Authorization header requires 'SignedHeaders' parameter."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, typ, msg := doRaw(t, kmsd, tt.req())
			if status != tt.status || typ != tt.typ || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %d %s %q\nwant %d %s containing %q", status, typ, msg, tt.status, tt.typ, tt.msg)
			}
		})
	}
}

func TestWithoutCredentialsEveryCallerIsRoot(t *testing.T) {
	kmsd := devkmstest.Start(t)
	// A key only the account root may use works for any (even unsigned)
	// caller, and a key that names someone else refuses the root.
	rootKey := kmsd.CreateKey(t, "")
	other := kmsd.CreateKey(t, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},"Action":"kms:*","Resource":"*"}]}`)
	c := kmsd.ClientWith(t, devkms.Credential{AccessKeyID: "AKIAANYTHING00000001", SecretAccessKey: "whatever"})
	if _, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &rootKey, Plaintext: []byte("x")}); err != nil {
		t.Fatalf("Encrypt as root: %v", err)
	}
	_, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &other, Plaintext: []byte("x")})
	wantAPIError(t, err, "AccessDeniedException", "User: arn:aws:iam::111122223333:root is not authorized")
	status, typ, _ := rawCall(t, kmsd, "TrentService.GenerateRandom", "application/x-amz-json-1.1", []byte(`{"NumberOfBytes":2}`))
	if status != 200 {
		t.Fatalf("unsigned request: %d %s, want 200", status, typ)
	}
}
