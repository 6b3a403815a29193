package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/go-cmp/cmp"
)

// Example credentials from the IAM user guide, padded where a test needs a
// different value.
const (
	exampleLongTermID = "AKIAIOSFODNN7EXAMPLE"
	exampleTempID     = "ASIAIOSFODNN7EXAMPLE"
	exampleSecret     = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	exampleToken      = "IQoJb3JpZ2luX2VjEXAMPLEtokenEXAMPLEtokenEXAMPLEtoken+/="
)

var testNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func timePtr(t time.Time) *time.Time { return &t }

func TestDecodePush(t *testing.T) {
	exp := time.Date(2026, 3, 4, 6, 6, 7, 0, time.UTC)
	tests := []struct {
		name      string
		body      string
		want      PushedCredentials
		wantField string // "" when no error is expected
		wantErr   error
		wantMsg   string
	}{
		{
			name: "credential_process format",
			body: `{"Version": 1, "AccessKeyId": "` + exampleTempID + `", "SecretAccessKey": "` + exampleSecret + `", "SessionToken": "` + exampleToken + `", "Expiration": "2026-03-04T06:06:07Z"}`,
			want: PushedCredentials{exampleTempID, exampleSecret, exampleToken, timePtr(exp)},
		},
		{
			// What Python's datetime.isoformat() gives the AWS CLI.
			name: "isoformat offset and microseconds",
			body: `{"Version":1,"AccessKeyId":"` + exampleTempID + `","SecretAccessKey":"` + exampleSecret + `","SessionToken":"` + exampleToken + `","Expiration":"2026-03-04T08:06:07.000000+02:00"}`,
			want: PushedCredentials{exampleTempID, exampleSecret, exampleToken, timePtr(exp.In(time.FixedZone("", 2*3600)))},
		},
		{
			name: "long-term key without Version, token or expiration",
			body: `{"AccessKeyId":"` + exampleLongTermID + `","SecretAccessKey":"` + exampleSecret + `"}`,
			want: PushedCredentials{AccessKeyId: exampleLongTermID, SecretAccessKey: exampleSecret},
		},
		{
			name: "null optional members",
			body: `{"AccessKeyId":"` + exampleLongTermID + `","SecretAccessKey":"` + exampleSecret + `","SessionToken":null,"Expiration":null}`,
			want: PushedCredentials{AccessKeyId: exampleLongTermID, SecretAccessKey: exampleSecret},
		},
		{name: "empty body", body: ``, wantField: "body", wantErr: ErrMalformed, wantMsg: "want a JSON object"},
		{name: "array", body: `[]`, wantField: "body", wantErr: ErrMalformed, wantMsg: "want a JSON object"},
		{name: "truncated", body: `{"AccessKeyId":"` + exampleLongTermID, wantField: "body", wantErr: ErrMalformed, wantMsg: "malformed JSON"},
		{name: "bad syntax", body: `{"AccessKeyId" "x"}`, wantField: "body", wantErr: ErrMalformed, wantMsg: "malformed JSON"},
		{name: "unknown member", body: `{"AccessKeyId":"a","Region":"us-east-1"}`, wantField: "body", wantErr: ErrMalformed, wantMsg: `unknown member "Region"`},
		{name: "IMDS document shape", body: `{"Code":"Success","AccessKeyId":"a"}`, wantField: "body", wantErr: ErrMalformed, wantMsg: `unknown member "Code"`},
		{name: "IMDS Token member", body: `{"AccessKeyId":"a","Token":"t"}`, wantField: "body", wantErr: ErrMalformed, wantMsg: `send the session token as "SessionToken"`},
		{name: "case differs", body: `{"accesskeyid":"a"}`, wantField: "body", wantErr: ErrMalformed, wantMsg: `unknown member "accesskeyid"`},
		{name: "duplicate member", body: `{"AccessKeyId":"a","AccessKeyId":"b"}`, wantField: "body", wantErr: ErrMalformed, wantMsg: "appears twice"},
		{name: "version 2", body: `{"Version":2}`, wantField: "Version", wantErr: ErrMalformed},
		{name: "version as string", body: `{"Version":"1"}`, wantField: "Version", wantErr: ErrMalformed},
		{name: "key as number", body: `{"AccessKeyId":12}`, wantField: "AccessKeyId", wantErr: ErrMalformed, wantMsg: "must be a JSON string"},
		{name: "secret null", body: `{"SecretAccessKey":null}`, wantField: "SecretAccessKey", wantErr: ErrMalformed},
		{name: "expiration without zone", body: `{"Expiration":"2026-03-04T06:06:07"}`, wantField: "Expiration", wantErr: ErrMalformed, wantMsg: "RFC 3339"},
		{name: "expiration as number", body: `{"Expiration":1772604367}`, wantField: "Expiration", wantErr: ErrMalformed},
		{name: "trailing data", body: `{"AccessKeyId":"a"} {}`, wantField: "body", wantErr: ErrMalformed, wantMsg: "unexpected data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodePush(strings.NewReader(tt.body))
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("DecodePush: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("DecodePush mismatch (-want +got):\n%s", diff)
				}
				return
			}
			checkValidationError(t, err, tt.wantField, tt.wantErr, tt.wantMsg)
		})
	}
}

