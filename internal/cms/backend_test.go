package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"unsafe"
)

func TestBackendsListed(t *testing.T) {
	bs := Backends()
	if len(bs) == 0 || bs[0] != DefaultBackend() {
		t.Fatalf("Backends() = %v, DefaultBackend() = %q: want the default first", bs, DefaultBackend())
	}
	if !slices.Contains(bs, BackendGo) {
		t.Errorf("Backends() = %v: crypto/rsa is always linked", bs)
	}
	for _, b := range bs {
		if BackendVersion(b) == "" {
			t.Errorf("BackendVersion(%q) is empty", b)
		}
	}
	if v := BackendVersion("bogus"); v != "" {
		t.Errorf("BackendVersion(bogus) = %q, want empty", v)
	}
	if _, err := NewKeyWithBackend(testKey(t, 2048), "bogus"); err == nil {
		t.Error("NewKeyWithBackend accepted an unknown backend")
	}
	t.Logf("backends %v, default %s (%s)", bs, DefaultBackend(), BackendVersion(DefaultBackend()))
}

// keyWords is every word of secret memory a private key holds that a
// program can reach: D, the primes, the exported precomputed values and
// crypto/rsa's hidden precomputed copy, each up to its capacity.
type keyWords map[string][]byte

func secretWords(tb testing.TB, priv *rsa.PrivateKey) keyWords {
	tb.Helper()
	w := keyWords{}
	add := func(name string, x *big.Int) {
		if x == nil {
			tb.Fatalf("%s is nil", name)
		}
		b := x.Bits()
		w[name] = wordBytes(b[:cap(b)])
	}
	add("D", priv.D)
	add("P", priv.Primes[0])
	add("Q", priv.Primes[1])
	add("Dp", priv.Precomputed.Dp)
	add("Dq", priv.Precomputed.Dq)
	add("Qinv", priv.Precomputed.Qinv)
	hidden := 0
	forEachHiddenWord(&priv.Precomputed, func(b []byte) {
		w[fmt.Sprintf("crypto/rsa's precomputed copy, slice %d", hidden)] = b
		hidden++
	})
	// crypto/rsa's copy holds n, p, q (each with R² mod it), d, dP, dQ and
	// qInv: at least seven slices. Fewer means the walk missed them (a Go
	// release that changed crypto/rsa's internals): fail rather than pass.
	if hidden < 7 {
		tb.Fatalf("found %d integer slices in crypto/rsa's precomputed key, want at least 7", hidden)
	}
	return w
}

// wordBytes aliases w's memory (not a copy): the test inspects the words
// themselves after the wipe.
func wordBytes(w []big.Word) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), len(w)*int(unsafe.Sizeof(w[0])))
}

// TestDestroyClearsTheKey is the attack on a dropped key: after Destroy,
// nothing of the private key that a program can reach is left in memory,
// and the Key refuses to decrypt.
func TestDestroyClearsTheKey(t *testing.T) {
	for _, b := range Backends() {
		t.Run(string(b), func(t *testing.T) {
			priv, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			k, err := NewKeyWithBackend(priv, b)
			if err != nil {
				t.Fatal(err)
			}
			env := mustEncrypt(t, &priv.PublicKey, []byte("secret"))
			if got, err := DecryptWithKeys(env, k); err != nil || string(got) != "secret" {
				t.Fatalf("before Destroy: %q, %v", got, err)
			}
			words := secretWords(t, priv)
			for name, w := range words {
				if allZero(w) {
					t.Fatalf("%s is already zero before Destroy", name)
				}
			}
			k.Destroy()
			for name, w := range words {
				if !allZero(w) {
					t.Errorf("%s still holds non-zero words after Destroy", name)
				}
			}
			if priv.D.Sign() != 0 || priv.Precomputed.Dp.Sign() != 0 {
				t.Error("D or Dp is not zero after Destroy")
			}
			if _, err := DecryptWithKeys(env, k); !isKind(err, ErrKeyDecrypt) {
				t.Errorf("after Destroy: err = %v, want ErrKeyDecrypt", err)
			}
			k.Destroy() // twice is harmless
		})
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Destroy while other goroutines decrypt: each decryption either succeeds
// or fails with ErrKeyDecrypt; none crashes or returns a wrong plaintext.
func TestDestroyDuringDecrypt(t *testing.T) {
	for _, b := range Backends() {
		t.Run(string(b), func(t *testing.T) {
			priv, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			k, err := NewKeyWithBackend(priv, b)
			if err != nil {
				t.Fatal(err)
			}
			want := []byte("a data key")
			env := mustEncrypt(t, &priv.PublicKey, want)
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			start := make(chan struct{})
			for range 4 {
				wg.Go(func() {
					<-start
					for range 20 {
						got, err := DecryptWithKeys(env, k)
						switch {
						case err == nil && !bytes.Equal(got, want):
							errs <- errors.New("wrong plaintext")
							return
						case err != nil && !isKind(err, ErrKeyDecrypt):
							errs <- err
							return
						}
					}
				})
			}
			close(start)
			k.Destroy()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// The ad hoc keys of Decrypt leave the caller's key as it was.
func TestDecryptLeavesCallersKey(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	d := new(big.Int).Set(priv.D)
	dp := new(big.Int).Set(priv.Precomputed.Dp)
	env := mustEncrypt(t, &priv.PublicKey, []byte("x"))
	for range 2 {
		if _, err := Decrypt(env, priv); err != nil {
			t.Fatal(err)
		}
	}
	if priv.D.Cmp(d) != 0 || priv.Precomputed.Dp.Cmp(dp) != 0 {
		t.Error("Decrypt changed the caller's key")
	}

	// A key without precomputed values (built by hand) decrypts too, and
	// stays without them.
	bare := &rsa.PrivateKey{PublicKey: priv.PublicKey, D: priv.D, Primes: priv.Primes}
	if got, err := Decrypt(env, bare); err != nil || string(got) != "x" {
		t.Fatalf("key without precomputed values: %q, %v", got, err)
	}
	if bare.Precomputed.Dp != nil {
		t.Error("Decrypt precomputed the caller's key")
	}
}

func TestDecryptOAEPErrors(t *testing.T) {
	for _, b := range Backends() {
		t.Run(string(b), func(t *testing.T) {
			k, err := NewKeyWithBackend(testKey(t, 2048), b)
			if err != nil {
				t.Fatal(err)
			}
			n := testKey(t, 2048).N
			for _, tt := range []struct {
				name string
				in   []byte
			}{
				{"empty", nil},
				{"zero", make([]byte, 256)},
				{"modulus", n.Bytes()},
				{"longer than the modulus", make([]byte, 257)},
				{"random", randomBytes(t, 256)},
			} {
				_, err := k.DecryptOAEP(tt.in)
				if err == nil || err.Error() != errOAEP.Error() {
					t.Errorf("%s: err = %v, want %v", tt.name, err, errOAEP)
				}
			}
		})
	}
}

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}
