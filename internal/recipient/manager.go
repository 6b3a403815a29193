// Package recipient owns the enclave's recipient identity: the RSA key pair
// whose public half kmsproxyd puts in every attestation document it sends to
// KMS, and those attestation documents.
//
// KMS encrypts what it returns to an attested caller (CiphertextForRecipient)
// under the public key in the attestation document, so the private key is
// the one secret that turns KMS's answers into plaintext. The Manager keeps
// exactly one current key, generated before the daemon serves, pre-generates
// its successor in the background, and rotates on a timer. A rotated-out key
// stays usable until the requests that acquired it have ended, so rotation
// never fails a request in flight. Attestation documents are reused for
// AttestationTTL and refreshed ahead of expiry so that the NSM is not on the
// request path.
//
// Private keys never leave process memory; this package does not log.
package recipient

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
)

// refreshFraction is how far into AttestationTTL the background refresh
// replaces a document (at 80 % of its life), so requests never wait on the
// NSM while the NSM works.
const refreshFraction = 0.8

// retryDelay is the pause before retrying a failed background key
// generation or attestation.
const retryDelay = time.Second

// Config configures a Manager.
type Config struct {
	// Attester produces attestation documents (the NSM, or the simulator in
	// development builds).
	Attester attestation.Attester
	// Bits is the RSA modulus size: 2048, 3072 or 4096 (the sizes KMS
	// accepts in an attestation document; AWS documents 2048).
	Bits int
	// Rotation replaces the key this often; 0 never rotates.
	Rotation time.Duration
	// AttestationTTL reuses a document this long; 0 attests every request.
	AttestationTTL time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Events, if set, is told about key rotations and attestations (for
	// metrics and logs in the caller). It must not block. SetEvents
	// replaces it later.
	Events Events
}

// Events receives notifications from a Manager. Any field may be nil.
type Events struct {
	// Attested is called after each NSM attestation with its duration.
	Attested func(d time.Duration, err error)
	// Rotated is called after the current key changed, with the new key's
	// fingerprint.
	Rotated func(fingerprint string)
	// KeyGenerated is called after a key was generated, with its duration.
	KeyGenerated func(d time.Duration, err error)
}

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("recipient: manager closed")

// Manager holds the current recipient key, its pre-generated successor and
// the keys rotated out while requests still use them. It is safe for
// concurrent use.
type Manager struct {
	cfg Config

	mu      sync.Mutex
	current *key
	next    *key              // pre-generated successor; nil until ready
	retired map[[32]byte]*key // rotated out, leases outstanding
	closed  bool

	nextReady chan struct{} // signalled when next becomes non-nil
	kick      chan struct{} // wakes the background loop (rotation, refresh)

	events      atomic.Pointer[Events]
	rotations   atomic.Int64
	lastAttErr  atomic.Pointer[string]
	lastPCRs    atomic.Pointer[map[int][]byte]
	lastKind    atomic.Int64 // attestation.Kind of the last document
	lastAttTime atomic.Pointer[time.Time]
}

// key is one RSA key pair with its identifier and cached document.
type key struct {
	priv        *rsa.PrivateKey
	ckey        *cms.Key // priv with its envelope identifier, for decryption
	spki        []byte
	id          [32]byte // SHA-256 of the DER SubjectPublicKeyInfo, as KMS writes it
	fingerprint string
	created     time.Time

	inflight atomic.Int64
	retired  atomic.Bool
	dropped  atomic.Bool

	docMu   sync.Mutex
	doc     []byte
	docAt   time.Time
	pending chan struct{} // non-nil while one goroutine attests for this key
	pendErr error
}

// New generates the first key and, when documents are reused, its first
// attestation document, so the Manager is ready when New returns. Call Run
// to pre-generate the next key, rotate and refresh in the background.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Attester == nil {
		return nil, errors.New("recipient: no attester")
	}
	switch cfg.Bits {
	case 2048, 3072, 4096:
	default:
		return nil, fmt.Errorf("recipient: key size %d is not 2048, 3072 or 4096", cfg.Bits)
	}
	if cfg.Rotation < 0 || cfg.AttestationTTL < 0 {
		return nil, errors.New("recipient: negative rotation or attestation TTL")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Manager{
		cfg:       cfg,
		retired:   make(map[[32]byte]*key),
		nextReady: make(chan struct{}, 1),
		kick:      make(chan struct{}, 1),
	}
	m.events.Store(&cfg.Events)
	k, err := m.generate()
	if err != nil {
		return nil, err
	}
	// Attest once even when every request will attest anew: a daemon whose
	// NSM cannot attest is not ready, and start-up is the place to say so.
	if _, err := m.attest(ctx, k); err != nil {
		return nil, err
	}
	m.current = k
	return m, nil
}

