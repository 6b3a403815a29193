//go:build cgo && openssl && (amd64 || arm64)

package cms

import (
	"runtime"
	"testing"
)

// BenchmarkOpenSSLContext decides how the OpenSSL backend gets its
// EVP_PKEY_CTX: from a pool of contexts made with the key (what it does), or
// a new one per decryption (EVP_PKEY_CTX_new_from_pkey, decrypt_init and
// the OAEP settings, which fetch the algorithms by name). Each iteration
// decrypts once each way, in alternating order, on one locked OS thread,
// timed with that thread's CPU clock; it reports the median CPU time of
// each and fresh/pooled, the median of the per-iteration ratios.
func BenchmarkOpenSSLContext(b *testing.B) {
	key := testKey(b, 2048)
	env, err := Parse(mustEncrypt(b, &key.PublicKey, nil))
	if err != nil {
		b.Fatal(err)
	}
	encryptedKey := []byte(env.EncryptedKey)
	pooled, err := loadOpenSSL(key, true)
	if err != nil {
		b.Fatal(err)
	}
	defer pooled.destroy()
	fresh, err := loadOpenSSL(key, false)
	if err != nil {
		b.Fatal(err)
	}
	defer fresh.destroy()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var tPooled, tFresh []int64
	var ratios []int64 // fresh/pooled in parts per thousand
	odd := false
	for b.Loop() {
		var p, f int64
		for i := range 2 {
			u := pooled
			if (i == 0) == odd {
				u = fresh
			}
			t0 := threadCPU(b)
			cek, err := u.decryptOAEP(encryptedKey)
			d := threadCPU(b) - t0
			if err != nil || len(cek) != contentKeySize {
				b.Fatal(err)
			}
			if u == pooled {
				p = d
			} else {
				f = d
			}
		}
		odd = !odd
		tPooled = append(tPooled, p)
		tFresh = append(tFresh, f)
		if p > 0 {
			ratios = append(ratios, 1000*f/p)
		}
	}
	b.ReportMetric(float64(medianInt(tPooled)), "pooled-cpu-ns/decrypt")
	b.ReportMetric(float64(medianInt(tFresh)), "fresh-cpu-ns/decrypt")
	b.ReportMetric(float64(medianInt(ratios))/1000, "fresh/pooled")
}
