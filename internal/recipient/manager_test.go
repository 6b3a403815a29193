package recipient

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// countingAttester is the NSM simulator with a call counter and a switch
// that makes it fail, as a broken NSM would.
type countingAttester struct {
	sim   attestation.Attester
	calls atomic.Int64
	fail  atomic.Bool
	// otherKey, when set, is signed into documents in place of the key
	// requested, as a broken or hostile attestation source might.
	otherKey atomic.Pointer[[]byte]
	// garbage makes Attest return bytes that are no document.
	garbage atomic.Bool
}

var errNSM = errors.New("nsm: device busy")

func (a *countingAttester) Attest(ctx context.Context, req attestation.Request) ([]byte, error) {
	a.calls.Add(1)
	if a.fail.Load() {
		return nil, errNSM
	}
	if a.garbage.Load() {
		return []byte("not a document"), nil
	}
	if k := a.otherKey.Load(); k != nil {
		req.PublicKey = *k
	}
	return a.sim.Attest(ctx, req)
}

var (
	simOnce sync.Once
	simCA   *nsmsim.CA
	simErr  error
)

func newAttester(t testing.TB) *countingAttester {
	t.Helper()
	simOnce.Do(func() { simCA, simErr = nsmsim.NewCA() })
	if simErr != nil {
		t.Fatal(simErr)
	}
	sim, err := nsmsim.New(simCA, nsmsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &countingAttester{sim: sim}
}

// fakeClock is a settable clock for TTL tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	if cfg.Bits == 0 {
		cfg.Bits = 2048
	}
	m, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// envelopeFor returns what KMS would send the lease's document holder.
func envelopeFor(t testing.TB, l *Lease, plaintext []byte) []byte {
	t.Helper()
	doc, err := attestation.Parse(l.Document())
	if err != nil {
		t.Fatalf("parse own document: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(doc.PublicKey)
	if err != nil {
		t.Fatalf("document public key: %v", err)
	}
	env, err := cms.Encrypt(rand.Reader, pub.(*rsa.PublicKey), plaintext)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestAcquireDecrypt(t *testing.T) {
	for _, bits := range []int{2048, 3072} {
		m := newManager(t, Config{Attester: newAttester(t), Bits: bits, AttestationTTL: time.Minute})
		l, err := m.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		want := []byte("the secret")
		got, err := l.Decrypt(envelopeFor(t, l, want))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Decrypt = %q, %v; want %q", got, err, want)
		}
		l.Release()
		l.Release() // idempotent
		st := m.Status()
		if !st.Ready || st.KeyBits != bits || st.KeyFingerprint != l.Fingerprint() || len(st.PCRs) != 16 {
			t.Errorf("Status = %+v", st)
		}
	}
}

func TestDocumentReuse(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	a := newAttester(t)
	m := newManager(t, Config{Attester: a, AttestationTTL: time.Minute, Now: clock.Now})
	if got := a.calls.Load(); got != 1 {
		t.Fatalf("New attested %d times, want 1", got)
	}
	first, _ := m.Acquire(context.Background())
	first.Release()
	for range 10 {
		l, err := m.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(l.Document(), first.Document()) {
			t.Fatal("document not reused within the TTL")
		}
		l.Release()
	}
	if got := a.calls.Load(); got != 1 {
		t.Fatalf("attested %d times within the TTL, want 1", got)
	}
	clock.Advance(time.Minute)
	l, _ := m.Acquire(context.Background())
	defer l.Release()
	if bytes.Equal(l.Document(), first.Document()) || a.calls.Load() != 2 {
		t.Fatalf("expired document reused (calls=%d)", a.calls.Load())
	}
}

func TestFreshDocumentPerRequest(t *testing.T) {
	a := newAttester(t)
	m := newManager(t, Config{Attester: a, AttestationTTL: 0})
	for range 3 {
		l, err := m.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	if got := a.calls.Load(); got != 4 {
		t.Fatalf("attested %d times, want 1 at start + 3", got)
	}
}

func TestConcurrentRefreshSharesOneAttestation(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	a := newAttester(t)
	m := newManager(t, Config{Attester: a, AttestationTTL: time.Minute, Now: clock.Now})
	clock.Advance(2 * time.Minute)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			l, err := m.Acquire(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			l.Release()
		})
	}
	wg.Wait()
	if got := a.calls.Load(); got != 2 {
		t.Fatalf("32 concurrent acquires of an expired document attested %d times, want 1 more", got-1)
	}
}

func TestRotationKeepsInflightKeys(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, Config{Attester: newAttester(t), AttestationTTL: time.Minute})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go m.Run(runCtx)

	old, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	envToOld := envelopeFor(t, old, []byte("for the old key"))
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Release()
	if cur.Fingerprint() == old.Fingerprint() {
		t.Fatal("Rotate did not change the key")
	}
	// The old lease still opens its envelope, and so does a lease on the
	// new key (the identifier picks the retired key).
	if got, err := old.Decrypt(envToOld); err != nil || string(got) != "for the old key" {
		t.Fatalf("old lease after rotation: %q, %v", got, err)
	}
	if got, err := cur.Decrypt(envToOld); err != nil || string(got) != "for the old key" {
		t.Fatalf("new lease, envelope for the in-use retired key: %q, %v", got, err)
	}
	if st := m.Status(); st.RetiredKeys != 1 || st.Rotations != 1 {
		t.Fatalf("Status after rotation = %+v", st)
	}
	old.Release()
	if st := m.Status(); st.RetiredKeys != 0 {
		t.Fatalf("retired key kept after its last lease: %+v", st)
	}
	if _, err := cur.Decrypt(envToOld); !errors.Is(err, cms.ErrNoMatchingKey) {
		t.Fatalf("envelope for a dropped key: %v, want ErrNoMatchingKey", err)
	}
}

