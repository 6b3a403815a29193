package credentials

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// secret is one set of credentials as this package holds them. Every way of
// printing it (fmt verbs including %#v and %x, slog) is redacted: only the
// access key ID's first and last four characters, which identify the key in
// CloudTrail and the IAM console, are shown.
type secret struct {
	accessKeyID     string
	secretAccessKey string
	sessionToken    string
	expires         time.Time // zero: does not expire
}

// credentials converts to the SDK's type. aws.Credentials prints its
// secrets, so callers must not format the result.
func (s secret) credentials(source string) aws.Credentials {
	return aws.Credentials{
		AccessKeyID:     s.accessKeyID,
		SecretAccessKey: s.secretAccessKey,
		SessionToken:    s.sessionToken,
		Source:          source,
		CanExpire:       !s.expires.IsZero(),
		Expires:         s.expires,
	}
}

func (s secret) redacted() string {
	var b strings.Builder
	b.WriteString("{AccessKeyId:")
	b.WriteString(maskKeyID(s.accessKeyID))
	b.WriteString(" SecretAccessKey:")
	b.WriteString(redactedLen(s.secretAccessKey))
	b.WriteString(" SessionToken:")
	b.WriteString(redactedLen(s.sessionToken))
	if !s.expires.IsZero() {
		b.WriteString(" Expiration:")
		b.WriteString(stamp(s.expires))
	}
	b.WriteString("}")
	return b.String()
}

func (s secret) Format(f fmt.State, _ rune) { io.WriteString(f, "credentials"+s.redacted()) }
func (s secret) String() string             { return "credentials" + s.redacted() }
func (s secret) GoString() string           { return "credentials" + s.redacted() }
func (s secret) LogValue() slog.Value       { return slog.StringValue(s.redacted()) }

// maskKeyID shows an access key ID's first and last four characters.
func maskKeyID(id string) string {
	if len(id) < 12 {
		return redactedLen(id)
	}
	return id[:4] + "…" + id[len(id)-4:]
}

func redactedLen(s string) string {
	if s == "" {
		return "(none)"
	}
	return "REDACTED(" + strconv.Itoa(len(s)) + " bytes)"
}
