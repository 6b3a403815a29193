package cms_test

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/cms/internal/testvectors"
)

func readTestdata(tb testing.TB, rel string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(rel)))
	if err != nil {
		tb.Fatalf("failed to read committed vector file: %v", err)
	}
	return b
}

func parseKey(tb testing.TB, pemBytes []byte) *rsa.PrivateKey {
	tb.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		tb.Fatal("no PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatalf("failed to parse key: %v", err)
	}
	return k
}

// TestVectors decrypts every committed vector with its key.
func TestVectors(t *testing.T) {
	var manifest []testvectors.Vector
	if err := json.Unmarshal(readTestdata(t, testvectors.Manifest), &manifest); err != nil {
		t.Fatalf("failed to decode manifest: %v", err)
	}
	if len(manifest) == 0 {
		t.Fatal("manifest lists no vectors")
	}
	for _, v := range manifest {
		t.Run(v.Name, func(t *testing.T) {
			key := parseKey(t, readTestdata(t, v.Key))
			env := readTestdata(t, v.Envelope)
			want := readTestdata(t, v.Plaintext)
			got, err := cms.Decrypt(env, key)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Decrypt = %d bytes, want %d (%s)", len(got), len(want), v.Comment)
			}
		})
	}
}

// TestVectorsRegenerate regenerates the vectors from the committed keys and
// compares them with the committed files byte for byte, and checks that
// testdata holds nothing the generator does not write.
// TestVectorKeysRegenerate covers the keys.
func TestVectorsRegenerate(t *testing.T) {
	keys := map[int]*rsa.PrivateKey{}
	for _, bits := range testvectors.KeyBits {
		keys[bits] = parseKey(t, readTestdata(t, testvectors.KeyPath(bits)))
	}
	files, err := testvectors.Generate(keys)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	generated := map[string]bool{}
	for _, f := range files {
		generated[f.Path] = true
		if got := readTestdata(t, f.Path); !bytes.Equal(got, f.Data) {
			t.Errorf("%s differs from the generator's output; run go generate ./internal/cms", f.Path)
		}
	}
	err = filepath.WalkDir("testdata", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel("testdata", p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		// fuzz/ holds fuzz corpora; real/ holds real envelopes
		// (TestEveryRealFileCovered).
		if !generated[rel] && !strings.HasPrefix(rel, "fuzz/") && !strings.HasPrefix(rel, "real/") {
			t.Errorf("testdata/%s is not written by the generator", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("failed to walk testdata: %v", err)
	}
}

// TestVectorKeysRegenerate derives the committed keys again from their seeds
// (a prime search of a few seconds for RSA-4096; with -short only RSA-2048).
func TestVectorKeysRegenerate(t *testing.T) {
	for _, bits := range testvectors.KeyBits {
		if testing.Short() && bits != 2048 {
			continue
		}
		t.Run(fmt.Sprintf("RSA-%d", bits), func(t *testing.T) {
			t.Parallel()
			k, err := testvectors.Key(bits)
			if err != nil {
				t.Fatalf("Key: %v", err)
			}
			if !k.Equal(parseKey(t, readTestdata(t, testvectors.KeyPath(bits)))) {
				t.Errorf("derived RSA-%d key differs from %s; run go generate ./internal/cms", bits, testvectors.KeyPath(bits))
			}
		})
	}
}
