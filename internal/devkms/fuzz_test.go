package devkms

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/yamlfile"
)

// Every parser of untrusted input has a fuzz target: it must never panic and
// must fail with the error type its callers rely on. Seeds are valid inputs
// and near misses.

func requireSeeds(f *testing.F, seeds []string) {
	f.Helper()
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

func FuzzParseAuthorization(f *testing.F) {
	requireSeeds(f, []string{
		"AWS4-HMAC-SHA256 Credential=AKIAALICE00000000001/20240101/us-east-1/kms/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=" + strings.Repeat("ab", 32),
		"AWS4-HMAC-SHA256 Credential=x",
		"AWS4-HMAC-SHA256 Credential=a/b/c/d/e,SignedHeaders=host,Signature=00",
		"Basic dXNlcjpwYXNz",
		"",
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAuthorization(string(b))
		if err != nil {
			var ke *kmsapi.Error
			if !errors.As(err, &ke) || ke.Type != incompleteSignature {
				t.Fatalf("error %v is not an IncompleteSignature *kmsapi.Error", err)
			}
			return
		}
		if a.signature == "" || len(a.signedHeaders) == 0 {
			t.Fatalf("accepted a header without a signature or signed headers: %+v", a)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	s := newStore("us-east-1", "111122223333", "")
	k := testKey(f, "11111111-2222-4333-8444-555555555555")
	k.policyDoc = defaultPolicy("aws", "111122223333")
	pol, err := parsePolicy(k.policyDoc)
	if err != nil {
		f.Fatal(err)
	}
	k.policy = pol
	sn := &snapshot{keys: map[string]*key{k.id: k}, order: []string{k.id},
		aliases: map[string]*alias{"alias/a": {name: "alias/a", target: k.id}}}
	valid, err := json.Marshal(s.encodeState(sn))
	if err != nil {
		f.Fatal(err)
	}
	requireSeeds(f, []string{string(valid), `{"version":1,"region":"us-east-1","account_id":"111122223333","keys":[],"aliases":[]}`, `{`, `[]`, ``})
	f.Fuzz(func(t *testing.T, b []byte) {
		sn, err := s.decodeState(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, id := range sn.order {
			if sn.keys[id] == nil || sn.keys[id].policy == nil {
				t.Fatalf("decoded key %s without material or policy", id)
			}
		}
		for _, a := range sn.aliases {
			if sn.keys[a.target] == nil {
				t.Fatalf("alias %s points nowhere", a.name)
			}
		}
	})
}

func FuzzParseCredentials(f *testing.F) {
	requireSeeds(f, []string{
		"AKIAALICE00000000001:\n  secret_access_key: x\n  principal: arn:aws:iam::111122223333:root\n",
		`{"AKIAALICE00000000001":{"secret_access_key":"x","session_token":"t","principal":"arn:aws:sts::111122223333:assumed-role/r/s"}}`,
		"a: b\n", "- 1\n", "",
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		creds, err := ParseCredentials("creds.yaml", b)
		if err != nil {
			return
		}
		for _, c := range creds {
			if err := c.validate(); err != nil {
				t.Fatalf("accepted an invalid credential: %v", err)
			}
		}
	})
}

func FuzzParseSeed(f *testing.F) {
	requireSeeds(f, []string{
		"keys:\n  - id: 2b9e6c1a-1c6e-4c0b-9d3b-7f2f9c2f6a11\n    aliases: [alias/app]\naliases:\n  - name: alias/b\n    target_key_id: 2b9e6c1a-1c6e-4c0b-9d3b-7f2f9c2f6a11\n",
		"keys: 3\n", "{", "",
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseSeed("seed.yaml", b); err != nil {
			var ye *yamlfile.Error
			if !errors.As(err, &ye) {
				t.Fatalf("error %T %v is not a *yamlfile.Error", err, err)
			}
		}
	})
}

func FuzzParseIAMPolicies(f *testing.F) {
	requireSeeds(f, []string{
		"arn:aws:iam::111122223333:role/admin:\n  - name: a\n    policy: |\n      {\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"kms:*\",\"Resource\":\"*\"}]}\n",
		"arn:aws:iam::111122223333:user/bob: []\n", "arn:aws:iam::111122223333:root: []\n", "- a\n", "",
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseIAMPolicies("iam.yaml", b)
		if err != nil {
			var ye *yamlfile.Error
			if !errors.As(err, &ye) {
				t.Fatalf("error %T %v is not a *yamlfile.Error", err, err)
			}
			return
		}
		for principal := range m {
			if checkIAMPrincipal(principal) != nil {
				t.Fatalf("accepted principal %q", principal)
			}
		}
		// Whatever parses either builds or is refused with an error.
		_, _ = newIdentityPolicies(m, true)
	})
}

func FuzzCiphertextBlob(f *testing.F) {
	k := testKey(f, "11111111-2222-4333-8444-555555555555")
	blob, err := sealBlob(k, []byte("secret"), map[string]string{"a": "b"})
	if err != nil {
		f.Fatal(err)
	}
	requireSeeds(f, []string{string(blob), blobMagic, "dkms\x0111111111-2222-4333-8444-555555555555", ""})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := blobKeyID(b)
		if err != nil {
			if err != errBadBlob {
				t.Fatalf("blobKeyID error %v is not errBadBlob", err)
			}
			return
		}
		if !keyIDPattern.MatchString(id) {
			t.Fatalf("blobKeyID returned %q", id)
		}
		// Only the blob sealed with k opens; anything else is a forgery.
		if _, err := openBlob(k, b, map[string]string{"a": "b"}); err == nil && !bytes.Equal(b, blob) {
			t.Fatalf("opened a blob devkms did not seal")
		}
	})
}

func FuzzParseKeyRef(f *testing.F) {
	s := newStore("us-east-1", "111122223333", "")
	requireSeeds(f, []string{"11111111-2222-4333-8444-555555555555", "alias/app", "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-4333-8444-555555555555",
		"arn:aws:kms:us-east-1:111122223333:alias/app", "arn:aws:s3:::b", "x"})
	f.Fuzz(func(t *testing.T, b []byte) {
		ref, err := s.parseRef(string(b))
		if err != nil {
			var ke *kmsapi.Error
			if !errors.As(err, &ke) || ke.Type != kmsapi.NotFound {
				t.Fatalf("error %v is not a NotFoundException", err)
			}
			return
		}
		if ref.id == "" {
			t.Fatalf("parsed %q to an empty ID", b)
		}
	})
}

func FuzzFaultsJSON(f *testing.F) {
	requireSeeds(f, []string{`{"latency":"50ms","throttle_rate":0.1,"error_rate":0.02}`, `{}`, `{"latency":"-1s"}`, `null`})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fl Faults
		if err := json.Unmarshal(b, &fl); err != nil {
			return
		}
		if err := fl.Validate(); err == nil && fl.clamped() != fl {
			t.Fatalf("valid faults %+v change when clamped", fl)
		}
	})
}

func TestHandlerRecoversPanics(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	operations["DevkmsTestPanic"] = func(*Server, *call) (any, error) { panic("boom") }
	defer delete(operations, "DevkmsTestPanic")
	for _, op := range []string{"DevkmsTestPanic", "GenerateRandom"} {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"NumberOfBytes":4}`))
		req.Header.Set(kmsapi.TargetHeader, kmsapi.TargetPrefix+op)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		want := 200
		if op == "DevkmsTestPanic" {
			want = 500
		}
		if rec.Code != want {
			t.Fatalf("%s: %d %s, want %d", op, rec.Code, rec.Body, want)
		}
	}
}

func TestControlEndpoints(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path   string
		status int
		body   string
	}{
		{HealthzPath, 200, `"status":"ok"`},
		{"/devkms/nope", 404, "unknown devkms control endpoint"},
	} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.body) {
			t.Errorf("GET %s: %d %s", tt.path, rec.Code, rec.Body)
		}
	}
	// GET / is not a KMS request.
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /: %d", rec.Code)
	}
}
