package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

// The decrypt cache answers a Decrypt request from an earlier KMS answer,
// without KMS and without the envelope's RSA decryption, on the listeners
// whose policy sets decrypt_cache (policy.DecryptCache). It follows the AWS
// Encryption SDK's caching cryptographic materials manager ("Setting cache
// security thresholds", AWS Encryption SDK Developer Guide): a required
// maximum age counted from when the entry was made, a limit on the uses of
// each entry, a capacity, entries matched on everything that selects the
// data key (for decryption, the encrypted data key and the encryption
// context), and an entry past any bound is never used and is evicted.
//
// What an entry answers: only a Decrypt whose request is identical, in
// every member KMS received (CiphertextBlob, KeyId as named or absent,
// EncryptionContext, EncryptionAlgorithm, GrantTokens in order, DryRun and
// DryRunModifiers; see requestKey), to the one KMS answered, on the same
// listener, while the credentials that signed that request are still the
// ones kmsproxyd signs with and have not expired (see credsID). A request
// with its own Recipient, a DryRun, and every other operation never touch
// it. Only answers that passed every check (the listener's rules, the
// kms.accounts and kms.regions pin on the key KMS answered with, the
// envelope) are stored, as the encoded answer the caller got, so a hit is
// byte for byte the answer of the miss that filled it.
//
// Bounds: an entry answers until max_age has passed since kmsproxyd sent
// the request (slightly before KMS answered it), at most max_uses times;
// at max_entries the oldest entry (by that time, not by last use) makes
// room. An evicted entry's buffer is zeroed at once, and a background timer
// evicts entries as they expire even when no request comes. Plaintexts are
// kept only here, in memory, never logged or counted; the map's key is a
// SHA-256 of the request, never of the answer.
//
// Identical misses are not coalesced: a burst of them all go to KMS, and
// the first answer stored stays.

// Why an entry left the cache, the reason label of
// kmsproxy_decrypt_cache_evictions_total.
type evictReason int

const (
	evictAge         evictReason = iota // max_age reached
	evictUses                           // max_uses reached
	evictCapacity                       // room for a newer entry at max_entries
	evictCredentials                    // the credentials changed or expired
	numEvictReasons
)

var evictReasonNames = [numEvictReasons]string{"age", "uses", "capacity", "credentials"}

// cacheKey identifies a request: the SHA-256 of requestKey's encoding.
type cacheKey [sha256.Size]byte

// credsID identifies a set of credentials without holding any of it: the
// SHA-256 of the access key id and the session token (see credsFingerprint).
type credsID [sha256.Size]byte

// cacheEntry is one KMS answer.
type cacheEntry struct {
	key   cacheKey
	creds credsID
	// credsExpire is when the credentials that obtained the answer expire,
	// as they said when the answer was obtained (zero: they do not). An
	// entry answers no request past it, whatever credentials with the same
	// fingerprint say later: a parent that pushes them again with a later
	// Expiration or none does not extend it.
	credsExpire time.Time
	// born is when kmsproxyd looked the request up, just before it sent
	// it to KMS: never later than KMS answered.
	born time.Time
	// uses counts the requests the entry has answered.
	uses int
	// answer is the encoded answer, with the plaintext in it; zeroed when
	// the entry is evicted.
	answer []byte
	// keyID is the key KMS answered with, for the request's log line.
	keyID string
	// contentLength is the answer's Content-Length header value, made once
	// so that a hit allocates none.
	contentLength []string
	// older and newer link the entries by born.
	older, newer *cacheEntry
}

// cacheMetrics are one listener's cache series.
type cacheMetrics struct {
	hits, misses prometheus.Counter
	evictions    [numEvictReasons]prometheus.Counter
	entries      prometheus.Gauge
}

// decryptCache is one listener's cache. It is safe for concurrent use.
type decryptCache struct {
	maxAge     time.Duration
	maxUses    int
	maxEntries int
	m          cacheMetrics

	mu      sync.Mutex
	now     func() time.Time
	entries map[cacheKey]*cacheEntry
	// oldest and newest are the ends of the list of entries by born.
	oldest, newest *cacheEntry
	// timer evicts the oldest entry when it expires; armed while the
	// cache holds entries.
	timer  *time.Timer
	armed  bool
	closed bool
}

