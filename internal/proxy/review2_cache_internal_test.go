package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/enclavekit/kmsproxy/internal/policy"
)

// TestCacheTimerSeesAnOlderEntry (review, failing test): requests finish
// out of order, so put may store an entry older than the oldest one the
// expiry timer is armed for (a Decrypt that was slow at KMS: its entry's
// born is when it was looked up). armLocked keeps the timer as it is, so on
// an idle listener that entry's plaintext stays in memory past its max_age
// until the timer fires for the younger entry, up to the request timeout
// (10 s by default) later, where docs/security.md promises it is dropped
// and zeroed at max_age "also when nobody asks" and the code comment "no
// plaintext outlives max_age by more than a moment on an idle listener".
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
