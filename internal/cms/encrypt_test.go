package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// boundarySizes are the plaintext sizes around padding and chunk
// boundaries: block edges, the ciphertext of exactly two KMS chunks (2000
// bytes), and the KMS maximum.
var boundarySizes = []int{0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 983, 984, 999, 1000, 1001, 1983, 1984, 1999, 2000, 2015, 2016, 3983, 3984, 4079, 4080, 4095, 4096}

// TestRoundTrip encrypts every plaintext size from 0 to 4096 bytes for
// RSA-2048, -3072 and -4096 keys and decrypts it again. The RSA-OAEP step does
// not depend on the plaintext, so for every size Encrypt reads the same
// content-encryption key and OAEP seed (from a fixed stream) and the test
// unwraps that key once; the whole of Decrypt, RSA included, runs on the
// sizes around every block and chunk boundary.
func TestRoundTrip(t *testing.T) {
	plaintext := make([]byte, MaxPlaintext)
	if _, err := rand.Read(plaintext); err != nil {
		t.Fatal(err)
	}
	stream := func() io.Reader { return bytes.NewReader(bytes.Repeat([]byte{0xa5, 0x3c}, 64)) }
	for _, bits := range []int{2048, 3072, 4096} {
		t.Run(fmt.Sprintf("RSA-%d", bits), func(t *testing.T) {
			t.Parallel()
			key := testKey(t, bits)
			first, err := Encrypt(stream(), &key.PublicKey, nil)
			if err != nil {
				t.Fatal(err)
			}
			e0, err := Parse(first)
			if err != nil {
				t.Fatal(err)
			}
			k, err := NewKey(key)
			if err != nil {
				t.Fatal(err)
			}
			cek, err := e0.unwrapKey(k)
			if err != nil {
				t.Fatalf("unwrapKey: %v", err)
			}

			for n := 0; n <= MaxPlaintext; n++ {
				want := plaintext[:n]
				env, err := Encrypt(stream(), &key.PublicKey, want)
				if err != nil {
					t.Fatalf("size %d: Encrypt: %v", n, err)
				}
				e, err := Parse(env)
				if err != nil {
					t.Fatalf("size %d: Parse: %v", n, err)
				}
				if !bytes.Equal(e.EncryptedKey, e0.EncryptedKey) {
					t.Fatalf("size %d: the same random stream gave another encrypted key", n)
				}
				got, err := e.decryptContent(cek, false)
				if err != nil {
					t.Fatalf("size %d: decryptContent: %v", n, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d: plaintext differs", n)
				}
				ct := (n/16 + 1) * 16
				if len(e.EncryptedContent) != ct || len(e.EncryptedKey) != bits/8 || e.Chunks != (ct+KMSChunkSize-1)/KMSChunkSize {
					t.Fatalf("size %d: %d-byte content in %d chunks, %d-byte key", n, len(e.EncryptedContent), e.Chunks, len(e.EncryptedKey))
				}
				if lo, hi := e.PlaintextSize(); n < lo || n > hi {
					t.Fatalf("size %d: PlaintextSize = %d..%d", n, lo, hi)
				}
			}

			for _, n := range boundarySizes {
				want := plaintext[:n]
				env := mustEncrypt(t, &key.PublicKey, want)
				got, err := Decrypt(env, mustOtherKey(t), key)
				if err != nil {
					t.Fatalf("size %d: Decrypt: %v", n, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d: Decrypt: plaintext differs", n)
				}
			}
		})
	}
}

// skeleton describes the layout of an element tree: identifier octets,
// length forms and sizes of every element, and the contents of every
// primitive element except the values that depend on the key, the random
// content-encryption key and IV, and the plaintext (recipient identifier,
// encrypted key, IV, ciphertext chunks), which appear as their size only.
func skeleton(tb testing.TB, root *berNode) []string {
	tb.Helper()
	variable := map[string]bool{
		fmt.Sprint(pathRecipientID):  true,
		fmt.Sprint(pathEncryptedKey): true,
		fmt.Sprint(pathIV):           true,
	}
	var lines []string
	var walk func(n *berNode, path []int)
	walk = func(n *berNode, path []int) {
		form := fmt.Sprintf("definite %d", n.contentsLen())
		if n.indefinite {
			form = "indefinite"
		}
		value := ""
		if !n.constructed() {
			isChunk := len(path) == len(pathContent)+1 && slices.Equal(path[:len(pathContent)], pathContent)
			if variable[fmt.Sprint(path)] || isChunk || slices.Equal(path, pathContent) {
				value = fmt.Sprintf("<%d variable bytes>", len(n.value))
			} else {
				value = hexOf(n.value)
			}
		}
		lines = append(lines, fmt.Sprintf("%s%02x %s %s", strings.Repeat("  ", len(path)), n.tag, form, value))
		for i := range n.children {
			walk(&n.children[i], append(slices.Clone(path), i))
		}
	}
	walk(root, nil)
	return lines
}

// maskVariable zeroes the values skeleton treats as variable, in place.
func maskVariable(tb testing.TB, root *berNode) {
	tb.Helper()
	zero := func(n *berNode) { n.value = make([]byte, len(n.value)) }
	zero(at(tb, root, pathRecipientID))
	zero(at(tb, root, pathEncryptedKey))
	zero(at(tb, root, pathIV))
	content := at(tb, root, pathContent)
	if !content.constructed() {
		zero(content)
	}
	for i := range content.children {
		zero(&content.children[i])
	}
}

// TestEncryptMatchesKMSLayout compares Encrypt's output with real KMS
// envelopes of the same plaintext size and key size: the element skeletons
// must be identical, and so must the bytes once the recipient identifier,
// encrypted key, IV and ciphertext are zeroed in both.
func TestEncryptMatchesKMSLayout(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		plaintext int
	}{
		{"edgebit 32-byte data key", edgebitEnvelope, 32},
		{"csdk-1 48-byte ciphertext", "aws-nitro-enclaves-sdk-c/csdk-1.ber", 40},
		{"rustcrypto-1 16-byte ciphertext", "rustcrypto/rustcrypto-1.ber", 0},
		{"rustcrypto-4 4096-byte plaintext in 1000-byte chunks", rustcrypto4, 4096},
	}
	key := testKey(t, 2048)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			real := realFile(t, tt.file)
			ours := mustEncrypt(t, &key.PublicKey, make([]byte, tt.plaintext))
			if len(ours) != len(real) {
				t.Errorf("Encrypt wrote %d bytes, KMS %d", len(ours), len(real))
			}
			realTree, ourTree := mustTree(t, real), mustTree(t, ours)
			if diff := cmp.Diff(skeleton(t, &realTree), skeleton(t, &ourTree)); diff != "" {
				t.Fatalf("layout differs from real KMS output (-kms +Encrypt):\n%s", diff)
			}
			maskVariable(t, &realTree)
			maskVariable(t, &ourTree)
			if r, o := appendBER(nil, &realTree), appendBER(nil, &ourTree); !bytes.Equal(r, o) {
				t.Errorf("masked bytes differ:\nKMS     %x\nEncrypt %x", r, o)
			}
		})
	}
}