func newDecryptCache(limits *policy.DecryptCache, m cacheMetrics) *decryptCache {
	return &decryptCache{
		maxAge:     limits.MaxAge,
		maxUses:    limits.MaxUses,
		maxEntries: limits.MaxEntries,
		m:          m,
		now:        time.Now,
		entries:    make(map[cacheKey]*cacheEntry),
	}
}

// credsState is what a lookup knows of the credentials kmsproxyd signs
// with now.
type credsState struct {
	ok        bool // Retrieve succeeded
	id        credsID
	canExpire bool
	expires   time.Time
}

// usable reports whether the credentials are in force at now, with
// credentials.ExpiryMargin, as kmsproxyd's credential providers count it.
func (cs credsState) usable(now time.Time) bool {
	return cs.ok && (!cs.canExpire || now.Add(credentials.ExpiryMargin).Before(cs.expires))
}

// lookup is the result of decryptCache.get.
type lookup struct {
	hit           bool
	answer        []byte
	keyID         string
	contentLength []string
	// now is the cache's time of the lookup; credsOK whether the
	// credentials were usable then (a miss is stored only if they were).
	now     time.Time
	credsOK bool
}

// get returns a copy of the answer for key, appended to dst, if an entry
// may answer it under the credentials cs, and counts the use.
func (c *decryptCache) get(key cacheKey, cs credsState, dst []byte) lookup {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	res := lookup{now: now, credsOK: cs.usable(now) && !c.closed}
	c.sweepLocked(now)
	e := c.entries[key]
	if e == nil {
		return res
	}
	if !res.credsOK || e.creds != cs.id ||
		(!e.credsExpire.IsZero() && !now.Add(credentials.ExpiryMargin).Before(e.credsExpire)) {
		c.evictLocked(e, evictCredentials)
		return res
	}
	res.hit, res.answer, res.keyID, res.contentLength = true, append(dst, e.answer...), e.keyID, e.contentLength
	e.uses++
	if e.uses >= c.maxUses {
		c.evictLocked(e, evictUses)
	}
	return res
}

// put stores e unless it has already expired or an entry for the same
// request under the same credentials is there (a concurrent miss stored
// it first); e.answer is then zeroed.
func (c *decryptCache) put(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.sweepLocked(now)
	if c.closed || !now.Before(e.born.Add(c.maxAge)) {
		clear(e.answer)
		return
	}
	if old := c.entries[e.key]; old != nil {
		if old.creds == e.creds {
			clear(e.answer)
			return
		}
		c.evictLocked(old, evictCredentials)
	}
	for len(c.entries) >= c.maxEntries {
		c.evictLocked(c.oldest, evictCapacity)
	}
	// Entries are linked by born. Requests finish out of order, so e may
	// be older than the newest few.
	at := c.newest
	for at != nil && at.born.After(e.born) {
		at = at.older
	}
	e.older = at
	if at == nil {
		e.newer, c.oldest = c.oldest, e
	} else {
		e.newer, at.newer = at.newer, e
	}
	if e.newer == nil {
		c.newest = e
	} else {
		e.newer.older = e
	}
	c.entries[e.key] = e
	c.m.entries.Set(float64(len(c.entries)))
	if c.oldest == e && c.armed {
		// e is older than the entry the timer is set for: set it again,
		// for e's expiry.
		c.timer.Stop()
		c.armed = false
	}
	c.armLocked(now)
}

// sweepLocked evicts the entries that have reached max_age.
func (c *decryptCache) sweepLocked(now time.Time) {
	for c.oldest != nil && !now.Before(c.oldest.born.Add(c.maxAge)) {
		c.evictLocked(c.oldest, evictAge)
	}
}

// evictLocked removes e and zeroes its answer.
func (c *decryptCache) evictLocked(e *cacheEntry, why evictReason) {
	if e.older == nil {
		c.oldest = e.newer
	} else {
		e.older.newer = e.newer
	}
	if e.newer == nil {
		c.newest = e.older
	} else {
		e.newer.older = e.older
	}
	e.older, e.newer = nil, nil
	delete(c.entries, e.key)
	clear(e.answer[:cap(e.answer)])
	e.answer = nil
	c.m.evictions[why].Inc()
	c.m.entries.Set(float64(len(c.entries)))
}