func checkValidationError(t testing.TB, err error, field string, sentinel error, msg string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v (%T), want *ValidationError", err, err)
	}
	if ve.Field != field {
		t.Errorf("error %q names field %q, want %q", err, ve.Field, field)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q is not %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("error %q does not contain %q", err, msg)
	}
	if !strings.HasPrefix(err.Error(), "credentials: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
}

func TestDecodePushSizeLimit(t *testing.T) {
	base := `{"AccessKeyId":"` + exampleLongTermID + `","SecretAccessKey":"` + exampleSecret + `"}`
	tests := []struct {
		name    string
		size    int
		wantErr bool
	}{
		{"at limit", MaxPushBody, false},
		{"past limit", MaxPushBody + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := base + strings.Repeat(" ", tt.size-len(base))
			_, err := DecodePush(strings.NewReader(body))
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("DecodePush of %d bytes: %v", len(body), err)
				}
				return
			}
			checkValidationError(t, err, "body", ErrTooLarge, "exceeds the")
		})
	}
}

// TestDecodePushAWSCLI decodes what the real AWS CLI prints with
// `aws configure export-credentials --format process` (AWS CLI v2.9 or
// later). Every aws on PATH is tried: an older one may come first.
func TestDecodePushAWSCLI(t *testing.T) {
	home := t.TempDir()
	var out []byte
	var tried []string
	seen := map[string]bool{}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		bin := filepath.Join(dir, "aws")
		real, err := filepath.EvalSymlinks(bin)
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		cmd := exec.Command(bin, "configure", "export-credentials", "--format", "process")
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"), "HOME=" + home,
			"AWS_CONFIG_FILE=" + filepath.Join(home, "config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
			"AWS_ACCESS_KEY_ID=" + exampleTempID, "AWS_SECRET_ACCESS_KEY=" + exampleSecret, "AWS_SESSION_TOKEN=" + exampleToken,
		}
		if out, err = cmd.Output(); err == nil {
			break
		}
		out = nil
		tried = append(tried, bin+": "+err.Error())
	}
	if out == nil {
		msg := fmt.Sprintf("no aws CLI on PATH can export credentials (AWS CLI v2.9+ needed); tried %v", tried)
		if os.Getenv("KMSPROXY_REQUIRE_TOOLS") == "1" {
			t.Fatal(msg)
		}
		t.Skip("skipping: " + msg)
	}
	got, err := DecodePush(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("DecodePush(aws CLI output): %v", err)
	}
	want := PushedCredentials{AccessKeyId: exampleTempID, SecretAccessKey: exampleSecret, SessionToken: exampleToken}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

