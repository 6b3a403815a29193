package credentials

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/go-cmp/cmp"
)

func getenvFrom(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestNewEnv(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	tests := []struct {
		name      string
		env       map[string]string
		want      aws.Credentials
		wantField string
		wantErr   error
	}{
		{
			name: "long-term",
			env:  map[string]string{"AWS_ACCESS_KEY_ID": exampleLongTermID, "AWS_SECRET_ACCESS_KEY": exampleSecret},
			want: aws.Credentials{AccessKeyID: exampleLongTermID, SecretAccessKey: exampleSecret, Source: "kmsproxy-env"},
		},
		{
			name: "temporary with expiration",
			env: map[string]string{"AWS_ACCESS_KEY_ID": exampleTempID, "AWS_SECRET_ACCESS_KEY": exampleSecret, "AWS_SESSION_TOKEN": exampleToken,
				"AWS_CREDENTIAL_EXPIRATION": future.Format(time.RFC3339)},
			want: aws.Credentials{AccessKeyID: exampleTempID, SecretAccessKey: exampleSecret, SessionToken: exampleToken, Source: "kmsproxy-env", CanExpire: true, Expires: future},
		},
		{
			name: "SDK alternate names",
			env:  map[string]string{"AWS_ACCESS_KEY": exampleLongTermID, "AWS_SECRET_KEY": exampleSecret},
			want: aws.Credentials{AccessKeyID: exampleLongTermID, SecretAccessKey: exampleSecret, Source: "kmsproxy-env"},
		},
		{
			name: "primary names win",
			env: map[string]string{"AWS_ACCESS_KEY_ID": exampleLongTermID, "AWS_ACCESS_KEY": "AKIAOTHEROTHEROTHER1",
				"AWS_SECRET_ACCESS_KEY": exampleSecret, "AWS_SECRET_KEY": "otherotherotherotherother"},
			want: aws.Credentials{AccessKeyID: exampleLongTermID, SecretAccessKey: exampleSecret, Source: "kmsproxy-env"},
		},
		{name: "empty environment", env: map[string]string{}, wantField: "AWS_ACCESS_KEY_ID", wantErr: ErrMissing},
		{name: "no secret", env: map[string]string{"AWS_ACCESS_KEY_ID": exampleLongTermID}, wantField: "AWS_SECRET_ACCESS_KEY", wantErr: ErrMissing},
		{name: "temporary without token", env: map[string]string{"AWS_ACCESS_KEY_ID": exampleTempID, "AWS_SECRET_ACCESS_KEY": exampleSecret}, wantField: "AWS_SESSION_TOKEN", wantErr: ErrMissing},
		{name: "bad key id", env: map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": exampleSecret}, wantField: "AWS_ACCESS_KEY_ID", wantErr: ErrImplausible},
		{
			name: "bad expiration",
			env: map[string]string{"AWS_ACCESS_KEY_ID": exampleTempID, "AWS_SECRET_ACCESS_KEY": exampleSecret, "AWS_SESSION_TOKEN": exampleToken,
				"AWS_CREDENTIAL_EXPIRATION": "tomorrow"},
			wantField: "AWS_CREDENTIAL_EXPIRATION", wantErr: ErrMalformed,
		},
		{
			name: "expired",
			env: map[string]string{"AWS_ACCESS_KEY_ID": exampleTempID, "AWS_SECRET_ACCESS_KEY": exampleSecret, "AWS_SESSION_TOKEN": exampleToken,
				"AWS_CREDENTIAL_EXPIRATION": "2020-01-01T00:00:00Z"},
			wantField: "AWS_CREDENTIAL_EXPIRATION", wantErr: ErrExpired,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEnv(getenvFrom(tt.env))
			if tt.wantField != "" {
				checkValidationError(t, err, tt.wantField, tt.wantErr, "")
				return
			}
			if err != nil {
				t.Fatalf("NewEnv: %v", err)
			}
			got, err := e.Retrieve(context.Background())
			if err != nil {
				t.Fatalf("Retrieve: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Retrieve mismatch (-want +got):\n%s", diff)
			}
			if st := e.Status(); !st.Ready || st.Mode != ModeEnv || !st.Expires.Equal(tt.want.Expires) || st.Updated.IsZero() {
				t.Errorf("Status = %+v", st)
			}
		})
	}
}

func TestEnvExpires(t *testing.T) {
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	e, err := NewEnv(getenvFrom(map[string]string{"AWS_ACCESS_KEY_ID": exampleTempID, "AWS_SECRET_ACCESS_KEY": exampleSecret,
		"AWS_SESSION_TOKEN": exampleToken, "AWS_CREDENTIAL_EXPIRATION": exp.Format(time.RFC3339)}))
	if err != nil {
		t.Fatal(err)
	}
	e.now = func() time.Time { return exp.Add(time.Second) }
	_, err = e.Retrieve(context.Background())
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "credentials: credentials expired at "+exp.Format(time.RFC3339)+": restart kmsproxyd") {
		t.Errorf("Retrieve after AWS_CREDENTIAL_EXPIRATION: %v", err)
	}
	if st := e.Status(); st.Ready || !strings.Contains(st.LastError, "expired at") {
		t.Errorf("Status after expiry = %+v", st)
	}
}