// TestRotationUnderLoad rotates while workers acquire, receive an envelope
// and decrypt it: not one request may fail.
func TestRotationUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := newManager(t, Config{Attester: newAttester(t), AttestationTTL: time.Minute})
	go m.Run(ctx)

	const workers, rotations = 8, 3
	var stop atomic.Bool
	var requests, failures atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				l, err := m.Acquire(ctx)
				if err != nil {
					failures.Add(1)
					t.Errorf("worker %d: Acquire: %v", w, err)
					return
				}
				want := []byte{byte(w), byte(i)}
				got, err := l.Decrypt(envelopeFor(t, l, want))
				l.Release()
				requests.Add(1)
				if err != nil || !bytes.Equal(got, want) {
					failures.Add(1)
					t.Errorf("worker %d request %d: %v", w, i, err)
				}
			}
		})
	}
	for range rotations {
		if err := m.Rotate(ctx); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed across %d rotations", failures.Load(), requests.Load(), rotations)
	}
	if st := m.Status(); st.Rotations != rotations || st.RetiredKeys != 0 {
		t.Fatalf("Status after the load = %+v", st)
	}
	t.Logf("%d requests, %d rotations, 0 failures", requests.Load(), rotations)
}

func TestAttesterFailure(t *testing.T) {
	a := newAttester(t)
	a.fail.Store(true)
	if _, err := New(context.Background(), Config{Attester: a, Bits: 2048, AttestationTTL: time.Minute}); !errors.Is(err, errNSM) {
		t.Fatalf("New with a failing NSM: %v", err)
	}

	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	a = newAttester(t)
	m := newManager(t, Config{Attester: a, AttestationTTL: time.Minute, Now: clock.Now})
	a.fail.Store(true)
	clock.Advance(2 * time.Minute)
	if _, err := m.Acquire(context.Background()); !errors.Is(err, errNSM) {
		t.Fatalf("Acquire with an expired document and a failing NSM: %v", err)
	}
	st := m.Status()
	if st.Ready || st.AttestationError == "" {
		t.Fatalf("Status with a failing NSM = %+v", st)
	}
	a.fail.Store(false)
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatalf("Acquire after the NSM recovered: %v", err)
	}
	l.Release()
	if st := m.Status(); !st.Ready || st.AttestationError != "" {
		t.Fatalf("Status after recovery = %+v", st)
	}
}

// TestUnusableDocument: a document that does not carry the recipient's
// RSA key (another key, an EC point, or no document at all) is refused
// before it can go to KMS, and not cached; a good one is used again as
// soon as the source recovers.
func TestUnusableDocument(t *testing.T) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherSPKI, err := x509.MarshalPKIXPublicKey(&other.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPoint := append([]byte{4}, make([]byte, 64)...)
	tests := []struct {
		name    string
		breakIt func(a *countingAttester)
		want    error
	}{
		{name: "another RSA key", breakIt: func(a *countingAttester) { a.otherKey.Store(&otherSPKI) }, want: attestation.ErrPublicKey},
		{name: "an EC point", breakIt: func(a *countingAttester) { a.otherKey.Store(&ecPoint) }, want: attestation.ErrPublicKey},
		{name: "no document", breakIt: func(a *countingAttester) { a.garbage.Store(true) }, want: attestation.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(context.Background(), Config{Attester: func() *countingAttester { a := newAttester(t); tt.breakIt(a); return a }(), Bits: 2048, AttestationTTL: time.Minute}); !errors.Is(err, tt.want) {
				t.Fatalf("New = %v, want %v", err, tt.want)
			}
			clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
			a := newAttester(t)
			m := newManager(t, Config{Attester: a, AttestationTTL: time.Minute, Now: clock.Now})
			tt.breakIt(a)
			// Within the TTL the good document is still served.
			l, err := m.Acquire(context.Background())
			if err != nil {
				t.Fatalf("Acquire within the TTL: %v", err)
			}
			l.Release()
			clock.Advance(2 * time.Minute)
			if _, err := m.Acquire(context.Background()); !errors.Is(err, tt.want) {
				t.Fatalf("Acquire = %v, want %v", err, tt.want)
			}
			if st := m.Status(); st.Ready || st.AttestationError == "" {
				t.Fatalf("Status = %+v, want not ready with the reason", st)
			}
			a.otherKey.Store(nil)
			a.garbage.Store(false)
			l, err = m.Acquire(context.Background())
			if err != nil {
				t.Fatalf("Acquire after recovery: %v", err)
			}
			l.Release()
		})
	}
}

