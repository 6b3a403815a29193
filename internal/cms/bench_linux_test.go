package cms

import (
	"crypto/rsa"
	"crypto/sha256"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// threadCPU returns the CPU time the calling OS thread has used, in ns.
func threadCPU(tb testing.TB) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		tb.Fatalf("clock_gettime: %v", err)
	}
	return ts.Nano()
}

// BenchmarkEnvelopeOverhead measures the ratio in one loop: each
// iteration runs the bare RSA-2048 OAEP decryption and the whole envelope
// decryption of a 4 KiB plaintext, back to back (in alternating order) on one
// locked OS thread, timing both with that thread's CPU clock so that other processes
// on a busy machine do not count. It reports
// overhead-% = 100 * (envelope CPU / RSA CPU - 1); the target is at most 3.
// (Garbage collection on other threads is not counted; allocation cost is.)
func BenchmarkEnvelopeOverhead(b *testing.B) {
	key := testKey(b, 2048)
	pre, err := NewKey(key)
	if err != nil {
		b.Fatal(err)
	}
	env := mustEncrypt(b, &key.PublicKey, make([]byte, MaxPlaintext))
	e, err := Parse(env)
	if err != nil {
		b.Fatal(err)
	}
	encryptedKey := []byte(e.EncryptedKey)
	for _, bc := range []struct {
		name    string
		decrypt func() ([]byte, error)
	}{
		{"4KiB", func() ([]byte, error) { return Decrypt(env, key) }},
		{"4KiB-precomputed", func() ([]byte, error) { return DecryptWithKeys(env, pre) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var rsaCPU, envCPU int64
			bare := func() {
				t0 := threadCPU(b)
				cek, err := rsa.DecryptOAEP(sha256.New(), nil, key, encryptedKey, nil)
				rsaCPU += threadCPU(b) - t0
				if err != nil || len(cek) != contentKeySize {
					b.Fatal(err)
				}
			}
			whole := func() {
				t0 := threadCPU(b)
				pt, err := bc.decrypt()
				envCPU += threadCPU(b) - t0
				if err != nil || len(pt) != MaxPlaintext {
					b.Fatal(err)
				}
			}
			// Alternate the order so that neither always runs on the caches
			// the other left behind.
			odd := false
			for b.Loop() {
				if odd {
					bare()
					whole()
				} else {
					whole()
					bare()
				}
				odd = !odd
			}
			b.ReportMetric(100*(float64(envCPU)/float64(rsaCPU)-1), "overhead-%")
			b.ReportMetric(float64(rsaCPU)/float64(b.N), "rsa-cpu-ns/op")
			b.ReportMetric(float64(envCPU)/float64(b.N), "envelope-cpu-ns/op")
		})
	}
}
