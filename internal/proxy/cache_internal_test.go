package proxy

import (
	"bytes"
	"encoding/binary"
	"net/http/httptest"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/enclavekit/kmsproxy/internal/policy"
)

// TestRequestKeyCoversDecryptInput fails when aws-sdk-go-v2 adds a member
// to DecryptInput: requestKey must then take it in (or, like Recipient,
// the cache must refuse requests that carry it), or two requests that KMS
// would treat differently could share an entry.
func TestRequestKeyCoversDecryptInput(t *testing.T) {
	covered := []string{"CiphertextBlob", "DryRun", "DryRunModifiers", "EncryptionAlgorithm", "EncryptionContext", "GrantTokens", "KeyId", "Recipient"}
	var got []string
	typ := reflect.TypeFor[kms.DecryptInput]()
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() {
			got = append(got, f.Name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, covered) {
		t.Errorf("kms.DecryptInput has members %v; requestKey covers %v", got, covered)
	}
}

// TestRequestKey: requests that differ in any member have different keys;
// the same request has the same key, however its map was built.
func TestRequestKey(t *testing.T) {
	base := func() *kms.DecryptInput {
		return &kms.DecryptInput{
			CiphertextBlob:    []byte{1, 2, 3},
			KeyId:             aws.String("alias/app"),
			EncryptionContext: map[string]string{"a": "b", "c": "d"},
			GrantTokens:       []string{"g1", "g2"},
		}
	}
	variants := []struct {
		name   string
		change func(*kms.DecryptInput)
	}{
		{"other blob", func(in *kms.DecryptInput) { in.CiphertextBlob = []byte{1, 2, 4} }},
		{"blob absent", func(in *kms.DecryptInput) { in.CiphertextBlob = nil }},
		{"blob empty", func(in *kms.DecryptInput) { in.CiphertextBlob = []byte{} }},
		{"KeyId absent", func(in *kms.DecryptInput) { in.KeyId = nil }},
		{"KeyId empty", func(in *kms.DecryptInput) { in.KeyId = aws.String("") }},
		{"KeyId other", func(in *kms.DecryptInput) { in.KeyId = aws.String("alias/apq") }},
		{"context absent", func(in *kms.DecryptInput) { in.EncryptionContext = nil }},
		{"context empty", func(in *kms.DecryptInput) { in.EncryptionContext = map[string]string{} }},
		{"context pair moved", func(in *kms.DecryptInput) { in.EncryptionContext = map[string]string{"ab": "", "c": "d"} }},
		{"context value", func(in *kms.DecryptInput) { in.EncryptionContext["c"] = "e" }},
		{"context extra", func(in *kms.DecryptInput) { in.EncryptionContext["e"] = "f" }},
		{"algorithm", func(in *kms.DecryptInput) { in.EncryptionAlgorithm = types.EncryptionAlgorithmSpecSymmetricDefault }},
		{"grant order", func(in *kms.DecryptInput) { in.GrantTokens = []string{"g2", "g1"} }},
		{"grant split", func(in *kms.DecryptInput) { in.GrantTokens = []string{"g1g", "2"} }},
		{"grants absent", func(in *kms.DecryptInput) { in.GrantTokens = nil }},
		{"grants empty", func(in *kms.DecryptInput) { in.GrantTokens = []string{} }},
		{"DryRun false", func(in *kms.DecryptInput) { in.DryRun = aws.Bool(false) }},
		{"DryRun true", func(in *kms.DecryptInput) { in.DryRun = aws.Bool(true) }},
		{"DryRunModifiers", func(in *kms.DecryptInput) {
			in.DryRunModifiers = []types.DryRunModifierType{types.DryRunModifierTypeIgnoreCiphertext}
		}},
	}
	baseKey, _ := requestKey("local", base(), nil)
	seen := map[cacheKey]string{baseKey: "base"}
	for _, v := range variants {
		in := base()
		v.change(in)
		k, _ := requestKey("local", in, nil)
		if other, dup := seen[k]; dup {
			t.Errorf("%s has the same key as %s", v.name, other)
		}
		seen[k] = v.name
	}
	if k, _ := requestKey("parent", base(), nil); k == baseKey {
		t.Error("the same request on another listener has the same key")
	}
	// The same context built in another order, and a scratch buffer with
	// something in it, give the same key.
	in := base()
	in.EncryptionContext = map[string]string{}
	for _, k := range []string{"c", "a"} {
		in.EncryptionContext[k] = map[string]string{"a": "b", "c": "d"}[k]
	}
	for range 20 {
		if k, _ := requestKey("local", in, []byte("leftovers")); k != baseKey {
			t.Fatal("the same request has another key")
		}
	}
}

func TestCredsFingerprint(t *testing.T) {
	a := aws.Credentials{AccessKeyID: "ASIAAAAAAAAAAAAAAAAA", SecretAccessKey: "s1", SessionToken: "t1"}
	id, scratch := credsFingerprint(a, nil)
	if bytes.Contains(scratch[:cap(scratch)], []byte("t1")) {
		t.Error("the scratch buffer keeps the session token")
	}
	b := a
	b.SecretAccessKey = "s2"
	if got, _ := credsFingerprint(b, nil); got != id {
		t.Error("the fingerprint depends on the secret access key")
	}
	for _, c := range []aws.Credentials{
		{AccessKeyID: "ASIAAAAAAAAAAAAAAAAB", SecretAccessKey: "s1", SessionToken: "t1"},
		{AccessKeyID: "ASIAAAAAAAAAAAAAAAAA", SecretAccessKey: "s1", SessionToken: "t2"},
		{AccessKeyID: "ASIAAAAAAAAAAAAAAAAAt", SecretAccessKey: "s1", SessionToken: "1"},
	} {
		if got, _ := credsFingerprint(c, nil); got == id {
			t.Errorf("%s/%s has the fingerprint of %s/%s", c.AccessKeyID, c.SessionToken, a.AccessKeyID, a.SessionToken)
		}
	}
}

// testCache is a cache with unregistered metrics and a fake clock.
func testCache(t testing.TB, limits policy.DecryptCache) (*decryptCache, *time.Time) {
	t.Helper()
	m := cacheMetrics{
		hits:    prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}),
		misses:  prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "e"}),
	}
	for r := range m.evictions {
		m.evictions[r] = prometheus.NewCounter(prometheus.CounterOpts{Name: evictReasonNames[r]})
	}
	c := newDecryptCache(&limits, m)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c.now = func() time.Time { return now }
	t.Cleanup(c.close)
	return c, &now
}

