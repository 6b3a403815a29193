package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// TestDecryptCacheOutlivesExpiredCredentials (review, failing attack test):
// docs/security.md's decrypt cache table says expired credentials make the
// entries they obtained unusable. But the expiry kmsproxyd checks on a hit
// is that of the credentials in force at the time of the hit, which the
// parent states itself (PUT /v1/credentials takes Expiration as given, and
// accepts temporary credentials without one), and the entry's fingerprint
// covers only the access key id and the session token. The parent pushes
// the same credentials again, without Expiration or with a later one, and
// the entries answer past the real expiry, until max_age, although KMS
// would refuse the credentials (ExpiredTokenException) by then.
func TestDecryptCacheOutlivesExpiredCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		repush func(expires time.Time) credentials.PushedCredentials
	}{
		{"pushed again without Expiration", func(time.Time) credentials.PushedCredentials {
			c := enclavetest.RoleCredentials(time.Time{})
			c.Expiration = nil
			return c
		}},
		{"pushed again with a later Expiration", func(expires time.Time) credentials.PushedCredentials {
			return enclavetest.RoleCredentials(expires.Add(12 * time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := startCache(t, `listeners:
  parent:
    operations: [Decrypt]
    plaintext: true
    credentials_push: true
    control: [metrics]
    decrypt_cache: {max_age: 1h, max_uses: 1000, max_entries: 10}
`, enclavetest.Options{PushCredentials: true})
			expires := time.Now().Add(10 * time.Minute)
			pushOver(t, ce.Env, enclavetest.RoleCredentials(expires))
			secret := []byte("a secret obtained with credentials that expire")
			body := `{"CiphertextBlob":` + blobJSON(encryptAsOperator(t, ce.Env, secret, nil)) + `}`
			ce.decrypt(t, ce.ParentAddr, body, secret)
			ce.decrypt(t, ce.ParentAddr, body, secret)
			if got := ce.counts(t, ce.ParentAddr, "parent"); got.Hits != 1 || got.Upstream != 1 {
				t.Fatalf("before: %+v, want a hit", got)
			}

			// The parent states the same credentials again, with no or a
			// later expiry; then their real expiry passes (on the cache's
			// clock), well within max_age.
			pushOver(t, ce.Env, tc.repush(expires))
			ce.clock.Advance(time.Until(expires) + time.Minute)
			ce.decrypt(t, ce.ParentAddr, body, secret)
			if got := ce.counts(t, ce.ParentAddr, "parent"); got.Hits != 1 || got.Upstream != 2 {
				t.Errorf("after the credentials that obtained the entry expired: %+v, want no hit (the request at KMS)", got)
			}
		})
	}
}

// pushOver pushes c on the parent listener, as kmsproxyctl credentials push
// does.
func pushOver(t testing.TB, e *enclavetest.Env, c credentials.PushedCredentials) {
	t.Helper()
	b, err := credentials.EncodePush(c)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := e.HTTPClient(e.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://kmsproxy.enclave/v1/credentials", bytes.NewReader(b))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var st struct{ Ready bool }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &st) != nil || !st.Ready {
		t.Fatalf("push: %d %s", resp.StatusCode, out)
	}
}
