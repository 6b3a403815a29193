package proxy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/proxy"
)

// cachePolicyText has the decrypt_cache shape the documentation and the
// benchmark use on the local listener, the given bounds on the parent
// listener (none when parentCache is ""), and /metrics and /v1/info open
// on both.
func cachePolicyText(parentCache string) string {
	p := `listeners:
  local:
    operations: ["*"]
    plaintext: true
    control: [metrics, info]
    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}
  parent:
    operations: ["*"]
    plaintext: true
    control: [metrics, info]
`
	if parentCache != "" {
		p += "    decrypt_cache: " + parentCache + "\n"
	}
	return p
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// cacheEnv is an enclave flow whose listeners' decrypt caches read a fake
// clock.
type cacheEnv struct {
	*enclavetest.Env
	clock *fakeClock
}

func startCache(t testing.TB, text string, opts enclavetest.Options) *cacheEnv {
	t.Helper()
	opts.Policy = mustPolicy(t, text)
	e := enclavetest.Start(t, opts)
	ce := &cacheEnv{Env: e, clock: newFakeClock()}
	for _, l := range policy.Listeners {
		if proxy.CacheLen(e.Server, l) >= 0 {
			proxy.SetCacheClock(e.Server, l, ce.clock.Now)
		}
	}
	return ce
}

// answer is one raw KMS answer.
type answer struct {
	status int
	body   []byte
}

// post sends op with the JSON body exactly as given to addr.
func (ce *cacheEnv) post(t testing.TB, addr, op, body string) answer {
	t.Helper()
	hc, err := ce.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://kmsproxy.enclave/", strings.NewReader(body))
	req.Header.Set("X-Amz-Target", "TrentService."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, b}
}

// decrypt posts a Decrypt and fails the test unless it succeeds with want.
func (ce *cacheEnv) decrypt(t testing.TB, addr, body string, want []byte) answer {
	t.Helper()
	a := ce.post(t, addr, "Decrypt", body)
	var out struct{ Plaintext []byte }
	if err := json.Unmarshal(a.body, &out); a.status != http.StatusOK || err != nil || !bytes.Equal(out.Plaintext, want) {
		t.Fatalf("Decrypt %s: %d %s, want the plaintext %q", body[:min(len(body), 60)], a.status, a.body, want)
	}
	return a
}

// cacheCounts are a listener's cache series and its upstream calls.
type cacheCounts struct {
	Hits, Misses, Entries, Upstream              float64
	Age, Uses, Capacity, Credentials, RequestsOK float64
}

func (ce *cacheEnv) counts(t testing.TB, addr, listener string) cacheCounts {
	t.Helper()
	m := getMetrics(t, ce.Env, addr)
	l := `{listener="` + listener + `"}`
	ev := func(reason string) float64 {
		return metricValue(m, `kmsproxy_decrypt_cache_evictions_total{listener="`+listener+`",reason="`+reason+`"}`)
	}
	return cacheCounts{
		Hits:        metricValue(m, "kmsproxy_decrypt_cache_hits_total"+l),
		Misses:      metricValue(m, "kmsproxy_decrypt_cache_misses_total"+l),
		Entries:     metricValue(m, "kmsproxy_decrypt_cache_entries"+l),
		Upstream:    metricValue(m, `kmsproxy_step_duration_seconds_count{listener="`+listener+`",step="upstream"}`),
		Age:         ev("age"),
		Uses:        ev("uses"),
		Capacity:    ev("capacity"),
		Credentials: ev("credentials"),
		RequestsOK:  metricValue(m, `kmsproxy_requests_total{listener="`+listener+`",operation="Decrypt",outcome="ok"}`),
	}
}

func blobJSON(b []byte) string { return `"` + base64.StdEncoding.EncodeToString(b) + `"` }

// TestDecryptCacheHit: the second identical Decrypt is answered from the
// cache, byte for byte as the first, without KMS (which is made to fail
// every call once the entry is there), logged and counted as ok with a
// cache hit marker and no upstream or envelope step.
func TestDecryptCacheHit(t *testing.T) {
	ce := startCache(t, cachePolicyText(""), enclavetest.Options{})
	secret := []byte("the cached database password")
	blob := encryptAsOperator(t, ce.Env, secret, map[string]string{"tenant": "acme"})
	body := `{"CiphertextBlob":` + blobJSON(blob) + `,"EncryptionContext":{"tenant":"acme"},"KeyId":"` + ce.KeyARN + `"}`

	miss := ce.decrypt(t, ce.LocalAddr, body, secret)
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Misses != 1 || got.Hits != 0 || got.Entries != 1 || got.Upstream != 1 {
		t.Fatalf("after the first Decrypt: %+v, want 1 miss, 1 entry, 1 upstream call", got)
	}

	// From here on KMS fails every call: an answer can only come from the
	// cache.
	ce.DevKMS.SetFaults(devkms.Faults{ErrorRate: 1})
	for i := range 3 {
		hit := ce.decrypt(t, ce.LocalAddr, body, secret)
		if diff := cmp.Diff(string(miss.body), string(hit.body)); diff != "" {
			t.Fatalf("hit %d differs from the miss's answer (-miss +hit):\n%s", i, diff)
		}
	}
	var keys struct{ KeyId, KeyMaterialId, EncryptionAlgorithm string }
	if err := json.Unmarshal(miss.body, &keys); err != nil || keys.KeyId != ce.KeyARN || keys.KeyMaterialId == "" || keys.EncryptionAlgorithm != "SYMMETRIC_DEFAULT" {
		t.Errorf("the answer %s lacks KeyId, KeyMaterialId or EncryptionAlgorithm (%v)", miss.body, err)
	}
	// The SDK reads a hit as any answer.
	out, err := ce.Client(t, ce.LocalAddr).Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: blob, EncryptionContext: map[string]string{"tenant": "acme"}, KeyId: aws.String(ce.KeyARN),
	})
	if err != nil || !bytes.Equal(out.Plaintext, secret) || aws.ToString(out.KeyId) != ce.KeyARN {
		t.Fatalf("SDK Decrypt from the cache: %v", err)
	}
	got := ce.counts(t, ce.LocalAddr, "local")
	if want := (cacheCounts{Hits: 4, Misses: 1, Entries: 1, Upstream: 1, RequestsOK: 5}); got != want {
		t.Errorf("counts (-want +got):\n%s", cmp.Diff(want, got))
	}

	// Log lines: outcome ok, the cache marker, the key, no steps on a hit.
	var lines []map[string]any
	for _, line := range strings.Split(ce.Logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "request" && m["operation"] == "Decrypt" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 5 {
		t.Fatalf("%d Decrypt request lines, want 5:\n%s", len(lines), ce.Logs.String())
	}
	for i, m := range lines {
		want := "hit"
		if i == 0 {
			want = "miss"
		}
		if m["cache"] != want || m["outcome"] != "ok" || m["key_id"] != ce.KeyARN {
			t.Errorf("line %d: cache %v outcome %v key %v, want %s ok %s", i, m["cache"], m["outcome"], m["key_id"], want, ce.KeyARN)
		}
		if _, steps := m["steps_ms"]; steps != (i == 0) {
			t.Errorf("line %d (%s) has steps %v", i, want, m["steps_ms"])
		}
	}
	ce.CheckLogsFree(t, secret)

	// Metrics name neither the key nor the ciphertext.
	m := getMetrics(t, ce.Env, ce.LocalAddr)
	for _, s := range []string{ce.KeyID, base64.StdEncoding.EncodeToString(blob)[:16], string(secret)} {
		if strings.Contains(m, s) {
			t.Errorf("/metrics contains %q", s)
		}
	}
	// /v1/info shows the cache.
	hc, _ := ce.HTTPClient(ce.LocalAddr)
	resp, err := hc.Get("http://kmsproxy.enclave/v1/info")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `"decrypt_cache":{"max_age":"5m0s","max_uses":1000,"max_entries":10000}`; !strings.Contains(string(info), want) {
		t.Errorf("/v1/info = %s, want it to contain %s", info, want)
	}
}

