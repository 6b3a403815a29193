package cms

import (
	"crypto/aes"
	"encoding/json"
	"testing"
)

// FuzzParse checks that Parse never panics, returns only typed errors, and
// that every Envelope it returns keeps the invariants Decrypt and the inspect
// output rely on.
func FuzzParse(f *testing.F) {
	for _, s := range berSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := Parse(in)
		checkTyped(t, err)
		if err != nil {
			if e != nil {
				t.Fatal("Parse returned an Envelope with its error")
			}
			return
		}
		n := len(e.EncryptedContent)
		switch {
		case e.Size != len(in):
			t.Fatalf("Size %d, input %d bytes", e.Size, len(in))
		case len(e.IV) != aes.BlockSize:
			t.Fatalf("IV of %d bytes", len(e.IV))
		case n == 0 || n%aes.BlockSize != 0 || n > MaxEncryptedContent:
			t.Fatalf("encrypted content of %d bytes", n)
		case !supportedKeySize(len(e.EncryptedKey)):
			t.Fatalf("encrypted key of %d bytes", len(e.EncryptedKey))
		case e.Chunks != len(e.ChunkSizes) || e.Chunks > MaxChunks:
			t.Fatalf("%d chunks, %d sizes", e.Chunks, len(e.ChunkSizes))
		case e.KeyEncryption.Hash != nameSHA256 || e.KeyEncryption.MGFHash != nameSHA256 || e.ContentEncryption != nameAES256CBC:
			t.Fatalf("accepted algorithms %+v, %s", e.KeyEncryption, e.ContentEncryption)
		}
		if _, err := json.Marshal(e); err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		if e.Summary() == "" {
			t.Fatal("empty Summary")
		}
	})
}

// FuzzDecrypt runs the whole decryption with the committed RSA-2048 key, the
// recipient of most seeds, so mutations reach the RSA, AES and padding steps.
func FuzzDecrypt(f *testing.F) {
	for _, s := range berSeeds(f) {
		f.Add(s)
	}
	key := testKey(f, 2048)
	f.Fuzz(func(t *testing.T, in []byte) {
		plaintext, err := Decrypt(in, key)
		checkTyped(t, err)
		if err != nil && plaintext != nil {
			t.Fatal("Decrypt returned a plaintext with its error")
		}
		if len(plaintext) > MaxPlaintext {
			t.Fatalf("plaintext of %d bytes", len(plaintext))
		}
	})
}
