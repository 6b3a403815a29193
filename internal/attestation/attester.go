package attestation

import (
	"context"
	"fmt"
)

// Attester produces attestation documents.
//
// Attest returns a new untagged COSE_Sign1 document, signed by the NSM (or
// a stand-in for it), that carries req's fields: a nil field is encoded as
// CBOR null, a non-nil empty one as an empty byte string, as NSM does. It
// refuses a request that fails req.Validate with an *Error whose check is
// CheckTooLarge, and returns ctx.Err() when ctx is done before it starts.
// Implementations are safe for concurrent use.
type Attester interface {
	Attest(ctx context.Context, req Request) ([]byte, error)
}

// Request holds the caller-chosen fields of an attestation document. None
// of them is secret: they are signed, not encrypted, and anyone holding the
// document can read them.
type Request struct {
	PublicKey []byte // e.g. the DER SubjectPublicKeyInfo KMS encrypts to
	UserData  []byte
	Nonce     []byte
}

// Validate checks the request against NSM's field limits
// (MaxPublicKeySize, MaxUserDataSize, MaxNonceSize).
func (r Request) Validate() error {
	for _, f := range []struct {
		name  string
		value []byte
		limit int
	}{
		{"public_key", r.PublicKey, MaxPublicKeySize},
		{"user_data", r.UserData, MaxUserDataSize},
		{"nonce", r.Nonce, MaxNonceSize},
	} {
		if len(f.value) > f.limit {
			return newError(CheckTooLarge, fmt.Sprintf("%s is %d bytes; NSM allows at most %d", f.name, len(f.value), f.limit), nil)
		}
	}
	return nil
}
