package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// PushedCredentials is the body of PUT /v1/credentials: the JSON that
// `aws configure export-credentials --format process` prints and that the
// SDKs' credential_process feature reads:
//
//	{"Version": 1, "AccessKeyId": "ASIA...", "SecretAccessKey": "...",
//	 "SessionToken": "...", "Expiration": "2026-01-02T15:04:05+00:00"}
//
// The AWS CLI user guide ("Sourcing credentials with an external process")
// and the AWS CLI's exportcreds.py define these member names; SessionToken
// and Expiration are omitted for long-term keys, and Expiration is an
// ISO 8601 / RFC 3339 timestamp. (The IMDS role-credential document uses the
// same names except that it calls the session token "Token".)
// https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-sourcing-external.html
//
// fmt, slog and encoding/json all print it redacted; EncodePush writes the
// real body.
type PushedCredentials struct {
	AccessKeyId     string
	SecretAccessKey string
	SessionToken    string
	Expiration      *time.Time
}

func (c PushedCredentials) secret() secret {
	s := secret{accessKeyID: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken}
	if c.Expiration != nil {
		s.expires = *c.Expiration
	}
	return s
}

// Format prints the credentials redacted, for every verb.
func (c PushedCredentials) Format(f fmt.State, _ rune) {
	io.WriteString(f, "PushedCredentials"+c.secret().redacted())
}

// String returns the credentials redacted.
func (c PushedCredentials) String() string { return "PushedCredentials" + c.secret().redacted() }

// GoString returns the credentials redacted.
func (c PushedCredentials) GoString() string {
	return "credentials.PushedCredentials" + c.secret().redacted()
}

// LogValue makes slog print the credentials redacted.
func (c PushedCredentials) LogValue() slog.Value { return slog.StringValue(c.secret().redacted()) }

// MarshalJSON writes the credentials redacted, so that encoding/json
// anywhere (a log line, a config dump) cannot leak them. Use EncodePush to
// produce the body of a credentials push.
func (c PushedCredentials) MarshalJSON() ([]byte, error) {
	s := c.secret()
	w := struct {
		AccessKeyId     string
		SecretAccessKey string
		SessionToken    string     `json:",omitempty"`
		Expiration      *time.Time `json:",omitempty"`
	}{maskKeyID(s.accessKeyID), redactedLen(s.secretAccessKey), "", c.Expiration}
	if s.sessionToken != "" {
		w.SessionToken = redactedLen(s.sessionToken)
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes as strictly as DecodePush.
func (c *PushedCredentials) UnmarshalJSON(b []byte) error {
	d, err := DecodePush(bytes.NewReader(b))
	if err != nil {
		return err
	}
	*c = d
	return nil
}

// EncodePush returns the body of a credentials push in the credential_process
// form, "Version": 1 included: the inverse of DecodePush, with the secrets.
func EncodePush(c PushedCredentials) ([]byte, error) {
	w := struct {
		Version         int        `json:"Version"`
		AccessKeyId     string     `json:"AccessKeyId"`
		SecretAccessKey string     `json:"SecretAccessKey"`
		SessionToken    string     `json:"SessionToken,omitempty"`
		Expiration      *time.Time `json:"Expiration,omitempty"`
	}{processVersion, c.AccessKeyId, c.SecretAccessKey, c.SessionToken, c.Expiration}
	return json.Marshal(w)
}

// MaxPushBody bounds the JSON body of a credentials push: a session token at
// its limit (MaxSessionToken) plus 8 KiB for the access key ID (at most 128
// bytes), the secret, the timestamp, member names and the indentation the
// AWS CLI prints.
const MaxPushBody = MaxSessionToken + 8<<10

// processVersion is the only credential_process format version: "The
// Version key must be set to 1" (AWS CLI user guide, as above).
const processVersion = 1

// DecodePush reads a credentials push strictly: one JSON object of at most
// MaxPushBody bytes whose members are exactly Version (optional, must be 1),
// AccessKeyId, SecretAccessKey, SessionToken (optional), Expiration (optional,
// RFC 3339 with a time zone). Unknown or repeated members, values of the
// wrong type and trailing data are errors. Values are not validated here:
// Push.Set does that. Errors are *ValidationError and never echo the input.
func DecodePush(r io.Reader) (PushedCredentials, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxPushBody+1))
	if err != nil {
		return PushedCredentials{}, &ValidationError{"body", fmt.Sprintf("failed to read: %v", err), ErrMalformed}
	}
	if len(body) > MaxPushBody {
		return PushedCredentials{}, &ValidationError{"body", fmt.Sprintf("exceeds the %d-byte limit", MaxPushBody), ErrTooLarge}
	}
	malformed := func(format string, args ...any) (PushedCredentials, error) {
		return PushedCredentials{}, &ValidationError{"body", fmt.Sprintf(format, args...), ErrMalformed}
	}

	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return malformed("want a JSON object at offset %d", dec.InputOffset())
	}
	var c PushedCredentials
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return malformed("malformed JSON near offset %d", dec.InputOffset())
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return malformed("malformed JSON near offset %d", dec.InputOffset())
		}
		if seen[name] {
			return malformed("member %s appears twice", quoteName(name))
		}
		seen[name] = true
		switch name {
		case "Version":
			if string(raw) != strconv.Itoa(processVersion) {
				return PushedCredentials{}, &ValidationError{"Version", "must be the number 1 (the credential_process format version)", ErrMalformed}
			}
		case "AccessKeyId":
			if c.AccessKeyId, err = jsonString(name, raw, false); err != nil {
				return PushedCredentials{}, err
			}
		case "SecretAccessKey":
			if c.SecretAccessKey, err = jsonString(name, raw, false); err != nil {
				return PushedCredentials{}, err
			}
		case "SessionToken":
			if c.SessionToken, err = jsonString(name, raw, true); err != nil {
				return PushedCredentials{}, err
			}
		case "Expiration":
			s, err := jsonString(name, raw, true)
			if err != nil {
				return PushedCredentials{}, err
			}
			if s != "" {
				t, err := time.Parse(time.RFC3339, s)
				if err != nil {
					return PushedCredentials{}, &ValidationError{"Expiration", "is not an RFC 3339 timestamp with a time zone (like 2026-01-02T15:04:05Z)", ErrMalformed}
				}
				c.Expiration = &t
			}
		case "Token":
			return malformed(`unknown member "Token": that is the IMDS document's name; send the session token as "SessionToken" (the credential_process format)`)
		default:
			return malformed("unknown member %s (want Version, AccessKeyId, SecretAccessKey, SessionToken, Expiration)", quoteName(name))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return malformed("malformed JSON near offset %d", dec.InputOffset())
	}
	if _, err := dec.Token(); err != io.EOF {
		return malformed("unexpected data after the JSON object at offset %d", dec.InputOffset())
	}
	return c, nil
}

