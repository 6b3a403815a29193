// Package testvectors generates the committed envelope vectors in
// internal/cms/testdata deterministically, so anyone can regenerate them and
// get the same bytes (`go generate ./internal/cms`) and the tests can check
// that they do.
//
// Everything is derived from fixed seeds through ChaCha8 (math/rand/v2): the
// RSA keys (a plain prime search with math/big, because crypto/rsa.GenerateKey
// ignores a caller's random source since Go 1.26 and does not promise a
// stable algorithm), the plaintexts, and the randomness cms.Encrypt consumes
// (content-encryption key, IV, OAEP seed). These keys are public test keys:
// never use them for anything else.
package testvectors

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"path"

	"github.com/enclavekit/kmsproxy/internal/cms"
)

// Manifest is the name of the JSON file listing the vectors.
const Manifest = "vectors.json"

// Vector is one entry of the manifest. Paths are relative to the testdata
// folder and use forward slashes.
type Vector struct {
	Name      string `json:"name"`
	Key       string `json:"key"`
	Envelope  string `json:"envelope"`
	Plaintext string `json:"plaintext"`
	Comment   string `json:"comment"`
}

// File is one generated file.
type File struct {
	Path string // relative to the testdata folder, forward slashes
	Data []byte
}

// KeyBits are the RSA sizes kmsproxyd supports (--key-bits).
var KeyBits = []int{2048, 3072, 4096}

type spec struct {
	bits    int
	size    int
	comment string
}

var specs = []spec{
	{2048, 0, "empty plaintext: one block of padding"},
	{2048, 1, "one byte"},
	{2048, 16, "one full block: a whole block of padding follows"},
	{2048, 32, "GenerateDataKey's 32-byte AES-256 data key, like kms-real/edgebit"},
	{2048, 1999, "ciphertext exactly 2000 bytes: two full KMS chunks"},
	{2048, 2000, "ciphertext 2016 bytes: chunks of 1000, 1000 and 16"},
	{2048, 4096, "largest KMS plaintext: chunks of 1000 x4 and 112, like kms-parse-only/rustcrypto-4"},
	{3072, 32, "RSA-3072 recipient"},
	{3072, 4096, "RSA-3072 recipient, largest plaintext"},
	{4096, 32, "RSA-4096 recipient"},
	{4096, 4096, "RSA-4096 recipient, largest plaintext"},
}

// KeyPath returns the manifest path of the key of the given size.
func KeyPath(bits int) string { return fmt.Sprintf("keys/rsa-%d.pem", bits) }

// Stream returns the deterministic random stream for label.
func Stream(label string) *rand.ChaCha8 {
	return rand.NewChaCha8(sha256.Sum256([]byte("kmsproxy internal/cms test vectors: " + label)))
}

// Key derives the RSA key of the given size from a fixed seed.
func Key(bits int) (*rsa.PrivateKey, error) {
	r := Stream(fmt.Sprintf("rsa-%d key", bits))
	e := big.NewInt(65537)
	one := big.NewInt(1)
	for range 100 {
		p, q := prime(r, bits/2), prime(r, bits/2)
		if p.Cmp(q) == 0 {
			continue
		}
		n := new(big.Int).Mul(p, q)
		if n.BitLen() != bits {
			continue
		}
		pm1 := new(big.Int).Sub(p, one)
		qm1 := new(big.Int).Sub(q, one)
		d := new(big.Int).ModInverse(e, new(big.Int).Mul(pm1, qm1))
		if d == nil {
			continue
		}
		k := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 65537}, D: d, Primes: []*big.Int{p, q}}
		if err := k.Validate(); err != nil {
			return nil, fmt.Errorf("failed to validate derived RSA-%d key: %w", bits, err)
		}
		k.Precompute()
		return k, nil
	}
	return nil, errors.New("failed to derive an RSA key in 100 attempts")
}

// prime returns the first probable prime of the given size drawn from r, with
// its two top bits set so that the product of two has the full size.
func prime(r *rand.ChaCha8, bits int) *big.Int {
	buf := make([]byte, bits/8)
	p := new(big.Int)
	for {
		_, _ = r.Read(buf) // ChaCha8.Read never fails
		buf[0] |= 0xc0
		buf[len(buf)-1] |= 1
		p.SetBytes(buf)
		if p.ProbablyPrime(20) {
			return p
		}
	}
}

// Generate returns every file of the testdata folder: the keys, each
// vector's envelope and plaintext, and the manifest. keys supplies the keys
// by size; nil entries are derived with Key (slow for RSA-4096).
func Generate(keys map[int]*rsa.PrivateKey) ([]File, error) {
	var files []File
	use := make(map[int]*rsa.PrivateKey, len(KeyBits))
	for _, bits := range KeyBits {
		k := keys[bits]
		if k == nil {
			var err error
			if k, err = Key(bits); err != nil {
				return nil, err
			}
		}
		use[bits] = k
		der := x509.MarshalPKCS1PrivateKey(k)
		files = append(files, File{KeyPath(bits), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})})
	}

	var manifest []Vector
	for _, s := range specs {
		name := fmt.Sprintf("rsa%d-%d", s.bits, s.size)
		r := Stream(name)
		plaintext := make([]byte, s.size)
		_, _ = r.Read(plaintext)
		env, err := cms.Encrypt(r, &use[s.bits].PublicKey, plaintext)
		if err != nil {
			return nil, fmt.Errorf("failed to encrypt vector %s: %w", name, err)
		}
		v := Vector{
			Name:      name,
			Key:       KeyPath(s.bits),
			Envelope:  path.Join("vectors", name+".ber"),
			Plaintext: path.Join("vectors", name+".bin"),
			Comment:   s.comment,
		}
		manifest = append(manifest, v)
		files = append(files, File{v.Envelope, env}, File{v.Plaintext, plaintext})
	}
	m, err := json.MarshalIndent(manifest, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("failed to encode manifest: %w", err)
	}
	files = append(files, File{Manifest, append(m, '\n')})
	return files, nil
}
