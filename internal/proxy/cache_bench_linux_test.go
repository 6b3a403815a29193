package proxy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// threadCPU returns the CPU time the calling OS thread has used, in ns.
func threadCPU(tb testing.TB) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Fatalf("clock_gettime: %v", err)
	}
	return ts.Nano()
}

// discardWriter is an http.ResponseWriter that keeps nothing but the
// status and the size of the body.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// BenchmarkDecryptCache compares, in one loop, what kmsproxyd spends on a
// Decrypt answered from its cache with the floor of an uncached one, the
// envelope's RSA-2048 OAEP decryption (t_floor), and with a whole miss.
// Each iteration, on one locked OS thread timed with its own CPU clock:
//
//   - rsa: the bare RSA-2048 OAEP decryption of a content-encryption key
//     with cms.DefaultBackend (OpenSSL when built with CGO_ENABLED=1 -tags
//     openssl, as the enclave image is; crypto/rsa otherwise), t_floor;
//   - cms: the whole envelope decryption of a 32-byte data key, as a miss
//     does it (cms.DecryptWithKeys);
//   - hit: kmsproxyd's handler for the local listener (routing, policy,
//     JSON decoding, cache lookup, answer, metrics, the request's log line
//     at the default info level) serving a Decrypt from the cache, called
//     directly, so that neither the client nor the HTTP connection counts;
//   - miss: the same handler serving a Decrypt the parent listener's cache
//     (max_uses 1) has just dropped, which goes to devkms and opens the
//     envelope. Its work runs on other goroutines too (the upstream
//     worker, devkms in the same process), so it is timed on the wall
//     clock, miss-wall-ns, as is the hit for the comparison.
//
// It reports the medians of each and hit/t_floor (target ≤ 0.5),
// hit/cms, miss/hit (both wall clock) and the hit's allocations.
func BenchmarkDecryptCache(b *testing.B) {
	ce := startCache(b, cachePolicyText("{max_age: 1h, max_uses: 1, max_entries: 10}"), enclavetest.Options{LogLevel: slog.LevelInfo})
	secret := bytes.Repeat([]byte{0x5a}, 32)
	blob := encryptAsOperator(b, ce.Env, secret, map[string]string{"tenant": "acme"})
	body := []byte(`{"CiphertextBlob":` + blobJSON(blob) + `,"EncryptionContext":{"tenant":"acme"},"KeyId":"` + ce.KeyARN + `"}`)
	local, parent := ce.Server.Handler("local"), ce.Server.Handler("parent")
	request := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("X-Amz-Target", "TrentService.Decrypt")
		r.Header.Set("Content-Type", "application/x-amz-json-1.1")
		return r
	}
	serve := func(h http.Handler, r *http.Request) *discardWriter {
		w := &discardWriter{h: make(http.Header, 4)}
		h.ServeHTTP(w, r)
		if w.status != http.StatusOK {
			b.Fatalf("Decrypt answered %d", w.status)
		}
		return w
	}
	// Fill the local cache; check that a hit is what the miss answered.
	miss := httptest.NewRecorder()
	local.ServeHTTP(miss, request())
	hit := httptest.NewRecorder()
	local.ServeHTTP(hit, request())
	if miss.Code != http.StatusOK || !bytes.Equal(miss.Body.Bytes(), hit.Body.Bytes()) {
		b.Fatalf("miss %d %s; hit %d %s", miss.Code, miss.Body, hit.Code, hit.Body)
	}
	if got := ce.counts(b, ce.LocalAddr, "local"); got.Hits != 1 {
		b.Fatalf("warm-up: %+v, want one hit", got)
	}

	// The envelope of a miss, under a recipient key like kmsproxyd's.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	key, err := cms.NewKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	defer key.Destroy()
	env, err := cms.Encrypt(nil, &priv.PublicKey, secret)
	if err != nil {
		b.Fatal(err)
	}
	parsed, err := cms.Parse(env)
	if err != nil {
		b.Fatal(err)
	}
	encryptedKey := []byte(parsed.EncryptedKey)
	b.Logf("RSA backend: %s (%s)", key.Backend(), cms.BackendVersion(key.Backend()))

	reqs := make([]*http.Request, 201)
	for i := range reqs {
		reqs[i] = request()
	}
	allocs := testing.AllocsPerRun(200, func() { serve(local, reqs[0]); reqs = reqs[1:] })

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var rsaCPU, cmsCPU, hitCPU, hitWall, missWall []int64
	for b.Loop() {
		t0 := threadCPU(b)
		cek, err := key.DecryptOAEP(encryptedKey)
		t1 := threadCPU(b)
		if err != nil || len(cek) != 32 {
			b.Fatal(err)
		}
		pt, err := cms.DecryptWithKeys(env, key)
		t2 := threadCPU(b)
		if err != nil || !bytes.Equal(pt, secret) {
			b.Fatal(err)
		}
		r := request()
		t3, w3 := threadCPU(b), time.Now()
		serve(local, r)
		t4, w4 := threadCPU(b), time.Now()
		r = request()
		w5 := time.Now()
		serve(parent, r) // a miss: the entry the last iteration's hit used up is gone
		w6 := time.Now()
		serve(parent, request()) // a hit, which uses the entry up
		rsaCPU = append(rsaCPU, t1-t0)
		cmsCPU = append(cmsCPU, t2-t1)
		hitCPU = append(hitCPU, t4-t3)
		hitWall = append(hitWall, w4.Sub(w3).Nanoseconds())
		missWall = append(missWall, w6.Sub(w5).Nanoseconds())
	}
	b.StopTimer()
	got := ce.counts(b, ce.ParentAddr, "parent")
	if n := float64(b.N); got.Hits != n || got.Misses != n || got.Uses != n {
		b.Fatalf("parent listener: %+v, want %d misses, hits and uses evictions", got, b.N)
	}
	rsaNs, cmsNs, hitNs := median64(rsaCPU), median64(cmsCPU), median64(hitCPU)
	b.ReportMetric(rsaNs, "rsa-cpu-ns")
	b.ReportMetric(cmsNs, "cms-cpu-ns")
	b.ReportMetric(hitNs, "hit-cpu-ns")
	b.ReportMetric(median64(hitWall), "hit-wall-ns")
	b.ReportMetric(median64(missWall), "miss-wall-ns")
	b.ReportMetric(hitNs/rsaNs, "hit/t_floor")
	b.ReportMetric(hitNs/cmsNs, "hit/cms")
	b.ReportMetric(median64(missWall)/median64(hitWall), "miss/hit")
	b.ReportMetric(allocs, "hit-allocs")
}

func median64(v []int64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return float64(s[len(s)/2])
}