// armLocked sets the timer for the oldest entry's expiry, unless it is set.
func (c *decryptCache) armLocked(now time.Time) {
	if c.armed || c.oldest == nil || c.closed {
		return
	}
	d := max(c.oldest.born.Add(c.maxAge).Sub(now), time.Millisecond)
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.expire)
	} else {
		c.timer.Reset(d)
	}
	c.armed = true
}

// expire runs on the timer: it evicts what has expired, so that no
// plaintext outlives max_age by more than a moment on an idle listener.
func (c *decryptCache) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	now := c.now()
	c.sweepLocked(now)
	c.armLocked(now)
}

// close zeroes and drops every entry; the cache stores nothing after it.
func (c *decryptCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	for e := c.oldest; e != nil; e = e.newer {
		clear(e.answer[:cap(e.answer)])
		e.answer = nil
	}
	c.oldest, c.newest = nil, nil
	clear(c.entries)
	c.m.entries.Set(0)
}

// len returns the number of entries.
func (c *decryptCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// cacheCall is a Decrypt miss that may be stored: its key, the credentials
// it is signed with, and when it was sent. A nil *cacheCall is a request
// the cache does not store; its methods then do what kmsproxyd does
// without a cache.
type cacheCall struct {
	c     *decryptCache
	key   cacheKey
	creds aws.Credentials
	id    credsID
	born  time.Time
}

// scratchPool holds the buffers requests are encoded in for hashing, and
// hits copy their answer into; both are cleared before they go back.
var scratchPool = sync.Pool{New: func() any {
	b := make([]byte, 0, policy.DecryptCacheEntryBytes)
	return &b
}}

// maxPooledScratch keeps buffers grown by an unusually large request
// (a big encryption context) out of the pool.
const maxPooledScratch = 4 * policy.DecryptCacheEntryBytes

func putScratch(b *[]byte) {
	clear((*b)[:cap(*b)])
	if cap(*b) <= maxPooledScratch {
		*b = (*b)[:0]
		scratchPool.Put(b)
	}
}

// fromCache answers rq from its listener's decrypt cache when it can,
// writing the answer and returning hit. Otherwise it returns the cacheCall
// under which the KMS answer to come may be stored, or nil when it may not
// (no cache on the listener, not a Decrypt, a DryRun or Recipient request,
// credentials not usable). It runs after every rule of the listener has
// allowed the request.
func (s *Server) fromCache(ctx context.Context, w http.ResponseWriter, rq *request, in any) (ck *cacheCall, hit bool) {
	l := s.listeners[rq.listener]
	din, ok := in.(*kms.DecryptInput)
	if l == nil || l.cache == nil || !ok || din.Recipient != nil || aws.ToBool(din.DryRun) {
		return nil, false
	}
	c := l.cache
	creds, err := s.cfg.Credentials.Retrieve(ctx)
	cs := credsState{ok: err == nil, canExpire: creds.CanExpire, expires: creds.Expires}
	scratch := scratchPool.Get().(*[]byte)
	defer putScratch(scratch)
	if cs.ok {
		cs.id, *scratch = credsFingerprint(creds, *scratch)
	}
	var key cacheKey
	key, *scratch = requestKey(rq.listener, din, *scratch)

	res := c.get(key, cs, (*scratch)[:0])
	if res.hit {
		*scratch = res.answer // cleared by putScratch
		c.m.hits.Inc()
		rq.cache = "hit"
		if rq.keyID == "" {
			rq.keyID = res.keyID
		}
		// The header values are shared, read-only slices: net/http only
		// reads them.
		h := w.Header()
		h["Content-Type"] = contentTypeHeader
		h["Content-Length"] = res.contentLength
		writeOK(w, res.answer)
		return nil, true
	}
	c.m.misses.Inc()
	rq.cache = "miss"
	if !res.credsOK {
		return nil, false
	}
	return &cacheCall{c: c, key: key, creds: creds, id: cs.id, born: res.now}, false
}

// options makes the KMS call sign with exactly the credentials whose
// fingerprint the entry will carry, so that no change of credentials
// between lookup and call can store an answer under the wrong ones.
func (ck *cacheCall) options() []func(*kms.Options) {
	if ck == nil {
		return nil
	}
	creds := ck.creds
	return []func(*kms.Options){func(o *kms.Options) {
		o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
	}}
}

// write answers the caller with out, KMS's answer with the plaintext
// (secretLen bytes) in place, and stores the encoded answer when ck is not
// nil. Every other buffer that held the plaintext is zeroed.
func (ck *cacheCall) write(w http.ResponseWriter, out any, secretLen int) {
	if ck == nil {
		writeSecret(w, out, secretLen)
		return
	}
	buf := make([]byte, 0, 2*secretLen+4096)
	b, err := kmsapi.AppendOutput(buf, out)
	if err != nil {
		clear(buf[:cap(buf)])
		kmsapi.WriteError(w, kmsapi.Errorf(kmsapi.KMSInternal, "failed to encode the answer"))
		return
	}
	defer clear(b[:cap(b)])
	writeAnswer(w, b)
	if len(b) > policy.DecryptCacheEntryBytes {
		return // not an answer KMS gives (see DecryptCacheEntryBytes)
	}
	e := &cacheEntry{key: ck.key, creds: ck.id, born: ck.born, answer: make([]byte, len(b)),
		contentLength: []string{strconv.Itoa(len(b))}}
	if ck.creds.CanExpire {
		e.credsExpire = ck.creds.Expires
	}
	copy(e.answer, b)
	if d, ok := out.(*kms.DecryptOutput); ok {
		e.keyID = aws.ToString(d.KeyId)
	}
	ck.c.put(e)
}

// contentTypeHeader is the Content-Type of every cached answer.
var contentTypeHeader = []string{kmsapi.ContentType}

// writeAnswer writes an encoded KMS answer with status 200 (writeOK).
func writeAnswer(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Content-Type", kmsapi.ContentType)
	h.Set("Content-Length", strconv.Itoa(len(b)))
	writeOK(w, b)
}

// Domain-separation prefixes of the two hashes.
const (
	requestKeyDomain = "kmsproxyd decrypt cache request v1\x00"
	credsIDDomain    = "kmsproxyd decrypt cache credentials v1\x00"
)

// requestKey returns the cache key of a Decrypt request on listener: the
// SHA-256 of an unambiguous encoding of every member of kms.DecryptInput
// but Recipient (which a cacheable request does not have), each
// length-prefixed, an absent member distinct from an empty one,
// EncryptionContext sorted by key, lists in order. scratch is the buffer
// to encode in; it is returned, possibly grown, for reuse.
// TestRequestKeyCoversDecryptInput fails when the SDK adds a member.
func requestKey(listener string, in *kms.DecryptInput, scratch []byte) (cacheKey, []byte) {
	b := append(scratch[:0], requestKeyDomain...)
	b = appendString(b, listener)
	b = appendPresent(b, in.CiphertextBlob != nil)
	b = appendBytes(b, in.CiphertextBlob)
	b = appendPresent(b, in.KeyId != nil)
	b = appendString(b, aws.ToString(in.KeyId))
	b = appendPresent(b, in.EncryptionContext != nil)
	b = binary.AppendUvarint(b, uint64(len(in.EncryptionContext)))
	var small [16]string
	names := small[:0]
	for k := range in.EncryptionContext {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		b = appendString(b, k)
		b = appendString(b, in.EncryptionContext[k])
	}
	b = appendString(b, string(in.EncryptionAlgorithm))
	b = appendPresent(b, in.GrantTokens != nil)
	b = binary.AppendUvarint(b, uint64(len(in.GrantTokens)))
	for _, g := range in.GrantTokens {
		b = appendString(b, g)
	}
	b = appendPresent(b, in.DryRun != nil)
	b = appendPresent(b, aws.ToBool(in.DryRun))
	b = appendPresent(b, in.DryRunModifiers != nil)
	b = binary.AppendUvarint(b, uint64(len(in.DryRunModifiers)))
	for _, m := range in.DryRunModifiers {
		b = appendString(b, string(m))
	}
	return sha256.Sum256(b), b
}

// credsFingerprint identifies the credentials by their access key id and
// session token: AWS names a key pair by its access key id, and STS gives
// every session its own (STS API reference, Credentials), so a refresh
// from IMDS, a push or a restart with other credentials changes it. The
// secret access key is not part of it; the SHA-256 of the session token
// tells nothing about the token.
func credsFingerprint(c aws.Credentials, scratch []byte) (credsID, []byte) {
	b := append(scratch[:0], credsIDDomain...)
	b = appendString(b, c.AccessKeyID)
	b = appendString(b, c.SessionToken)
	id := sha256.Sum256(b)
	clear(b)
	return id, b
}

func appendPresent(b []byte, present bool) []byte {
	if present {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}