// jsonString decodes a JSON string member; null counts as absent when
// optional.
func jsonString(name string, raw json.RawMessage, optional bool) (string, error) {
	if optional && string(raw) == "null" {
		return "", nil
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", &ValidationError{name, "must be a JSON string", ErrMalformed}
	}
	return s, nil
}

// quoteName quotes an untrusted member name for an error, cut to 64 bytes.
func quoteName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}

// Push holds credentials that the parent instance pushes into the enclave
// (kmsproxyd --credentials push). It is safe for concurrent use.
type Push struct {
	now func() time.Time

	mu       sync.RWMutex
	cur      *secret
	updated  time.Time
	rejected string // why the last push was refused, since the last accepted one
}

// NewPush returns an empty Push provider. now is the clock (time.Now when
// nil); tests pass a fake one.
func NewPush(now func() time.Time) *Push {
	if now == nil {
		now = time.Now
	}
	return &Push{now: now}
}

// Set validates c and, if it is acceptable, makes it the credentials in use.
// A rejected push leaves the previous credentials in place. Errors are
// *ValidationError wrapping ErrMissing, ErrImplausible, ErrTooLarge or
// ErrExpired.
func (p *Push) Set(c PushedCredentials) error {
	s := c.secret()
	now := p.now()
	err := validate(s, jsonFields, now)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.rejected = "last push rejected: " + err.Error()
		return err
	}
	p.cur, p.updated, p.rejected = &s, now, ""
	return nil
}

// pushSource names pushed credentials in aws.Credentials.Source.
const pushSource = "kmsproxy-push"

// Retrieve returns the pushed credentials, or an error saying that none were
// pushed yet or that they have expired.
func (p *Push) Retrieve(ctx context.Context) (aws.Credentials, error) {
	p.mu.RLock()
	cur := p.cur
	p.mu.RUnlock()
	if err := p.problem(cur, p.now()); err != nil {
		return aws.Credentials{Source: pushSource}, err
	}
	return cur.credentials(pushSource), nil
}

func (p *Push) problem(cur *secret, now time.Time) error {
	if cur == nil {
		return &statusError{"credentials: no credentials pushed yet: run kmsproxyctl credentials push", ErrNotReady}
	}
	if !cur.expires.IsZero() && expired(cur.expires, now) {
		return expiredError(cur.expires, now, "push fresh ones with kmsproxyctl credentials push")
	}
	return nil
}

// expiredError explains expired credentials and what to do.
func expiredError(exp, now time.Time, remedy string) error {
	if now.Before(exp) {
		return &statusError{fmt.Sprintf("credentials: credentials expire at %s, within the %s safety margin: %s", stamp(exp), ExpiryMargin, remedy), ErrExpired}
	}
	return &statusError{fmt.Sprintf("credentials: credentials expired at %s: %s", stamp(exp), remedy), ErrExpired}
}

// Status reports whether usable credentials have been pushed.
func (p *Push) Status() Status {
	p.mu.RLock()
	cur, updated, rejected := p.cur, p.updated, p.rejected
	p.mu.RUnlock()
	st := Status{Mode: ModePush, Updated: updated, LastError: rejected}
	if cur != nil {
		st.Expires = cur.expires
	}
	if err := p.problem(cur, p.now()); err != nil {
		st.LastError = err.Error()
		if rejected != "" {
			st.LastError += "; " + rejected
		}
		return st
	}
	st.Ready = true
	return st
}

// Format prints the provider without its secrets.
func (p *Push) Format(f fmt.State, _ rune) { io.WriteString(f, p.String()) }

// String describes the provider without its secrets.
func (p *Push) String() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.cur == nil {
		return "credentials.Push{none}"
	}
	return "credentials.Push" + p.cur.redacted()
}

// GoString describes the provider without its secrets.
func (p *Push) GoString() string { return p.String() }

// LogValue makes slog print the provider without its secrets.
func (p *Push) LogValue() slog.Value { return slog.StringValue(p.String()) }