// TestDecryptCacheMisses: a request that differs from the cached one in
// anything KMS authorized, or that comes on another listener, or that the
// cache must not answer, goes to KMS. Each case starts from the same
// cached request and checks that the cache answered nothing and KMS was
// asked.
func TestDecryptCacheMisses(t *testing.T) {
	ce := startCache(t, cachePolicyText("{max_age: 5m, max_uses: 1000, max_entries: 10000}"), enclavetest.Options{})
	secret := []byte("a secret with a tenant")
	ec := map[string]string{"tenant": "acme", "app": "billing"}
	blob := encryptAsOperator(t, ce.Env, secret, ec)
	blob2 := encryptAsOperator(t, ce.Env, secret, ec) // the same plaintext, another ciphertext
	grant := func() string {
		out, err := ce.Operator(t).CreateGrant(ctx, &kms.CreateGrantInput{
			KeyId: &ce.KeyID, GranteePrincipal: aws.String(enclavetest.RoleARN), Operations: []types.GrantOperation{types.GrantOperationDecrypt},
		})
		if err != nil {
			t.Fatalf("CreateGrant: %v", err)
		}
		return aws.ToString(out.GrantToken)
	}
	g1, g2 := grant(), grant()
	b64 := blobJSON(blob)
	const ecJSON = `{"app":"billing","tenant":"acme"}`
	base := `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"]}`

	tests := []struct {
		name, addr, op, body string
		// ok: KMS answers with the plaintext (and the answer is then
		// cached); otherwise KMS refuses it and nothing is cached.
		ok bool
	}{
		{name: "another ciphertext of the same plaintext", body: `{"CiphertextBlob":` + blobJSON(blob2) + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"]}`, ok: true},
		{name: "KeyId present", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"KeyId":"` + ce.KeyID + `"}`, ok: true},
		{name: "KeyId as an ARN", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"KeyId":"` + ce.KeyARN + `"}`, ok: true},
		{name: "KeyId of another key", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"KeyId":"alias/none"}`},
		{name: "context missing a pair", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":{"tenant":"acme"},"GrantTokens":["` + g1 + `","` + g2 + `"]}`},
		{name: "context with another value", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":{"app":"billing","tenant":"evil"},"GrantTokens":["` + g1 + `","` + g2 + `"]}`},
		{name: "context with an extra pair", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":{"app":"billing","tenant":"acme","x":"y"},"GrantTokens":["` + g1 + `","` + g2 + `"]}`},
		{name: "no context", body: `{"CiphertextBlob":` + b64 + `,"GrantTokens":["` + g1 + `","` + g2 + `"]}`},
		{name: "EncryptionAlgorithm named", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"EncryptionAlgorithm":"SYMMETRIC_DEFAULT"}`, ok: true},
		{name: "another EncryptionAlgorithm", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"EncryptionAlgorithm":"RSAES_OAEP_SHA_256"}`},
		{name: "grant tokens in another order", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g2 + `","` + g1 + `"]}`, ok: true},
		{name: "one grant token fewer", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `"]}`, ok: true},
		{name: "no grant tokens", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `}`, ok: true},
		{name: "DryRun false", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"DryRun":false}`, ok: true},
		{name: "DryRun true", body: `{"CiphertextBlob":` + b64 + `,"EncryptionContext":` + ecJSON + `,"GrantTokens":["` + g1 + `","` + g2 + `"],"DryRun":true}`},
		{name: "the parent listener", addr: ce.ParentAddr, body: base, ok: true},
	}
	ce.decrypt(t, ce.LocalAddr, base, secret) // the entry every case starts from
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, listener := ce.LocalAddr, "local"
			if tt.addr != "" {
				addr, listener = tt.addr, "parent"
			}
			before := ce.counts(t, addr, listener)
			a := ce.post(t, addr, "Decrypt", tt.body)
			after := ce.counts(t, addr, listener)
			if after.Hits != before.Hits || after.Upstream != before.Upstream+1 {
				t.Errorf("hits %v → %v, upstream calls %v → %v: want no hit and one KMS call", before.Hits, after.Hits, before.Upstream, after.Upstream)
			}
			if tt.ok != (a.status == http.StatusOK) {
				t.Fatalf("answer %d %s, want success %v", a.status, a.body, tt.ok)
			}
			// A DryRun is not even a miss: the cache never answers it.
			wantEntries, wantMisses := before.Entries, before.Misses+1
			if tt.ok {
				wantEntries++
			}
			if strings.Contains(tt.body, `"DryRun":true`) {
				wantMisses = before.Misses
				if !strings.Contains(string(a.body), "DryRunOperationException") {
					t.Errorf("DryRun answer %s", a.body)
				}
			}
			if after.Entries != wantEntries || after.Misses != wantMisses {
				t.Errorf("entries %v → %v, misses %v → %v; want %v entries, %v misses", before.Entries, after.Entries, before.Misses, after.Misses, wantEntries, wantMisses)
			}
			// The same request again is now a hit, if it was answered.
			if tt.ok {
				ce.decrypt(t, addr, tt.body, secret)
				if got := ce.counts(t, addr, listener); got.Hits != after.Hits+1 {
					t.Errorf("the same request again: hits %v → %v, want a hit", after.Hits, got.Hits)
				}
			}
		})
	}
	// The first request is still a hit after all that.
	before := ce.counts(t, ce.LocalAddr, "local")
	ce.decrypt(t, ce.LocalAddr, base, secret)
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Hits != before.Hits+1 || got.Upstream != before.Upstream {
		t.Errorf("the cached request: %+v → %+v, want a hit", before, got)
	}
}

// TestDecryptCacheNeverAnswers: with the cache on, a request carrying its
// own Recipient, GenerateDataKey and the pass-through operations go to KMS
// every time; on a listener without decrypt_cache every Decrypt does.
func TestDecryptCacheNeverAnswers(t *testing.T) {
	ce := startCache(t, cachePolicyText(""), enclavetest.Options{})
	secret := []byte("nothing of this is cached")
	blob := encryptAsOperator(t, ce.Env, secret, nil)
	body := `{"CiphertextBlob":` + blobJSON(blob) + `}`

	t.Run("cache off on the listener", func(t *testing.T) {
		for range 3 {
			ce.decrypt(t, ce.ParentAddr, body, secret)
		}
		got := ce.counts(t, ce.ParentAddr, "parent")
		if got.Upstream != 3 || got.Hits != -1 || got.Entries != -1 {
			t.Errorf("parent listener without a cache: %+v, want 3 upstream calls and no cache series", got)
		}
	})
	t.Run("Recipient present", func(t *testing.T) {
		be := callerRecipient(t, ce.Env)
		before := ce.counts(t, ce.LocalAddr, "local")
		for range 2 {
			out, err := ce.Client(t, ce.LocalAddr).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, Recipient: be})
			if err != nil || out.Plaintext != nil || len(out.CiphertextForRecipient) == 0 {
				t.Fatalf("Decrypt with Recipient: %v", err)
			}
		}
		got := ce.counts(t, ce.LocalAddr, "local")
		if got.Upstream != before.Upstream+2 || got.Hits != before.Hits || got.Misses != before.Misses || got.Entries != before.Entries {
			t.Errorf("with Recipient: %+v → %+v, want 2 upstream calls and the cache untouched", before, got)
		}
	})
	t.Run("GenerateDataKey", func(t *testing.T) {
		c := ce.Client(t, ce.LocalAddr)
		in := &kms.GenerateDataKeyInput{KeyId: &ce.KeyID, KeySpec: types.DataKeySpecAes256}
		a, err := c.GenerateDataKey(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.GenerateDataKey(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(a.Plaintext, b.Plaintext) {
			t.Error("two GenerateDataKey calls gave the same data key")
		}
	})
	t.Run("pass-through operations", func(t *testing.T) {
		before := ce.counts(t, ce.LocalAddr, "local")
		for range 2 {
			if a := ce.post(t, ce.LocalAddr, "Encrypt", `{"KeyId":"`+ce.KeyID+`","Plaintext":"aGVsbG8="}`); a.status != http.StatusOK {
				t.Fatalf("Encrypt: %d %s", a.status, a.body)
			}
			if a := ce.post(t, ce.LocalAddr, "DescribeKey", `{"KeyId":"`+ce.KeyID+`"}`); a.status != http.StatusOK {
				t.Fatalf("DescribeKey: %d %s", a.status, a.body)
			}
		}
		got := ce.counts(t, ce.LocalAddr, "local")
		if got.Upstream != before.Upstream+4 || got.Hits != before.Hits || got.Misses != before.Misses {
			t.Errorf("pass-through: %+v → %+v, want 4 upstream calls and the cache untouched", before, got)
		}
	})
}

// TestDecryptCacheMaxAge: an entry answers until max_age has passed on
// the cache's clock, then the request goes to KMS again and the expired
// entry's buffer has been zeroed.
func TestDecryptCacheMaxAge(t *testing.T) {
	ce := startCache(t, cachePolicyText(""), enclavetest.Options{})
	secret := []byte("a secret with an age limit")
	body := `{"CiphertextBlob":` + blobJSON(encryptAsOperator(t, ce.Env, secret, nil)) + `}`
	ce.decrypt(t, ce.LocalAddr, body, secret)
	buf := proxy.CacheBuffers(ce.Server, "local")[0]

	ce.clock.Advance(5*time.Minute - time.Nanosecond)
	ce.decrypt(t, ce.LocalAddr, body, secret)
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Hits != 1 || got.Upstream != 1 {
		t.Fatalf("just before max_age: %+v, want a hit", got)
	}
	ce.clock.Advance(time.Nanosecond)
	ce.decrypt(t, ce.LocalAddr, body, secret)
	got := ce.counts(t, ce.LocalAddr, "local")
	if want := (cacheCounts{Hits: 1, Misses: 2, Entries: 1, Upstream: 2, Age: 1, Uses: 0, Capacity: 0, Credentials: 0, RequestsOK: 3}); got != want {
		t.Errorf("at max_age (-want +got):\n%s", cmp.Diff(want, got))
	}
	if !allZero(buf) {
		t.Error("the expired entry's buffer still holds data")
	}
}

// TestDecryptCacheMaxUses: an entry answers max_uses requests, then is
// dropped and the next request goes to KMS.
func TestDecryptCacheMaxUses(t *testing.T) {
	ce := startCache(t, cachePolicyText("{max_age: 1h, max_uses: 3, max_entries: 10}"), enclavetest.Options{})
	secret := []byte("a secret with a use limit")
	body := `{"CiphertextBlob":` + blobJSON(encryptAsOperator(t, ce.Env, secret, nil)) + `}`
	ce.decrypt(t, ce.ParentAddr, body, secret)
	buf := proxy.CacheBuffers(ce.Server, "parent")[0]
	for range 3 {
		ce.decrypt(t, ce.ParentAddr, body, secret)
	}
	got := ce.counts(t, ce.ParentAddr, "parent")
	if want := (cacheCounts{Hits: 3, Misses: 1, Entries: 0, Upstream: 1, Uses: 1, RequestsOK: 4}); got != want {
		t.Errorf("after max_uses hits (-want +got):\n%s", cmp.Diff(want, got))
	}
	if !allZero(buf) {
		t.Error("the used-up entry's buffer still holds data")
	}
	ce.decrypt(t, ce.ParentAddr, body, secret)
	if got := ce.counts(t, ce.ParentAddr, "parent"); got.Upstream != 2 || got.Entries != 1 {
		t.Errorf("after the entry was used up: %+v, want a second KMS call and a new entry", got)
	}
}

// TestDecryptCacheCapacity: at max_entries the entry KMS answered first
// makes room, even if it was used since (oldest first, not least recently
// used), and its buffer is zeroed.
func TestDecryptCacheCapacity(t *testing.T) {
	ce := startCache(t, cachePolicyText("{max_age: 1h, max_uses: 100, max_entries: 2}"), enclavetest.Options{})
	var bodies []string
	var secrets [][]byte
	for i := range 3 {
		s := fmt.Appendf(nil, "secret number %d", i)
		secrets = append(secrets, s)
		bodies = append(bodies, `{"CiphertextBlob":`+blobJSON(encryptAsOperator(t, ce.Env, s, nil))+`}`)
	}
	ce.decrypt(t, ce.ParentAddr, bodies[0], secrets[0])
	ce.clock.Advance(time.Second)
	ce.decrypt(t, ce.ParentAddr, bodies[1], secrets[1])
	ce.decrypt(t, ce.ParentAddr, bodies[0], secrets[0]) // a hit: used last, still the oldest
	first := proxy.CacheBuffers(ce.Server, "parent")[0]
	ce.clock.Advance(time.Second)
	ce.decrypt(t, ce.ParentAddr, bodies[2], secrets[2])
	got := ce.counts(t, ce.ParentAddr, "parent")
	if want := (cacheCounts{Hits: 1, Misses: 3, Entries: 2, Upstream: 3, Capacity: 1, RequestsOK: 4}); got != want {
		t.Errorf("after a third entry (-want +got):\n%s", cmp.Diff(want, got))
	}
	if !allZero(first) {
		t.Error("the evicted entry's buffer still holds data")
	}
	ce.decrypt(t, ce.ParentAddr, bodies[1], secrets[1])
	ce.decrypt(t, ce.ParentAddr, bodies[2], secrets[2])
	if got := ce.counts(t, ce.ParentAddr, "parent"); got.Hits != 3 || got.Upstream != 3 {
		t.Errorf("the two newer entries: %+v, want both hits", got)
	}
	ce.decrypt(t, ce.ParentAddr, bodies[0], secrets[0])
	if got := ce.counts(t, ce.ParentAddr, "parent"); got.Upstream != 4 || got.Capacity != 2 {
		t.Errorf("the evicted entry's request: %+v, want a KMS call and another capacity eviction", got)
	}
}

// TestDecryptCacheCloseZeroes: Server.Close zeroes every entry, and the
// cache answers nothing after it.
func TestDecryptCacheCloseZeroes(t *testing.T) {
	ce := startCache(t, cachePolicyText(""), enclavetest.Options{})
	secret := []byte("a secret to forget at shutdown")
	body := `{"CiphertextBlob":` + blobJSON(encryptAsOperator(t, ce.Env, secret, nil)) + `}`
	ce.decrypt(t, ce.LocalAddr, body, secret)
	bufs := proxy.CacheBuffers(ce.Server, "local")
	if len(bufs) != 1 || allZero(bufs[0]) {
		t.Fatalf("cache buffers before Close: %d", len(bufs))
	}
	ce.Server.Close()
	if !allZero(bufs[0]) || proxy.CacheLen(ce.Server, "local") != 0 {
		t.Error("Close left an answer in memory")
	}
	ce.decrypt(t, ce.LocalAddr, body, secret)
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Upstream != 2 || got.Entries != 0 {
		t.Errorf("after Close: %+v, want KMS asked and nothing stored", got)
	}
}

// callerRecipient is a Recipient of the caller's own: an RSA key in a
// document from the enclave's simulator.
func callerRecipient(t testing.TB, e *enclavetest.Env) *types.RecipientInfo {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := nsmsim.New(e.CA, nsmsim.Options{PCRs: e.PCRs})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		t.Fatal(err)
	}
	return &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return len(b) > 0
}

// Another session of the enclave role, which the parent may push instead.
const (
	otherRoleKey    = "ASIAENCLAVEROLE00002"
	otherRoleSecret = "enclave-role-secret-key-for-tests-only2"
	otherRoleToken  = "enclave-role-session-token-for-tests-only-2"
)

// TestDecryptCacheCredentials: an entry answers only while the
// credentials that obtained it are the ones kmsproxyd signs with and have
// not expired. New credentials pushed make every entry unusable (and it is
// dropped when next asked for); so do expired ones.
func TestDecryptCacheCredentials(t *testing.T) {
	ce := startCache(t, cachePolicyText(""), enclavetest.Options{
		PushCredentials: true,
		DevKMS: []devkmstest.Option{devkmstest.WithCredentials(devkms.Credential{
			AccessKeyID: otherRoleKey, SecretAccessKey: otherRoleSecret, SessionToken: otherRoleToken, Principal: enclavetest.SessionARN,
		})},
	})
	// They expire before the entries' max_age (5m) would end them.
	expires := time.Now().Add(3 * time.Minute)
	if err := ce.Push.Set(enclavetest.RoleCredentials(expires)); err != nil {
		t.Fatal(err)
	}
	secret := []byte("a secret obtained with the first credentials")
	body := `{"CiphertextBlob":` + blobJSON(encryptAsOperator(t, ce.Env, secret, nil)) + `}`
	ce.decrypt(t, ce.LocalAddr, body, secret)
	ce.decrypt(t, ce.LocalAddr, body, secret)
	buf := proxy.CacheBuffers(ce.Server, "local")[0]
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Hits != 1 {
		t.Fatalf("under the same credentials: %+v, want a hit", got)
	}

	// The parent pushes other credentials: the entry is not used again.
	if err := ce.Push.Set(credentials.PushedCredentials{
		AccessKeyId: otherRoleKey, SecretAccessKey: otherRoleSecret, SessionToken: otherRoleToken, Expiration: &expires,
	}); err != nil {
		t.Fatal(err)
	}
	ce.decrypt(t, ce.LocalAddr, body, secret)
	got := ce.counts(t, ce.LocalAddr, "local")
	if want := (cacheCounts{Hits: 1, Misses: 2, Entries: 1, Upstream: 2, Credentials: 1, RequestsOK: 3}); got != want {
		t.Errorf("after new credentials (-want +got):\n%s", cmp.Diff(want, got))
	}
	if !allZero(buf) {
		t.Error("the entry of the old credentials still holds data")
	}
	ce.decrypt(t, ce.LocalAddr, body, secret)
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Hits != 2 {
		t.Errorf("under the new credentials: %+v, want a hit on the entry they obtained", got)
	}

	// The same credentials pushed again (a refresh with the same key)
	// keep the entry.
	if err := ce.Push.Set(credentials.PushedCredentials{
		AccessKeyId: otherRoleKey, SecretAccessKey: otherRoleSecret, SessionToken: otherRoleToken, Expiration: &expires,
	}); err != nil {
		t.Fatal(err)
	}
	ce.decrypt(t, ce.LocalAddr, body, secret)
	if got := ce.counts(t, ce.LocalAddr, "local"); got.Hits != 3 {
		t.Errorf("after the same credentials pushed again: %+v, want a hit", got)
	}

	// On the cache's clock the credentials now expire (within
	// credentials.ExpiryMargin): no entry answers, none is stored.
	ce.clock.Advance(time.Until(expires) - credentials.ExpiryMargin + time.Second)
	ce.decrypt(t, ce.LocalAddr, body, secret)
	got = ce.counts(t, ce.LocalAddr, "local")
	if got.Hits != 3 || got.Credentials != 2 || got.Entries != 0 {
		t.Errorf("with expiring credentials: %+v, want no hit, a credentials eviction, no entry", got)
	}
}

// TestDecryptCacheSeesDenialAfterMaxAge: a key policy that stops letting
// the enclave decrypt takes effect for cached requests only once their
// entry reaches max_age; KMS's refusal then reaches the caller and is not
// cached.
func TestDecryptCacheSeesDenialAfterMaxAge(t *testing.T) {
	ce := startCache(t, cachePolicyText(""), enclavetest.Options{})
	secret := []byte("a secret whose key policy changes")
	body := `{"CiphertextBlob":` + blobJSON(encryptAsOperator(t, ce.Env, secret, nil)) + `}`
	ce.decrypt(t, ce.LocalAddr, body, secret)

	// The key's owner removes the enclave's Decrypt permission.
	var doc map[string]any
	if err := json.Unmarshal([]byte(ce.KeyPolicy()), &doc); err != nil {
		t.Fatal(err)
	}
	stmts := doc["Statement"].([]any)
	var kept []any
	for _, s := range stmts {
		if s.(map[string]any)["Sid"] != "EnclaveAttestedSecrets" {
			kept = append(kept, s)
		}
	}
	doc["Statement"] = kept
	newPolicy, _ := json.Marshal(doc)
	if _, err := ce.Operator(t).PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &ce.KeyID, Policy: aws.String(string(newPolicy))}); err != nil {
		t.Fatal(err)
	}

	// Within max_age the cache still answers: this is the documented lag.
	ce.clock.Advance(4 * time.Minute)
	ce.decrypt(t, ce.LocalAddr, body, secret)
	// At max_age the request goes to KMS, which refuses it, every time.
	ce.clock.Advance(time.Minute)
	for range 2 {
		a := ce.post(t, ce.LocalAddr, "Decrypt", body)
		if a.status != http.StatusBadRequest || !strings.Contains(string(a.body), "AccessDeniedException") {
			t.Fatalf("after max_age: %d %s, want KMS's AccessDeniedException", a.status, a.body)
		}
	}
	got := ce.counts(t, ce.LocalAddr, "local")
	if got.Hits != 1 || got.Upstream != 3 || got.Entries != 0 || got.Age != 1 {
		t.Errorf("%+v, want 1 hit, 3 KMS calls, no entry, 1 age eviction", got)
	}
}

// TestDecryptCacheStoresOnlyAllowedAnswers: an answer the policy refuses
// (a key outside kms.accounts) and a KMS error are not stored: the same
// request goes to KMS again and is refused again.
func TestDecryptCacheStoresOnlyAllowedAnswers(t *testing.T) {
	ce := startCache(t, `kms:
  accounts: ["999988887777"]
listeners:
  local:
    operations: ["*"]
    plaintext: true
    control: [metrics]
    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}
`, enclavetest.Options{})
	blob := encryptAsOperator(t, ce.Env, []byte("a secret of an account not pinned"), nil)
	for _, body := range []string{
		`{"CiphertextBlob":` + blobJSON(blob) + `}`,
		`{"CiphertextBlob":` + blobJSON(blob[:len(blob)-1]) + `}`,
	} {
		for range 2 {
			if a := ce.post(t, ce.LocalAddr, "Decrypt", body); a.status == http.StatusOK {
				t.Fatalf("Decrypt answered %s", a.body)
			}
		}
	}
	got := ce.counts(t, ce.LocalAddr, "local")
	if got.Upstream != 4 || got.Hits != 0 || got.Misses != 4 || got.Entries != 0 {
		t.Errorf("%+v, want every request at KMS and nothing stored", got)
	}
}

// TestDecryptCacheConcurrent: many callers at once on few ciphertexts,
// with a cache small enough to evict by capacity and uses all the time,
// each get their own plaintext (run with -race).
func TestDecryptCacheConcurrent(t *testing.T) {
	ce := startCache(t, cachePolicyText("{max_age: 1h, max_uses: 7, max_entries: 3}"), enclavetest.Options{})
	const keys, workers, rounds = 5, 16, 30
	var secrets [][]byte
	var bodies []string
	for i := range keys {
		s := fmt.Appendf(nil, "concurrent secret %d", i)
		secrets = append(secrets, s)
		bodies = append(bodies, `{"CiphertextBlob":`+blobJSON(encryptAsOperator(t, ce.Env, s, nil))+`}`)
	}
	hc, _ := ce.HTTPClient(ce.ParentAddr)
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				i := (w + r) % keys
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://kmsproxy.enclave/", strings.NewReader(bodies[i]))
				req.Header.Set("X-Amz-Target", "TrentService.Decrypt")
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				var out struct{ Plaintext []byte }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if err != nil || !bytes.Equal(out.Plaintext, secrets[i]) {
					errs <- fmt.Errorf("worker %d round %d: %q, want %q (%v)", w, r, out.Plaintext, secrets[i], err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := ce.counts(t, ce.ParentAddr, "parent")
	if got.Hits+got.Misses != workers*rounds || got.Hits == 0 || got.Entries > 3 || got.RequestsOK != workers*rounds {
		t.Errorf("%+v: want %d requests, some hits, at most 3 entries", got, workers*rounds)
	}
}

// TestDecryptCacheExpiresWithItsCredentials: an entry answers no request
// past the expiry of the credentials that obtained it, as they stated it
// then. The parent pushes the same credentials again, without Expiration or
// with a later one (PUT /v1/credentials takes Expiration as given): the
// entries still end at the real expiry, as KMS would refuse the credentials
// (ExpiredTokenException) then.
func TestDecryptCacheExpiresWithItsCredentials(t *testing.T) {
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
