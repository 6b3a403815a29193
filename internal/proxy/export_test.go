package proxy

import "time"

// Test hooks into the decrypt cache, for the tests in package proxy_test.

// SetCacheClock makes the named listener's decrypt cache read the time
// from now, so tests can move it past max_age without waiting.
func SetCacheClock(s *Server, listener string, now func() time.Time) {
	c := s.listeners[listener].cache
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
}

// CacheLen returns the number of entries in the listener's decrypt cache,
// or -1 when it has none.
func CacheLen(s *Server, listener string) int {
	l := s.listeners[listener]
	if l == nil || l.cache == nil {
		return -1
	}
	return l.cache.len()
}

// CacheBuffers returns the answer buffers the listener's cache holds now,
// oldest first: the cache's own memory, not copies, so a test can watch
// them being zeroed.
func CacheBuffers(s *Server, listener string) [][]byte {
	c := s.listeners[listener].cache
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for e := c.oldest; e != nil; e = e.newer {
		out = append(out, e.answer[:cap(e.answer)])
	}
	return out
}