// TestCachedAnswerSizeLimit: an encoded answer of policy.DecryptCacheEntryBytes
// is stored, one a byte longer is not (and is still written to the caller).
func TestCachedAnswerSizeLimit(t *testing.T) {
	out := func(keyLen int) *kms.DecryptOutput {
		return &kms.DecryptOutput{
			KeyId: aws.String(string(bytes.Repeat([]byte("k"), keyLen))), Plaintext: bytes.Repeat([]byte{7}, 4096),
			EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
		}
	}
	plain, _ := writeLen(out(0))
	fill := policy.DecryptCacheEntryBytes - plain
	for _, tt := range []struct {
		name   string
		keyLen int
		stored bool
	}{
		{"at the limit", fill, true},
		{"past the limit", fill + 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, now := testCache(t, policy.DecryptCache{MaxAge: time.Minute, MaxUses: 10, MaxEntries: 10})
			ck := &cacheCall{c: c, key: cacheKey{1}, born: *now}
			w := httptest.NewRecorder()
			ck.write(w, out(tt.keyLen), 4096)
			if n := len(w.Body.Bytes()); n != policy.DecryptCacheEntryBytes+tt.keyLen-fill {
				t.Fatalf("answer of %d bytes", n)
			}
			if got := c.len() == 1; got != tt.stored {
				t.Errorf("stored = %v, want %v", got, tt.stored)
			}
		})
	}
}

func writeLen(out *kms.DecryptOutput) (int, error) {
	w := httptest.NewRecorder()
	(*cacheCall)(nil).write(w, out, len(out.Plaintext))
	return w.Body.Len(), nil
}