// TestEncryptReadsRandomInOrder checks the documented use of rand (key, IV,
// OAEP seed) and that the output depends only on it: the same stream gives
// the same envelope, as the committed vectors rely on.
func TestEncryptReadsRandomInOrder(t *testing.T) {
	key := testKey(t, 2048)
	stream := bytes.Repeat([]byte{0x5a}, 32+16+32)
	a, err := Encrypt(bytes.NewReader(stream), &key.PublicKey, []byte("hello"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	b, err := Encrypt(bytes.NewReader(stream), &key.PublicKey, []byte("hello"))
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if !bytes.Equal(a, b) {
		t.Error("same random stream, different envelopes")
	}
	e, err := Parse(a)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if want := stream[32:48]; !bytes.Equal(e.IV, want) {
		t.Errorf("IV = %x, want bytes 32..48 of the stream %x", []byte(e.IV), want)
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("entropy exhausted")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestEncryptErrors(t *testing.T) {
	key := testKey(t, 2048)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		rand      io.Reader
		pub       *rsa.PublicKey
		plaintext []byte
		wantKind  error  // a cms sentinel, or nil for a plain error
		wantText  string // substring of the message
	}{
		{"plaintext over MaxPlaintext", nil, &key.PublicKey, make([]byte, MaxPlaintext+1), ErrTooLarge, "4097 bytes"},
		{"RSA-1024", nil, &small.PublicKey, nil, ErrUnsupported, "1024 bits"},
		{"no key", nil, nil, nil, nil, "no public key"},
		{"random fails for the content key", &failingReader{n: 10}, &key.PublicKey, nil, nil, "failed to generate content-encryption key"},
		{"random fails for the IV", &failingReader{n: 40}, &key.PublicKey, nil, nil, "failed to generate IV"},
		{"random fails for the OAEP seed", &failingReader{n: 48}, &key.PublicKey, nil, nil, "failed to encrypt content-encryption key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Encrypt(tt.rand, tt.pub, tt.plaintext)
			if err == nil {
				t.Fatal("Encrypt succeeded")
			}
			if tt.wantKind != nil && !isKind(err, tt.wantKind) {
				t.Errorf("error %v, want kind %v", err, tt.wantKind)
			}
			if !strings.HasPrefix(err.Error(), "cms: ") || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q, want prefix \"cms: \" and %q", err, tt.wantText)
			}
		})
	}
}