func TestPushedCredentialsJSONRoundTrip(t *testing.T) {
	in := PushedCredentials{exampleTempID, exampleSecret, exampleToken, timePtr(testNow.Add(time.Hour))}
	b, err := EncodePush(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"Version":1`)) {
		t.Errorf("encoded form %s lacks \"Version\":1", b)
	}
	out, err := DecodePush(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("DecodePush(EncodePush(c)): %v", err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestUnmarshalJSONIsStrict(t *testing.T) {
	var c PushedCredentials
	if err := json.Unmarshal([]byte(`{"accesskeyid":"x"}`), &c); err == nil {
		t.Error("json.Unmarshal accepted a member name in the wrong case")
	}
	if err := json.Unmarshal([]byte(`{"Version":1,"AccessKeyId":"`+exampleLongTermID+`","SecretAccessKey":"`+exampleSecret+`"}`), &c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(PushedCredentials{AccessKeyId: exampleLongTermID, SecretAccessKey: exampleSecret}, c); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
}

// TestMarshalJSONRedacts: encoding/json cannot leak pushed credentials, and
// what it writes is refused if someone pushes it by mistake.
func TestMarshalJSONRedacts(t *testing.T) {
	in := PushedCredentials{exampleTempID, exampleSecret, exampleToken, timePtr(testNow.Add(time.Hour))}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"AccessKeyId":"ASIA…MPLE","SecretAccessKey":"REDACTED(40 bytes)","SessionToken":"REDACTED(` + strconv.Itoa(len(exampleToken)) + ` bytes)","Expiration":"2026-03-04T06:06:07Z"}`
	if string(b) != want {
		t.Errorf("json.Marshal = %s\nwant          %s", b, want)
	}
	c, err := DecodePush(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := NewPush(func() time.Time { return testNow }).Set(c); err == nil {
		t.Error("Set accepted the redacted form")
	}
}

func TestPushSetValidation(t *testing.T) {
	valid := PushedCredentials{exampleTempID, exampleSecret, exampleToken, timePtr(testNow.Add(time.Hour))}
	with := func(fn func(c *PushedCredentials)) PushedCredentials {
		c := valid
		fn(&c)
		return c
	}
	tests := []struct {
		name      string
		in        PushedCredentials
		wantField string
		wantErr   error
	}{
		{name: "temporary", in: valid},
		{name: "long-term", in: PushedCredentials{AccessKeyId: exampleLongTermID, SecretAccessKey: exampleSecret}},
		{name: "temporary without expiration", in: with(func(c *PushedCredentials) { c.Expiration = nil })},
		{name: "token at limit", in: with(func(c *PushedCredentials) { c.SessionToken = strings.Repeat("T", MaxSessionToken) })},
		{name: "token past limit", in: with(func(c *PushedCredentials) { c.SessionToken = strings.Repeat("T", MaxSessionToken+1) }), wantField: "SessionToken", wantErr: ErrTooLarge},
		{name: "missing key id", in: with(func(c *PushedCredentials) { c.AccessKeyId = "" }), wantField: "AccessKeyId", wantErr: ErrMissing},
		{name: "short key id", in: with(func(c *PushedCredentials) { c.AccessKeyId = "ASIA1234" }), wantField: "AccessKeyId", wantErr: ErrImplausible},
		{name: "long key id", in: with(func(c *PushedCredentials) { c.AccessKeyId = "ASIA" + strings.Repeat("A", maxAccessKeyID-3) }), wantField: "AccessKeyId", wantErr: ErrImplausible},
		{name: "key id at max length", in: with(func(c *PushedCredentials) { c.AccessKeyId = "ASIA" + strings.Repeat("A", maxAccessKeyID-4) })},
		{name: "key id with slash", in: with(func(c *PushedCredentials) { c.AccessKeyId = "ASIAIOSFODNN7/XAMPLE" }), wantField: "AccessKeyId", wantErr: ErrImplausible},
		{name: "key id of a role", in: with(func(c *PushedCredentials) { c.AccessKeyId = "AROAIOSFODNN7EXAMPLE" }), wantField: "AccessKeyId", wantErr: ErrImplausible},
		{name: "secret in key id field", in: with(func(c *PushedCredentials) { c.AccessKeyId = exampleSecret }), wantField: "AccessKeyId", wantErr: ErrImplausible},
		{name: "missing secret", in: with(func(c *PushedCredentials) { c.SecretAccessKey = "" }), wantField: "SecretAccessKey", wantErr: ErrMissing},
		{name: "short secret", in: with(func(c *PushedCredentials) { c.SecretAccessKey = "short" }), wantField: "SecretAccessKey", wantErr: ErrImplausible},
		{name: "secret with newline", in: with(func(c *PushedCredentials) { c.SecretAccessKey = exampleSecret + "\n" }), wantField: "SecretAccessKey", wantErr: ErrImplausible},
		{name: "temporary without token", in: with(func(c *PushedCredentials) { c.SessionToken = "" }), wantField: "SessionToken", wantErr: ErrMissing},
		{name: "long-term with token", in: with(func(c *PushedCredentials) { c.AccessKeyId = exampleLongTermID }), wantField: "SessionToken", wantErr: ErrImplausible},
		{name: "token with space", in: with(func(c *PushedCredentials) { c.SessionToken = "a b" }), wantField: "SessionToken", wantErr: ErrImplausible},
		{name: "expired", in: with(func(c *PushedCredentials) { c.Expiration = timePtr(testNow.Add(-time.Minute)) }), wantField: "Expiration", wantErr: ErrExpired},
		{name: "expiring within margin", in: with(func(c *PushedCredentials) { c.Expiration = timePtr(testNow.Add(ExpiryMargin - time.Second)) }), wantField: "Expiration", wantErr: ErrExpired},
		{name: "expiring just past margin", in: with(func(c *PushedCredentials) { c.Expiration = timePtr(testNow.Add(ExpiryMargin + time.Second)) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPush(func() time.Time { return testNow })
			err := p.Set(tt.in)
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				if !p.Status().Ready {
					t.Errorf("Status after a valid push = %+v, want ready", p.Status())
				}
				return
			}
			checkValidationError(t, err, tt.wantField, tt.wantErr, "")
			for _, s := range []string{tt.in.SecretAccessKey, tt.in.SessionToken} {
				if len(s) >= 4 && strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains a secret", err)
				}
			}
			if st := p.Status(); st.Ready {
				t.Errorf("Status after a rejected first push = %+v, want not ready", st)
			}
		})
	}
}

func TestPushRetrieve(t *testing.T) {
	now := testNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	ctx := context.Background()
	p := NewPush(clock)

	_, err := p.Retrieve(ctx)
	if !errors.Is(err, ErrNotReady) || err.Error() != "credentials: no credentials pushed yet: run kmsproxyctl credentials push" {
		t.Errorf("Retrieve before a push: %v", err)
	}
	if st := p.Status(); st.Ready || st.Mode != ModePush || !strings.Contains(st.LastError, "no credentials pushed yet") {
		t.Errorf("Status before a push = %+v", st)
	}

	exp := testNow.Add(time.Hour)
	if err := p.Set(PushedCredentials{exampleTempID, exampleSecret, exampleToken, &exp}); err != nil {
		t.Fatal(err)
	}
	got, err := p.Retrieve(ctx)
	if err != nil {
		t.Fatalf("Retrieve: %v", err)
	}
	want := aws.Credentials{AccessKeyID: exampleTempID, SecretAccessKey: exampleSecret, SessionToken: exampleToken, Source: "kmsproxy-push", CanExpire: true, Expires: exp}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Retrieve mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Status{Mode: ModePush, Ready: true, Expires: exp, Updated: testNow}, p.Status()); diff != "" {
		t.Errorf("Status mismatch (-want +got):\n%s", diff)
	}

	// A bad push is refused and leaves the good credentials in use.
	if err := p.Set(PushedCredentials{AccessKeyId: exampleTempID}); err == nil {
		t.Fatal("Set accepted credentials without a secret")
	}
	if _, err := p.Retrieve(ctx); err != nil {
		t.Errorf("Retrieve after a refused push: %v", err)
	}
	if st := p.Status(); !st.Ready || !strings.Contains(st.LastError, "last push rejected: credentials: SecretAccessKey: required") {
		t.Errorf("Status after a refused push = %+v", st)
	}

	advance(time.Hour - ExpiryMargin)
	_, err = p.Retrieve(ctx)
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "credentials: credentials expire at 2026-03-04T06:06:07Z, within the 30s safety margin: push fresh ones") {
		t.Errorf("Retrieve inside the margin: %v", err)
	}
	advance(time.Hour)
	_, err = p.Retrieve(ctx)
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "credentials: credentials expired at 2026-03-04T06:06:07Z: push fresh ones") {
		t.Errorf("Retrieve after expiry: %v", err)
	}
	if st := p.Status(); st.Ready || !strings.Contains(st.LastError, "expired at") || !st.Expires.Equal(exp) {
		t.Errorf("Status after expiry = %+v", st)
	}

	// A fresh push makes it ready again.
	exp2 := now.Add(time.Hour)
	if err := p.Set(PushedCredentials{exampleTempID, exampleSecret, exampleToken, &exp2}); err != nil {
		t.Fatal(err)
	}
	if st := p.Status(); !st.Ready || st.LastError != "" || !st.Expires.Equal(exp2) {
		t.Errorf("Status after a fresh push = %+v", st)
	}
}

func TestPushConcurrent(t *testing.T) {
	p := NewPush(nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exp := time.Now().Add(time.Hour)
			for range 200 {
				if i%2 == 0 {
					if err := p.Set(PushedCredentials{exampleTempID, exampleSecret, exampleToken, &exp}); err != nil {
						t.Error(err)
						return
					}
				} else {
					p.Retrieve(ctx)
					p.Status()
				}
			}
		}()
	}
	wg.Wait()
	if _, err := p.Retrieve(ctx); err != nil {
		t.Errorf("Retrieve after concurrent pushes: %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"imds", "push", "env"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("file"); err == nil || !strings.Contains(err.Error(), "want imds, push or env") {
		t.Errorf("ParseMode(file) error = %v", err)
	}
}