// TestNitroTPMSource: documents from an instance's NitroTPM serve as
// Recipients the same way, and Status reports the NitroTPM's PCRs.
func TestNitroTPMSource(t *testing.T) {
	simOnce.Do(func() { simCA, simErr = nsmsim.NewCA() })
	if simErr != nil {
		t.Fatal(simErr)
	}
	sim, err := nitrotpmsim.New(simCA, nitrotpmsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pipe := sim.Pipe()
	dev := nitrotpm.New(pipe, pipe)
	t.Cleanup(func() { dev.Close() })
	m := newManager(t, Config{Attester: &countingAttester{sim: dev}, AttestationTTL: time.Minute})
	l, err := m.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	doc, err := attestation.Parse(l.Document())
	if err != nil {
		t.Fatal(err)
	}
	if doc.Kind != attestation.KindNitroTPM {
		t.Fatalf("Kind = %v", doc.Kind)
	}
	if got := len(m.Status().PCRs); got != attestation.NitroTPMPCRCount {
		t.Errorf("Status has %d PCRs, want the NitroTPM's %d", got, attestation.NitroTPMPCRCount)
	}
}

func TestRunRotatesAndRefreshes(t *testing.T) {
	a := newAttester(t)
	m := newManager(t, Config{Attester: a, Rotation: 100 * time.Millisecond, AttestationTTL: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go m.Run(ctx)
	for m.Status().Rotations < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("no rotation within 30s: %+v", m.Status())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !m.Status().Ready {
		t.Fatalf("not ready while rotating: %+v", m.Status())
	}
}

func TestConfigErrors(t *testing.T) {
	a := newAttester(t)
	for _, cfg := range []Config{
		{Bits: 2048},
		{Attester: a, Bits: 1024},
		{Attester: a, Bits: 2048, Rotation: -1},
	} {
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestClosed(t *testing.T) {
	m := newManager(t, Config{Attester: newAttester(t), AttestationTTL: time.Minute})
	m.Close()
	if _, err := m.Acquire(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}
}

// TestDropClearsTheWholeKey is the attack on a rotated-out key: whoever
// reads the process's memory after the key's last lease ended must find
// none of its private numbers, the CRT values included, and the key must
// decrypt nothing more.
func TestDropClearsTheWholeKey(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, Config{Attester: newAttester(t), AttestationTTL: time.Minute})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go m.Run(runCtx)

	old, err := m.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	priv := old.k.priv
	env := envelopeFor(t, old, []byte("before the drop"))
	if priv.Precomputed.Dp == nil || priv.Precomputed.Qinv == nil {
		t.Fatal("the key is not precomputed")
	}
	words := map[string][]big.Word{}
	for name, x := range map[string]*big.Int{
		"D": priv.D, "P": priv.Primes[0], "Q": priv.Primes[1],
		"Dp": priv.Precomputed.Dp, "Dq": priv.Precomputed.Dq, "Qinv": priv.Precomputed.Qinv,
	} {
		w := x.Bits()
		words[name] = w[:cap(w)] // the whole backing array, spare capacity included
	}
	for name, w := range words {
		if isZero(w) {
			t.Fatalf("%s is zero before the drop", name)
		}
	}
	if err := m.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	for name, w := range words {
		if isZero(w) {
			t.Fatalf("%s was cleared while a lease still holds the key", name)
		}
	}
	old.Release() // the last lease: the key is dropped
	for name, w := range words {
		if !isZero(w) {
			t.Errorf("%s still holds non-zero words after the drop", name)
		}
	}
	if _, err := old.k.ckey.DecryptOAEP(make([]byte, 256)); !errors.Is(err, cms.ErrKeyDecrypt) {
		t.Errorf("the dropped key still decrypts: %v", err)
	}
	if _, err := cms.DecryptWithKeys(env, old.k.ckey); !errors.Is(err, cms.ErrKeyDecrypt) {
		t.Errorf("envelope for the dropped key, with the dropped key: %v, want ErrKeyDecrypt", err)
	}
}

func isZero(w []big.Word) bool {
	for _, x := range w {
		if x != 0 {
			return false
		}
	}
	return true
}
