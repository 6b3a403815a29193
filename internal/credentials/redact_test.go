package credentials

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestNoSecretsInOutput formats every credential-bearing type of the
// package with every fmt verb that reveals struct contents, and through
// slog, and checks that no secret (nor its hex form) appears, while the
// redacted marker does.
func TestNoSecretsInOutput(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	pushed := PushedCredentials{exampleTempID, exampleSecret, exampleToken, &exp}

	push := NewPush(nil)
	if err := push.Set(pushed); err != nil {
		t.Fatal(err)
	}
	env, err := NewEnv(getenvFrom(map[string]string{"AWS_ACCESS_KEY_ID": exampleTempID, "AWS_SECRET_ACCESS_KEY": exampleSecret, "AWS_SESSION_TOKEN": exampleToken}))
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeIMDS(t, false)
	imdsP := newTestIMDS(t, f.addr, RefreshTiming{})
	if _, err := imdsP.Retrieve(context.Background()); err != nil {
		t.Fatal(err)
	}

	secrets := []string{exampleSecret, exampleToken, fakeSecret(1), fakeSessionToken(1)}
	values := []struct {
		name string
		v    any
	}{
		{"PushedCredentials", pushed},
		{"*PushedCredentials", &pushed},
		{"PushedCredentials in a struct", struct{ C PushedCredentials }{pushed}},
		{"[]PushedCredentials", []PushedCredentials{pushed}},
		{"*Push", push},
		{"*Env", env},
		{"*IMDS", imdsP},
		{"secret", pushed.secret()},
		{"Status", push.Status()},
	}
	verbs := []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"}
	for _, val := range values {
		t.Run(val.name, func(t *testing.T) {
			var outputs []string
			for _, verb := range verbs {
				outputs = append(outputs, verb+" → "+fmt.Sprintf(verb, val.v))
			}
			var text, js bytes.Buffer
			slog.New(slog.NewTextHandler(&text, nil)).Info("msg", "creds", val.v)
			slog.New(slog.NewJSONHandler(&js, nil)).Info("msg", "creds", val.v)
			outputs = append(outputs, "slog text → "+text.String(), "slog json → "+js.String())
			for _, out := range outputs {
				for _, s := range secrets {
					if strings.Contains(out, s) || strings.Contains(strings.ToLower(out), hex.EncodeToString([]byte(s))) {
						t.Errorf("secret %.8s… in %s", s, out)
					}
				}
			}
			if val.name != "Status" && !strings.Contains(outputs[0], "REDACTED") {
				t.Errorf("%%v output %q lacks the REDACTED marker", outputs[0])
			}
		})
	}
}

func TestRedactedShape(t *testing.T) {
	exp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := fmt.Sprint(PushedCredentials{exampleTempID, exampleSecret, exampleToken, &exp})
	want := "PushedCredentials{AccessKeyId:ASIA…MPLE SecretAccessKey:REDACTED(40 bytes) SessionToken:REDACTED(" + fmt.Sprint(len(exampleToken)) + " bytes) Expiration:2026-01-02T03:04:05Z}"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := fmt.Sprint(NewPush(nil)); got != "credentials.Push{none}" {
		t.Errorf("empty Push prints %q", got)
	}
}