// TestCacheBookkeeping: entries stored out of order are kept by age; the
// timer's sweep drops (and zeroes) expired entries with nobody asking;
// max_uses counts hits; the counters follow.
func TestCacheBookkeeping(t *testing.T) {
	c, now := testCache(t, policy.DecryptCache{MaxAge: time.Minute, MaxUses: 2, MaxEntries: 10})
	t0 := *now
	var bufs [][]byte
	for i, born := range []time.Duration{10 * time.Second, 0, 20 * time.Second, 5 * time.Second} {
		e := &cacheEntry{key: cacheKey{byte(i)}, born: t0.Add(born), answer: []byte{1, 2, byte(i)}}
		bufs = append(bufs, e.answer)
		c.put(e)
	}
	var order []byte
	for e := c.oldest; e != nil; e = e.newer {
		order = append(order, e.key[0])
	}
	if !bytes.Equal(order, []byte{1, 3, 0, 2}) {
		t.Fatalf("entries by age: %v, want [1 3 0 2]", order)
	}
	if !c.armed {
		t.Error("no expiry timer armed")
	}

	cs := credsState{ok: true}
	if r := c.get(cacheKey{2}, cs, nil); !r.hit || !bytes.Equal(r.answer, []byte{1, 2, 2}) {
		t.Fatalf("get = %+v", r)
	}
	if r := c.get(cacheKey{2}, cs, nil); !r.hit {
		t.Fatal("second use missed")
	}
	if r := c.get(cacheKey{2}, cs, nil); r.hit {
		t.Fatal("third use of a max_uses 2 entry hit")
	}

	// 66 s after t0 the entries born at 0 and 5 s are 1 minute old or
	// more; the timer's sweep drops them.
	*now = t0.Add(66 * time.Second)
	c.expire()
	if c.len() != 1 || !allZero(bufs[1]) || !allZero(bufs[3]) || allZero(bufs[0]) {
		t.Errorf("after the sweep: %d entries; buffers %v", c.len(), bufs)
	}
	if got := value(c.m.evictions[evictAge]); got != 2 {
		t.Errorf("age evictions = %v, want 2", got)
	}
	if got := value(c.m.evictions[evictUses]); got != 1 {
		t.Errorf("uses evictions = %v, want 1", got)
	}
	if got := value(c.m.entries); got != 1 {
		t.Errorf("entries gauge = %v, want 1", got)
	}
	// An answer that has already expired when it is stored is dropped.
	late := &cacheEntry{key: cacheKey{9}, born: t0, answer: []byte{5}}
	c.put(late)
	if c.len() != 1 || late.answer[0] != 0 {
		t.Error("an expired answer was stored")
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// BenchmarkDecryptCacheMemory reports the heap one cache entry takes,
// filling a cache of 10,000 entries through the path a miss takes
// (cacheCall.write) with answers of a 32-byte data key and of a 4096-byte
// plaintext (cms.MaxPlaintext) under a key ARN and KeyMaterialId as KMS
// writes them. The figures are the basis of policy.MaxDecryptCacheEntries'
// comment.
func BenchmarkDecryptCacheMemory(b *testing.B) {
	const n = 10_000
	for _, size := range []int{32, 4096} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			var perEntry float64
			for b.Loop() {
				c, now := testCache(b, policy.DecryptCache{MaxAge: time.Hour, MaxUses: 10, MaxEntries: n})
				out := &kms.DecryptOutput{
					KeyId:               aws.String("arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"),
					KeyMaterialId:       aws.String(strings.Repeat("0123456789abcdef", 4)),
					Plaintext:           bytes.Repeat([]byte{7}, size),
					EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
				}
				w := httptest.NewRecorder()
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				for i := range n {
					var k cacheKey
					binary.BigEndian.PutUint32(k[:], uint32(i))
					w.Body.Reset()
					(&cacheCall{c: c, key: k, born: *now}).write(w, out, size)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				if c.len() != n {
					b.Fatalf("%d entries", c.len())
				}
				perEntry = float64(after.HeapAlloc-before.HeapAlloc) / n
				c.close()
			}
			b.ReportMetric(perEntry, "heap-bytes/entry")
		})
	}
}

// TestCacheTimerSeesAnOlderEntry: requests finish out of order, so put may
// store an entry older than the oldest one the expiry timer is armed for (a
// Decrypt that was slow at KMS: its entry's born is when it was looked up).
// The timer is set again for it, so that on an idle listener its plaintext
// is zeroed at its max_age, not when the younger entry expires.
//
// The cache runs on the real clock here: the younger entry expires
// max_age (10 s) from now, the older one 200 ms from now. The test waits
// (at most 5 s) for the older one to go and fails when the younger one is
// gone with it, or when it does not go at all.
func TestCacheTimerSeesAnOlderEntry(t *testing.T) {
	m := cacheMetrics{
		hits:    prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}),
		misses:  prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "e"}),
	}
	for r := range m.evictions {
		m.evictions[r] = prometheus.NewCounter(prometheus.CounterOpts{Name: evictReasonNames[r]})
	}
	const maxAge = 10 * time.Second
	c := newDecryptCache(&policy.DecryptCache{MaxAge: maxAge, MaxUses: 10, MaxEntries: 10}, m)
	t.Cleanup(c.close)

	now := time.Now()
	younger := &cacheEntry{key: cacheKey{1}, born: now, answer: []byte("younger")}
	older := &cacheEntry{key: cacheKey{2}, born: now.Add(-maxAge + 200*time.Millisecond), answer: []byte("older plaintext")}
	c.put(younger) // arms the timer for now+maxAge
	c.put(older)   // expires 200 ms from now

	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		olderIn, youngerIn := c.entries[older.key] != nil, c.entries[younger.key] != nil
		c.mu.Unlock()
		if !olderIn {
			if !youngerIn {
				t.Fatal("the older entry left only with the younger one, at the younger one's max_age")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("an entry past its max_age is still in memory on an idle listener 5 s later: the expiry timer is armed for a younger entry")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
