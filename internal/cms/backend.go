package cms

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"runtime"
)

// Backend names an implementation of the one RSA private-key operation of
// every envelope: the RSAES-OAEP unwrap of the content-encryption key.
// Everything else (BER parsing, AES-256-CBC, the padding and size checks)
// is this package's Go code whatever the backend.
type Backend string

const (
	// BackendGo is crypto/rsa: memory-safe and always present.
	BackendGo Backend = "go"
	// BackendOpenSSL is OpenSSL's libcrypto through cgo, statically linked
	// into binaries built with CGO_ENABLED=1 and -tags openssl. It is about
	// twice as fast on x86-64 (AVX-512 IFMA Montgomery multiplication).
	BackendOpenSSL Backend = "openssl"
)

// unwrapper is a backend's copy of one private key. decryptOAEP is RSAES-OAEP
// decryption with SHA-256, MGF1-SHA-256 and an empty label into a new
// buffer; it fails with an *Error of kind ErrKeyDecrypt that says nothing
// about why OAEP decoding failed (RFC 8017 section 7.1.2, note). It is safe
// for concurrent use. destroy frees and clears the backend's copy of the key;
// the caller guarantees that no decryptOAEP runs during or after it.
type unwrapper interface {
	decryptOAEP(ciphertext []byte) ([]byte, error)
	destroy()
}

// backendImpl is one linked backend.
type backendImpl struct {
	name Backend
	// version describes the implementation, e.g. "OpenSSL 3.0.22 1 Jul 2025".
	version func() string
	// load hands priv to the backend. It may read priv but not keep it,
	// except the Go backend, whose copy is priv itself.
	load func(priv *rsa.PrivateKey) (unwrapper, error)
}

// backends holds the linked backends, the default first: backend_openssl.go
// puts OpenSSL in front when it is built.
var backends = []backendImpl{{
	name:    BackendGo,
	version: func() string { return "crypto/rsa " + runtime.Version() },
	load:    func(priv *rsa.PrivateKey) (unwrapper, error) { return goUnwrapper{priv}, nil },
}}

// DefaultBackend is the backend NewKey and Decrypt use: BackendOpenSSL in
// binaries built with it (CGO_ENABLED=1, -tags openssl), BackendGo otherwise.
func DefaultBackend() Backend { return backends[0].name }

// Backends lists the backends linked into this binary, the default first.
func Backends() []Backend {
	out := make([]Backend, len(backends))
	for i, b := range backends {
		out[i] = b.name
	}
	return out
}

// BackendVersion describes a linked backend's implementation: the Go
// release for BackendGo, the libcrypto version for BackendOpenSSL. It is ""
// for a backend this binary does not have.
func BackendVersion(b Backend) string {
	if impl, ok := lookupBackend(b); ok {
		return impl.version()
	}
	return ""
}

func lookupBackend(b Backend) (backendImpl, bool) {
	for _, impl := range backends {
		if impl.name == b {
			return impl, true
		}
	}
	return backendImpl{}, false
}

// goUnwrapper is the crypto/rsa backend. Its key is the caller's
// *rsa.PrivateKey itself: nothing to free, and Key.Destroy clears it.
type goUnwrapper struct{ priv *rsa.PrivateKey }

func (g goUnwrapper) decryptOAEP(ciphertext []byte) ([]byte, error) {
	cek, err := rsa.DecryptOAEP(sha256.New(), nil, g.priv, ciphertext, nil)
	if err != nil {
		// crypto/rsa returns one error for every OAEP failure, on purpose.
		return nil, errOAEP
	}
	return cek, nil
}

func (goUnwrapper) destroy() {}

// errOAEP is the one error of every failed RSA-OAEP decryption, whatever the
// backend and whatever the cause.
var errOAEP = &Error{Kind: ErrKeyDecrypt, Reason: "RSA-OAEP decryption failed: wrong key or damaged encrypted key"}

// pairwiseCheck decrypts, with u, a random content-encryption key that
// crypto/rsa encrypted to pub, so that a key the backend misread (a wrong
// component, a wrong byte order) fails when it is made and not on the first
// request. It costs one public and one private operation per key.
func pairwiseCheck(pub *rsa.PublicKey, u unwrapper) error {
	var probe [contentKeySize]byte
	if _, err := rand.Read(probe[:]); err != nil {
		return fmt.Errorf("cms: failed to make the key's self-test: %w", err)
	}
	defer clear(probe[:])
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, probe[:], nil)
	if err != nil {
		return fmt.Errorf("cms: failed to make the key's self-test: %w", err)
	}
	got, err := u.decryptOAEP(ct)
	if err != nil {
		return fmt.Errorf("cms: the key failed its self-test: %w", err)
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, probe[:]) != 1 {
		return fmt.Errorf("cms: the key failed its self-test: it decrypted to other bytes")
	}
	return nil
}
