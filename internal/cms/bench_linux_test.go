package cms

import (
	"runtime"
	"slices"
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

// BenchmarkEnvelopeOverhead measures the envelope's cost over its RSA
// operation in one loop: each iteration runs the bare RSA-2048 OAEP
// decryption of DefaultBackend (Key.DecryptOAEP) and the whole envelope
// decryption of a 4 KiB plaintext, back to back (in alternating order) on one
// locked OS thread, timing both with that thread's CPU clock so that other processes
// on a busy machine do not count. It reports
// overhead-% = 100 * median(envelope CPU - RSA CPU) / median(RSA CPU) over
// the back-to-back pairs; the target is at most 3. The median of pairs is
// the estimator because the thread CPU clock of a shared virtual machine
// still moves by a few percent from one decryption to the next (the other
// vCPU's load, frequency changes, interrupts accounted to the thread): the
// ratio of the sums, also reported as overhead-sum-%, lands anywhere
// between -1 and +4 % for the same code from one run to the next. (Garbage
// collection on other threads is not counted; allocation cost is.) The
// median's own spread shrinks with the number of pairs: `make bench` runs
// this benchmark for 4 s (about 1300 pairs per case) instead of 1 s, where
// three runs of the same code spread over 0.9 to 2.8 %. The target is
// the 4KiB-precomputed case, the path kmsproxyd takes (DecryptWithKeys with
// a Key from NewKey); the 4KiB case (Decrypt with an *rsa.PrivateKey) also
// hands the key to the backend on every call, which with OpenSSL costs
// about as much as the decryption itself (EVP_PKEY_fromdata, a context).
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
			var rsaPairs, diffs []int64
			bare := func() int64 {
				t0 := threadCPU(b)
				cek, err := pre.DecryptOAEP(encryptedKey)
				d := threadCPU(b) - t0
				if err != nil || len(cek) != contentKeySize {
					b.Fatal(err)
				}
				return d
			}
			whole := func() int64 {
				t0 := threadCPU(b)
				pt, err := bc.decrypt()
				d := threadCPU(b) - t0
				if err != nil || len(pt) != MaxPlaintext {
					b.Fatal(err)
				}
				return d
			}
			// Alternate the order so that neither always runs on the caches
			// the other left behind.
			odd := false
			for b.Loop() {
				var r, e int64
				if odd {
					r = bare()
					e = whole()
				} else {
					e = whole()
					r = bare()
				}
				odd = !odd
				rsaCPU += r
				envCPU += e
				rsaPairs = append(rsaPairs, r)
				diffs = append(diffs, e-r)
			}
			b.ReportMetric(100*float64(medianInt(diffs))/float64(medianInt(rsaPairs)), "overhead-%")
			b.ReportMetric(100*(float64(envCPU)/float64(rsaCPU)-1), "overhead-sum-%")
			b.ReportMetric(float64(rsaCPU)/float64(b.N), "rsa-cpu-ns/op")
			b.ReportMetric(float64(envCPU)/float64(b.N), "envelope-cpu-ns/op")
		})
	}
}

func medianInt(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkBackends times the bare RSA-2048 OAEP decryption of a KMS
// content-encryption key with each linked backend in one run: every
// iteration decrypts once with each, in rotating order, on one locked OS
// thread, timed with that thread's CPU clock. It reports each backend's
// median CPU time per decryption (<backend>-cpu-ns/decrypt) and, with two
// backends, openssl/go (the median of the per-iteration ratios). Built
// without -tags openssl it times crypto/rsa alone.
func BenchmarkBackends(b *testing.B) {
	key := testKey(b, 2048)
	env, err := Parse(mustEncrypt(b, &key.PublicKey, nil))
	if err != nil {
		b.Fatal(err)
	}
	encryptedKey := []byte(env.EncryptedKey)
	bs := Backends()
	keys := make([]*Key, len(bs))
	for i, name := range bs {
		// Each backend gets its own copy: Destroy clears the Go key.
		if keys[i], err = NewKeyWithBackend(copyKey(key), name); err != nil {
			b.Fatal(err)
		}
		defer keys[i].Destroy()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	times := make([][]int64, len(bs))
	var ratios []float64
	round := 0
	for b.Loop() {
		var t [2]int64
		for j := range bs {
			i := (round + j) % len(bs)
			t0 := threadCPU(b)
			cek, err := keys[i].DecryptOAEP(encryptedKey)
			d := threadCPU(b) - t0
			if err != nil || len(cek) != contentKeySize {
				b.Fatalf("%s: %v", bs[i], err)
			}
			times[i] = append(times[i], d)
			if i < 2 {
				t[i] = d
			}
		}
		if len(bs) >= 2 && t[1] > 0 {
			ratios = append(ratios, float64(t[0])/float64(t[1]))
		}
		round++
	}
	for i, name := range bs {
		b.ReportMetric(float64(medianInt(times[i])), string(name)+"-cpu-ns/decrypt")
	}
	if len(ratios) > 0 {
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], string(bs[0])+"/"+string(bs[1]))
	}
}