// TestEncryptAtPlaintextLimit: exactly MaxPlaintext bytes is accepted, one
// more is refused (TestEncryptErrors), and an envelope carrying more than
// MaxPlaintext is refused by Decrypt and, past the padded size, by Parse.
func TestEncryptAtPlaintextLimit(t *testing.T) {
	key := testKey(t, 2048)
	for _, tt := range []struct {
		name     string
		size     int
		wantKind error
	}{
		{"at the limit", MaxPlaintext, nil},
		{"one past: same ciphertext size, refused after decryption", MaxPlaintext + 1, ErrTooLarge},
		{"padding block past: ciphertext over MaxEncryptedContent, refused by Parse", MaxEncryptedContent, ErrTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := bytes.Repeat([]byte{7}, tt.size)
			env, err := seal(nil, &key.PublicKey, want)
			if err != nil {
				t.Fatalf("seal: %v", err)
			}
			got, err := Decrypt(env, key)
			if tt.wantKind == nil {
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("Decrypt: %v", err)
				}
				return
			}
			if !isKind(err, tt.wantKind) {
				t.Errorf("Decrypt error %v, want %v", err, tt.wantKind)
			}
			if got != nil {
				t.Error("Decrypt returned a plaintext with its error")
			}
		})
	}
}

func TestRecipientKeyID(t *testing.T) {
	if _, err := RecipientKeyID(nil); err == nil {
		t.Error("RecipientKeyID(nil) succeeded")
	}
	if _, err := RecipientKeyID(&rsa.PublicKey{}); err == nil {
		t.Error("RecipientKeyID(empty key) succeeded")
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	// Moduli with and without the top bit of their first byte set, and
	// exponents whose DER INTEGER needs a leading zero or not.
	pubs := []*rsa.PublicKey{&small.PublicKey, &mustOtherKey(t).PublicKey,
		{N: new(big.Int).Rsh(small.N, 1), E: 65537}, {N: new(big.Int).Rsh(small.N, 4), E: 65537},
		{N: small.N, E: 3}, {N: small.N, E: 255}, {N: small.N, E: 0x8001}, {N: small.N, E: 1<<31 - 1}}
	for _, bits := range []int{2048, 3072, 4096} {
		pubs = append(pubs, &testKey(t, bits).PublicKey)
	}
	for _, pub := range pubs {
		// The SubjectPublicKeyInfo must be exactly what crypto/x509 writes.
		spki, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(spki)
		id, err := RecipientKeyID(pub)
		if err != nil || !bytes.Equal(id, want[:]) {
			t.Errorf("RSA-%d, e=%d: RecipientKeyID = %x, %v; want %x", pub.N.BitLen(), pub.E, id, err, want)
		}
	}
	for _, bits := range []int{2048, 3072, 4096} {
		key := testKey(t, bits)
		id, _ := RecipientKeyID(&key.PublicKey)
		e, err := Parse(mustEncrypt(t, &key.PublicKey, nil))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(e.RecipientID, id) || !e.MatchesKey(&key.PublicKey) || e.MatchesKey(&mustOtherKey(t).PublicKey) {
			t.Errorf("RSA-%d: envelope identifier %x, RecipientKeyID %x", bits, []byte(e.RecipientID), id)
		}
		k, err := NewKey(key)
		if err != nil || !bytes.Equal(k.ID(), id) {
			t.Errorf("RSA-%d: NewKey: %v, ID %x", bits, err, k.ID())
		}
	}
	if _, err := NewKey(nil); err == nil {
		t.Error("NewKey(nil) succeeded")
	}
}

// TestDecryptWithKeys: precomputed keys decrypt like Decrypt, from many
// goroutines at once (run with -race), and refuse what Decrypt refuses.
func TestDecryptWithKeys(t *testing.T) {
	current, err := NewKey(testKey(t, 2048))
	if err != nil {
		t.Fatal(err)
	}
	previous, err := NewKey(testKey(t, 3072))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewKey(mustOtherKey(t))
	if err != nil {
		t.Fatal(err)
	}
	envCurrent, want := readVector(t, "rsa2048-32")
	envPrevious, wantPrevious := readVector(t, "rsa3072-32")

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 4 {
				got, err := DecryptWithKeys(envCurrent, previous, current)
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("current: %x, %v", got, err)
					return
				}
				got, err = DecryptWithKeys(envPrevious, current, nil, previous)
				if err != nil || !bytes.Equal(got, wantPrevious) {
					errs <- fmt.Errorf("previous: %x, %v", got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if _, err := DecryptWithKeys(envCurrent, other, previous); !isKind(err, ErrNoMatchingKey) {
		t.Errorf("other keys: error %v, want ErrNoMatchingKey", err)
	}
	if _, err := DecryptWithKeys(envCurrent[:100], current); !isKind(err, ErrTruncated) {
		t.Errorf("truncated: error %v, want ErrTruncated", err)
	}
	openssl := realFile(t, opensslIndef)
	osslKey, err := NewKey(readKey(t, realFile(t, opensslKey)))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecryptWithKeys(openssl, other, osslKey); err != nil || !bytes.Equal(got, realFile(t, opensslPlain)) {
		t.Errorf("OpenSSL envelope: %x, %v", got, err)
	}
}
