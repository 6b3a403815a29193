package cms

import "errors"

// Sentinel error kinds. Every error returned by Parse, Decrypt and
// (*Envelope).Decrypt is an *Error whose Kind is one of these, so callers can
// branch with errors.Is(err, cms.ErrTruncated) and friends.
var (
	// ErrTruncated: the input ends before the structure it announces.
	ErrTruncated = errors.New("truncated envelope")
	// ErrTrailingData: bytes follow the end of the envelope.
	ErrTrailingData = errors.New("trailing data after envelope")
	// ErrTooLarge: the envelope, its encrypted content or its plaintext is over
	// MaxEnvelopeSize, MaxPlaintext or a length the encoding allows.
	ErrTooLarge = errors.New("envelope too large")
	// ErrTooDeep: elements are nested deeper than MaxDepth.
	ErrTooDeep = errors.New("envelope nested too deeply")
	// ErrTooManyChunks: a constructed element (in practice the chunked
	// encrypted content) holds more than MaxChunks elements.
	ErrTooManyChunks = errors.New("too many chunks in envelope")
	// ErrMalformed: the bytes are not valid BER/DER or not the RFC 5652 grammar.
	ErrMalformed = errors.New("malformed envelope")
	// ErrUnsupported: valid CMS, but not the shape KMS emits (a version, a
	// second recipient, an algorithm or parameter other than RSAES-OAEP
	// SHA-256/MGF1-SHA-256 and AES-256-CBC with a 16-byte IV, ...).
	ErrUnsupported = errors.New("unsupported envelope")
	// ErrNoMatchingKey: none of the offered keys is the envelope's recipient.
	ErrNoMatchingKey = errors.New("no matching key")
	// ErrKeyDecrypt: RSA-OAEP decryption of the content-encryption key failed
	// (wrong key, or a damaged encrypted key).
	ErrKeyDecrypt = errors.New("failed to decrypt content-encryption key")
	// ErrBadPadding: the decrypted content does not end in valid PKCS #7
	// padding (damaged ciphertext, IV or content-encryption key).
	ErrBadPadding = errors.New("bad padding")
)

// Error is the error type of this package. Kind is one of the Err* sentinels
// (errors.Is matches it); Reason says what was found, naming structure fields,
// sizes and algorithm identifiers but never key material or plaintext.
type Error struct {
	Kind   error
	Reason string
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return "cms: " + e.Kind.Error()
	}
	return "cms: " + e.Kind.Error() + ": " + e.Reason
}

// Unwrap returns Kind, so that errors.Is(err, ErrTruncated) works.
func (e *Error) Unwrap() error { return e.Kind }

func newError(kind error, reason string) *Error {
	return &Error{Kind: kind, Reason: reason}
}