func (m *Manager) generate() (*key, error) {
	start := time.Now()
	priv, err := rsa.GenerateKey(rand.Reader, m.cfg.Bits)
	if ev := m.events.Load().KeyGenerated; ev != nil {
		ev(time.Since(start), err)
	}
	if err != nil {
		return nil, fmt.Errorf("recipient: failed to generate RSA-%d key: %w", m.cfg.Bits, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("recipient: failed to encode public key: %w", err)
	}
	id := sha256.Sum256(spki)
	ckey, err := cms.NewKey(priv)
	if err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	return &key{
		priv:        priv,
		ckey:        ckey,
		spki:        spki,
		id:          id,
		fingerprint: hex.EncodeToString(id[:]),
		created:     m.cfg.Now(),
	}, nil
}

// attest asks the NSM for a document binding k's public key and caches it
// when documents are reused.
func (m *Manager) attest(ctx context.Context, k *key) ([]byte, error) {
	start := time.Now()
	doc, err := m.cfg.Attester.Attest(ctx, attestation.Request{PublicKey: k.spki})
	if ev := m.events.Load().Attested; ev != nil {
		ev(time.Since(start), err)
	}
	if err != nil {
		msg := err.Error()
		m.lastAttErr.Store(&msg)
		return nil, fmt.Errorf("attestation: failed to get a document from the NSM: %w", err)
	}
	d, err := recipientDocument(doc, k.spki)
	if err != nil {
		// Not cached: the key's previous document, if any, stays in use.
		msg := err.Error()
		m.lastAttErr.Store(&msg)
		return nil, fmt.Errorf("attestation: the attestation source returned an unusable document: %w", err)
	}
	m.lastAttErr.Store(nil)
	now := m.cfg.Now()
	m.lastAttTime.Store(&now)
	pcrs := d.Measurements()
	m.lastPCRs.Store(&pcrs)
	m.lastKind.Store(int64(d.Kind))
	if m.cfg.AttestationTTL > 0 {
		k.docMu.Lock()
		k.doc, k.docAt = doc, now
		k.docMu.Unlock()
	}
	return doc, nil
}

// recipientDocument checks a document the attestation source returned
// before it goes to KMS as a Recipient: it parses (either kind, a module
// ID of the kind's form), and its public_key is the RSA key it was asked
// to carry (attestation.RecipientKey), so KMS encrypts to a key this
// Manager holds.
func recipientDocument(doc, spki []byte) (*attestation.Document, error) {
	d, err := attestation.Parse(doc)
	if err != nil {
		return nil, err
	}
	if _, err := attestation.RecipientKey(d); err != nil {
		return nil, err
	}
	if !bytes.Equal(d.PublicKey, spki) {
		return nil, &attestation.Error{Check: attestation.CheckPublicKey, Reason: "public_key is not the recipient key that was requested"}
	}
	return d, nil
}

// document returns a document for k: the cached one while younger than
// AttestationTTL, otherwise a new one. Concurrent callers share one NSM call.
func (m *Manager) document(ctx context.Context, k *key) ([]byte, error) {
	if m.cfg.AttestationTTL == 0 {
		return m.attest(ctx, k)
	}
	for {
		k.docMu.Lock()
		if k.doc != nil && m.cfg.Now().Sub(k.docAt) < m.cfg.AttestationTTL {
			doc := k.doc
			k.docMu.Unlock()
			return doc, nil
		}
		if wait := k.pending; wait != nil {
			k.docMu.Unlock()
			select {
			case <-wait:
				k.docMu.Lock()
				err := k.pendErr
				k.docMu.Unlock()
				if err != nil {
					return nil, err
				}
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("attestation: %w", ctx.Err())
			}
		}
		done := make(chan struct{})
		k.pending = done
		k.docMu.Unlock()

		_, err := m.attest(ctx, k)

		k.docMu.Lock()
		k.pending, k.pendErr = nil, err
		k.docMu.Unlock()
		close(done)
		if err != nil {
			return nil, err
		}
	}
}

// SetEvents replaces the event hooks (kmsproxyd's metrics exist only once
// the Manager does).
func (m *Manager) SetEvents(e Events) { m.events.Store(&e) }

// Lease is a key (and its attestation document) held for one request. The
// key stays usable, even across a rotation, until Release.
type Lease struct {
	m        *Manager
	k        *key
	doc      []byte
	released atomic.Bool
}

// Acquire returns a lease on the current key with an attestation document
// for it. The caller must call Release when the request ends.
func (m *Manager) Acquire(ctx context.Context) (*Lease, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	k := m.current
	k.inflight.Add(1)
	m.mu.Unlock()

	doc, err := m.document(ctx, k)
	if err != nil {
		m.release(k)
		return nil, err
	}
	return &Lease{m: m, k: k, doc: doc}, nil
}

// Document is the attestation document to send as Recipient.AttestationDocument.
func (l *Lease) Document() []byte { return l.doc }

// Fingerprint is the hex SHA-256 of the leased key's SubjectPublicKeyInfo,
// the identifier KMS writes into the envelope.
func (l *Lease) Fingerprint() string { return l.k.fingerprint }

// Decrypt opens a CiphertextForRecipient envelope. The envelope's recipient
// identifier picks the key: normally the leased key; otherwise one of the
// keys still in use (an envelope for a key rotated out while its request
// was in flight). An identifier of another form is tried against the
// leased key.
func (l *Lease) Decrypt(envelope []byte) ([]byte, error) {
	pt, err := cms.DecryptWithKeys(envelope, l.k.ckey)
	if !errors.Is(err, cms.ErrNoMatchingKey) {
		return pt, err
	}
	others := l.m.keysInUse(l.k)
	if len(others) == 0 {
		return nil, &cms.Error{Kind: cms.ErrNoMatchingKey, Reason: "the envelope names a recipient key this enclave does not hold"}
	}
	return cms.DecryptWithKeys(envelope, others...)
}

// Release ends the lease. It is safe to call more than once.
func (l *Lease) Release() {
	if l.released.CompareAndSwap(false, true) {
		l.m.release(l.k)
	}
}

// keysInUse returns the decryption keys of the current key and the retired
// keys still leased, except skip.
func (m *Manager) keysInUse(skip *key) []*cms.Key {
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []*cms.Key
	if m.current != skip {
		keys = append(keys, m.current.ckey)
	}
	for _, k := range m.retired {
		if k != skip {
			keys = append(keys, k.ckey)
		}
	}
	return keys
}

func (m *Manager) release(k *key) {
	if k.inflight.Add(-1) == 0 && k.retired.Load() {
		m.drop(k)
	}
}

// drop forgets a retired key with no leases left and destroys its private
// key: the backend's copy is freed and cleared (OpenSSL's BN_clear_free) and
// every word of the Go key that Go lets us reach (D, the primes, Dp, Dq,
// Qinv and crypto/rsa's precomputed copy) is overwritten, by
// cms.Key.Destroy. A decryption still running with the key through another
// lease (an envelope that names it) finishes first; a later one fails
// closed with cms.ErrKeyDecrypt. Copies the Go runtime made and no longer
// references (garbage of key generation) are out of reach.
func (m *Manager) drop(k *key) {
	if !k.dropped.CompareAndSwap(false, true) {
		return
	}
	m.mu.Lock()
	delete(m.retired, k.id)
	m.mu.Unlock()
	k.ckey.Destroy()
	k.docMu.Lock()
	k.doc = nil
	k.docMu.Unlock()
}

// Rotate makes the pre-generated next key current (waiting for it if it is
// still being generated) and retires the old one once its leases end.
func (m *Manager) Rotate(ctx context.Context) error {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return ErrClosed
		}
		if n := m.next; n != nil {
			old := m.current
			m.current, m.next = n, nil
			old.retired.Store(true)
			m.retired[old.id] = old
			m.mu.Unlock()
			if old.inflight.Load() == 0 {
				m.drop(old)
			}
			m.rotations.Add(1)
			if ev := m.events.Load().Rotated; ev != nil {
				ev(n.fingerprint)
			}
			m.wake()
			return nil
		}
		m.mu.Unlock()
		m.wake()
		select {
		case <-m.nextReady:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run pre-generates the next key (and its document), rotates every Rotation
// and refreshes the current key's document ahead of expiry, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	var rotate <-chan time.Time
	if m.cfg.Rotation > 0 {
		t := time.NewTicker(m.cfg.Rotation)
		defer t.Stop()
		rotate = t.C
	}
	refresh := time.NewTimer(0)
	defer refresh.Stop()
	for {
		m.prepareNext(ctx)
		m.scheduleRefresh(refresh)
		select {
		case <-ctx.Done():
			return
		case <-rotate:
			_ = m.Rotate(ctx)
		case <-refresh.C:
			m.refreshCurrent(ctx)
		case <-m.kick:
		}
	}
}

// prepareNext generates the successor key if there is none, and attests it
// when documents are reused, so a rotation costs nothing on the request path.
func (m *Manager) prepareNext(ctx context.Context) {
	m.mu.Lock()
	have := m.next != nil
	m.mu.Unlock()
	if have {
		return
	}
	k, err := m.generate()
	if err == nil && m.cfg.AttestationTTL > 0 {
		_, err = m.attest(ctx, k)
	}
	if err != nil {
		sleep(ctx, retryDelay)
		m.wake()
		return
	}
	m.mu.Lock()
	m.next = k
	m.mu.Unlock()
	select {
	case m.nextReady <- struct{}{}:
	default:
	}
}

func (m *Manager) scheduleRefresh(t *time.Timer) {
	if m.cfg.AttestationTTL == 0 {
		t.Stop()
		return
	}
	m.mu.Lock()
	k := m.current
	m.mu.Unlock()
	k.docMu.Lock()
	at := k.docAt
	k.docMu.Unlock()
	due := at.Add(time.Duration(float64(m.cfg.AttestationTTL) * refreshFraction))
	wait := due.Sub(m.cfg.Now())
	if wait < 0 {
		wait = 0
	}
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(wait)
}

func (m *Manager) refreshCurrent(ctx context.Context) {
	m.mu.Lock()
	k := m.current
	m.mu.Unlock()
	k.docMu.Lock()
	fresh := k.doc != nil && m.cfg.Now().Sub(k.docAt) < time.Duration(float64(m.cfg.AttestationTTL)*refreshFraction)
	k.docMu.Unlock()
	if fresh {
		return
	}
	if _, err := m.attest(ctx, k); err != nil {
		sleep(ctx, retryDelay)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Close stops new leases. Keys held by outstanding leases stay usable until
// released.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
}

// Status describes the recipient key and attestation state for /readyz and
// /v1/info. It holds no secret.
type Status struct {
	Ready            bool             `json:"ready"`
	KeyFingerprint   string           `json:"key_fingerprint"` // hex SHA-256 of the SubjectPublicKeyInfo
	KeyBits          int              `json:"key_bits"`
	KeyCreated       time.Time        `json:"key_created"`
	NextKeyReady     bool             `json:"next_key_ready"`
	RetiredKeys      int              `json:"retired_keys_in_use"`
	Rotations        int64            `json:"rotations"`
	DocumentAge      string           `json:"document_age,omitempty"`
	LastAttestation  *time.Time       `json:"last_attestation,omitempty"`
	AttestationError string           `json:"attestation_error,omitempty"`
	PCRs             map[int][]byte   `json:"-"` // the last document's: an enclave's pcrs or a NitroTPM's nitrotpm_pcrs, as Kind says
	Kind             attestation.Kind `json:"-"`
}

// Status reports the current state.
func (m *Manager) Status() Status {
	m.mu.Lock()
	k := m.current
	st := Status{
		KeyFingerprint: k.fingerprint,
		KeyBits:        m.cfg.Bits,
		KeyCreated:     k.created,
		NextKeyReady:   m.next != nil,
		RetiredKeys:    len(m.retired),
		Rotations:      m.rotations.Load(),
		Ready:          !m.closed,
	}
	m.mu.Unlock()
	if m.cfg.AttestationTTL > 0 {
		k.docMu.Lock()
		if k.doc != nil {
			age := m.cfg.Now().Sub(k.docAt)
			st.DocumentAge = age.Round(time.Millisecond).String()
			if age >= m.cfg.AttestationTTL {
				st.Ready = false
			}
		} else {
			st.Ready = false
		}
		k.docMu.Unlock()
	}
	if e := m.lastAttErr.Load(); e != nil {
		st.AttestationError = *e
		if m.cfg.AttestationTTL == 0 {
			st.Ready = false
		}
	}
	st.LastAttestation = m.lastAttTime.Load()
	if p := m.lastPCRs.Load(); p != nil {
		st.PCRs = *p
	}
	st.Kind = attestation.Kind(m.lastKind.Load())
	return st
}

// PublicKeyDER returns the current key's SubjectPublicKeyInfo (DER).
func (m *Manager) PublicKeyDER() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.current.spki)
}
