package secretscan

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestScanFindsEveryForm(t *testing.T) {
	secret := []byte("\xfb\xff\x00 data key bytes \xfe\xbf!") // 22 bytes: base64 has padding
	tests := []struct {
		name     string
		line     string
		wantForm string
	}{
		{"raw", "plaintext=" + string(secret), "raw"},
		{"hex", "key=" + hex.EncodeToString(secret), "hex"},
		{"HEX", "key=" + strings.ToUpper(hex.EncodeToString(secret)), "HEX"},
		{"base64", `{"Plaintext":"` + base64.StdEncoding.EncodeToString(secret) + `"}`, "base64"},
		{"base64 unpadded", "k=" + base64.RawStdEncoding.EncodeToString(secret) + ".", "base64 unpadded"},
		{"base64url", "k=" + base64.URLEncoding.EncodeToString(secret), "base64url"},
		{"base64url unpadded", "k=" + base64.RawURLEncoding.EncodeToString(secret) + ".", "base64url unpadded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			s.AddSecret("data key", secret)
			log := s.Log("kmsproxyd")
			fmt.Fprintf(log, "time=now level=INFO msg=request %s\n", tt.line)
			got := s.Scan()
			if len(got) == 0 {
				t.Fatalf("the secret in %s form was not found", tt.wantForm)
			}
			forms := map[string]bool{}
			for _, f := range got {
				forms[f.Form] = true
				if f.Log != "kmsproxyd" || f.Secret != "data key" {
					t.Errorf("finding %+v names the wrong log or secret", f)
				}
				if strings.Contains(f.String(), string(secret)) {
					t.Errorf("the finding's text holds the secret: %s", f)
				}
			}
			if !forms[tt.wantForm] {
				t.Errorf("found forms %v, want %s among them", forms, tt.wantForm)
			}
		})
	}
}

func TestScanCleanLogs(t *testing.T) {
	s := New()
	s.AddSecret("secret key", []byte("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"))
	s.AddSecret("too short to search", []byte("abc"))
	l := slog.New(slog.NewJSONHandler(s.Log("proxy"), nil))
	l.Info("request", "operation", "Decrypt", "outcome", "ok", "key_id", "alias/app")
	if got := s.Scan(); len(got) != 0 {
		t.Errorf("Scan of a clean log = %v", got)
	}
	if secrets, logs, n := s.Counts(); secrets != 1 || logs != 1 || n == 0 {
		t.Errorf("Counts = %d secrets, %d logs, %d bytes; want 1, 1 (short values are not registered), and the log line", secrets, logs, n)
	}
}

func TestMarkersAndScanData(t *testing.T) {
	s := New()
	s.AddMarker("KMS member name", "KeyId")
	s.AddSecret("session token", []byte("IQoJb3JpZ2luX2VjEXAMPLETOKEN"))
	data := []byte("\x17\x03\x03\x00\x05KeyId and more")
	got := s.ScanData("recording", data)
	want := []Finding{{Log: "recording", Secret: "KMS member name", Form: "raw", Offset: 5}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ScanData (-want +got):\n%s", diff)
	}
	// A marker is searched raw only: its hex form is not a finding.
	if got := s.ScanData("recording", []byte(hex.EncodeToString([]byte("KeyId")))); len(got) != 0 {
		t.Errorf("the hex form of a marker was reported: %v", got)
	}
}

func TestFormsAreDistinct(t *testing.T) {
	// 12 bytes: padded and unpadded base64 are the same string.
	forms := Forms([]byte("twelve bytes"))
	seen := map[string]bool{}
	for _, f := range forms {
		if seen[string(f.Value)] {
			t.Errorf("form %s repeats a value", f.Name)
		}
		seen[string(f.Value)] = true
	}
	if len(forms) < 4 {
		t.Errorf("only %d forms", len(forms))
	}
}
