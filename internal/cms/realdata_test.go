package cms

import (
	"bytes"
	"crypto/sha1"
	"crypto/x509"
	"encoding/json"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRealKMSEnvelope decrypts the envelope real AWS KMS returned
// (kms-real/edgebit) with the key it was made for.
func TestRealKMSEnvelope(t *testing.T) {
	env := realFile(t, edgebitEnvelope)
	key := readKey(t, realFile(t, edgebitKey))
	want := realFile(t, edgebitPlaintext)

	got, err := Decrypt(env, key)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Decrypt = %x, want %x", got, want)
	}

	e, err := Parse(env)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	id, err := RecipientKeyID(&key.PublicKey)
	if err != nil {
		t.Fatalf("RecipientKeyID: %v", err)
	}
	wantEnv := &Envelope{
		Size:             493,
		Encoding:         EncodingBERIndefinite,
		ContentType:      "1.2.840.113549.1.7.3",
		Version:          2,
		RecipientVersion: 2,
		RecipientIDKind:  SubjectKeyIdentifier,
		RecipientID:      id,
		KeyEncryption: KeyEncryption{
			OID: "1.2.840.113549.1.1.7", Name: "RSAES-OAEP",
			Hash: "SHA-256", HashNullParams: true,
			MGF: "MGF1", MGFHash: "SHA-256", MGFHashNullParams: true,
		},
		EncryptedKey:         Blob(env[131 : 131+256]),
		EncryptedContentType: "1.2.840.113549.1.7.1",
		ContentEncryptionOID: "2.16.840.1.101.3.4.1.42",
		ContentEncryption:    "AES-256-CBC",
		IV:                   HexBytes(env[415 : 415+16]),
		EncryptedContent:     Blob(env[435 : 435+48]),
		ContentConstructed:   true,
		Chunks:               1,
		ChunkSizes:           []int{48},
	}
	if diff := cmp.Diff(wantEnv, e); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
	if !e.MatchesKey(&key.PublicKey) {
		t.Error("MatchesKey(recipient) = false")
	}
	got, err = e.Decrypt(key)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("(*Envelope).Decrypt = %x, %v; want %x", got, err, want)
	}
}

// TestOpenSSLEnvelopes decrypts the envelopes OpenSSL 3.0 wrote with -keyid
// (a 20-byte SHA-1 subjectKeyIdentifier, so Decrypt tries each key) with and
// without -stream.
func TestOpenSSLEnvelopes(t *testing.T) {
	key := readKey(t, realFile(t, opensslKey))
	want := realFile(t, opensslPlain)
	certPEM := realFile(t, opensslCert)
	cert, err := x509.ParseCertificate(pemBlock(t, certPEM))
	if err != nil {
		t.Fatalf("failed to parse certificate: %v", err)
	}

	tests := []struct {
		name       string
		file       string
		encoding   Encoding
		chunkSizes []int
	}{
		{"definite", opensslDER, EncodingDER, []int{48}},
		{"indefinite", opensslIndef, EncodingBERIndefinite, []int{32, 16}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := realFile(t, tt.file)
			// The other key comes first: the try-each path must move on.
			got, err := Decrypt(env, mustOtherKey(t), key)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Decrypt = %x, want %x", got, want)
			}

			e, err := Parse(env)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if e.Encoding != tt.encoding {
				t.Errorf("Encoding = %q, want %q", e.Encoding, tt.encoding)
			}
			if diff := cmp.Diff(tt.chunkSizes, e.ChunkSizes); diff != "" {
				t.Errorf("ChunkSizes (-want +got):\n%s", diff)
			}
			// RFC 5280 section 4.2.1.2 method 1, as OpenSSL computes it and as
			// the certificate's own extension says.
			pkcs1 := x509.MarshalPKCS1PublicKey(&key.PublicKey)
			sum := sha1.Sum(pkcs1)
			if !bytes.Equal(e.RecipientID, sum[:]) || !bytes.Equal(e.RecipientID, cert.SubjectKeyId) {
				t.Errorf("RecipientID = %x, want SHA-1 key id %x (certificate: %x)", []byte(e.RecipientID), sum, cert.SubjectKeyId)
			}
			if e.KeyEncryption.HashNullParams || e.KeyEncryption.MGFHashNullParams {
				t.Error("OpenSSL omits NULL hash parameters, but the parse says they are present")
			}
			if e.MatchesKey(&key.PublicKey) {
				t.Error("MatchesKey = true for a SHA-1 key id")
			}
			if got, err := e.Decrypt(key); err != nil || !bytes.Equal(got, want) {
				t.Errorf("(*Envelope).Decrypt = %x, %v", got, err)
			}
			if _, err := e.Decrypt(mustOtherKey(t)); !isKind(err, ErrKeyDecrypt) {
				t.Errorf("(*Envelope).Decrypt(other key) error = %v, want ErrKeyDecrypt", err)
			}
			if _, err := Decrypt(env, mustOtherKey(t)); !isKind(err, ErrNoMatchingKey) {
				t.Errorf("Decrypt(other key) error = %v, want ErrNoMatchingKey", err)
			}
		})
	}
}

// TestKMSParseOnly parses the real KMS envelopes kept without keys, and checks
// the aws-nitro-enclaves-sdk-c ones against the fields its tests list.
func TestKMSParseOnly(t *testing.T) {
	tests := []struct {
		name       string
		sameAs     string // byte-identical copy of another sample, with its expected fields
		chunkSizes []int
		primitive  bool
	}{
		{name: "csdk-1", chunkSizes: []int{48}},
		{name: "csdk-2", chunkSizes: []int{16}, primitive: true},
		{name: "rustcrypto-1", chunkSizes: []int{16}},
		{name: "rustcrypto-2", sameAs: "csdk-1", chunkSizes: []int{48}},
		{name: "rustcrypto-3", sameAs: "csdk-2", chunkSizes: []int{16}, primitive: true},
		{name: "rustcrypto-4", chunkSizes: []int{1000, 1000, 1000, 1000, 112}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := realFile(t, realSource(tt.name)+"/"+tt.name+".ber")
			e, err := Parse(env)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.chunkSizes, e.ChunkSizes); diff != "" {
				t.Errorf("ChunkSizes (-want +got):\n%s", diff)
			}
			if e.ContentConstructed == tt.primitive {
				t.Errorf("ContentConstructed = %t, want %t", e.ContentConstructed, !tt.primitive)
			}
			if e.Encoding != EncodingBERIndefinite || e.RecipientIDKind != SubjectKeyIdentifier || len(e.RecipientID) != 32 ||
				!e.KeyEncryption.HashNullParams || !e.KeyEncryption.MGFHashNullParams || len(e.EncryptedKey) != 256 {
				t.Errorf("not the KMS shape:\n%s", e.Summary())
			}
			fields := tt.name
			if tt.sameAs != "" {
				fields = tt.sameAs
			}
			if !strings.HasPrefix(fields, "csdk-") {
				return
			}
			for _, f := range []struct {
				suffix string
				got    []byte
			}{
				{".encrypted_key.bin", e.EncryptedKey},
				{".iv.bin", e.IV},
				{".ciphertext.bin", e.EncryptedContent},
			} {
				want := realFile(t, realSource(fields)+"/"+fields+f.suffix)
				if !bytes.Equal(f.got, want) {
					t.Errorf("%s: got %x, want %x", f.suffix, f.got, want)
				}
			}
		})
	}
}

// realSource is the folder of testdata/real that holds the envelope
// named name (csdk-N or rustcrypto-N).
func realSource(name string) string {
	if strings.HasPrefix(name, "csdk-") {
		return "aws-nitro-enclaves-sdk-c"
	}
	return "rustcrypto"
}

// TestEveryRealFileCovered fails when testdata/real gains a file
// that no test above reads, so new real-world samples are not silently
// ignored.
func TestEveryRealFileCovered(t *testing.T) {
	dir := realDir
	covered := map[string]bool{
		edgebitEnvelope: true, edgebitKey: true, edgebitPlaintext: true,
		opensslDER: true, opensslIndef: true, opensslKey: true, opensslCert: true, opensslPlain: true,
	}
	for _, n := range []string{"csdk-1", "csdk-2"} {
		for _, s := range []string{".ber", ".encrypted_key.bin", ".iv.bin", ".ciphertext.bin"} {
			covered["aws-nitro-enclaves-sdk-c/"+n+s] = true
		}
	}
	for _, n := range []string{"rustcrypto-1", "rustcrypto-2", "rustcrypto-3", "rustcrypto-4"} {
		covered["rustcrypto/"+n+".ber"] = true
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "PROVENANCE.md" {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if !covered[filepath.ToSlash(rel)] {
			t.Errorf("%s is not covered by any test", filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("failed to walk %s: %v", dir, err)
	}
}

// TestInspectOutput checks the JSON and text forms `kmsproxyctl cms inspect`
// prints, on the real KMS envelope.
func TestInspectOutput(t *testing.T) {
	env := realFile(t, rustcrypto4)
	e, err := Parse(env)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("json.Unmarshal: %v", err)
	}
	want := map[string]any{
		"size":              float64(4573),
		"encoding":          "BER-indefinite",
		"content_type":      "1.2.840.113549.1.7.3",
		"version":           float64(2),
		"recipient_version": float64(2),
		"recipient_id_kind": "subjectKeyIdentifier",
		"recipient_id":      strings.ToLower(hexOf(e.RecipientID)),
		"key_encryption": map[string]any{
			"oid": "1.2.840.113549.1.1.7", "name": "RSAES-OAEP",
			"hash": "SHA-256", "hash_null_params": true,
			"mgf": "MGF1", "mgf_hash": "SHA-256", "mgf_hash_null_params": true,
			"label_explicit": false,
		},
		"encrypted_key":          map[string]any{"size": float64(256), "sha256": sha256Hex(e.EncryptedKey)},
		"encrypted_content_type": "1.2.840.113549.1.7.1",
		"content_encryption_oid": "2.16.840.1.101.3.4.1.42",
		"content_encryption":     "AES-256-CBC",
		"iv":                     "f92dcb53d4617d10fc5a8bff96d7d6ff",
		"encrypted_content":      map[string]any{"size": float64(4112), "sha256": sha256Hex(e.EncryptedContent)},
		"content_constructed":    true,
		"chunks":                 float64(5),
		"chunk_sizes":            []any{float64(1000), float64(1000), float64(1000), float64(1000), float64(112)},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON mismatch (-want +got):\n%s", diff)
	}

	var back struct {
		RecipientID HexBytes `json:"recipient_id"`
		IV          HexBytes `json:"iv"`
	}
	if err := json.Unmarshal(b, &back); err != nil || !bytes.Equal(back.IV, e.IV) || !bytes.Equal(back.RecipientID, e.RecipientID) {
		t.Errorf("HexBytes round trip: %v, iv %x, id %x", err, []byte(back.IV), []byte(back.RecipientID))
	}

	s := e.Summary()
	for _, line := range []string{
		"CMS EnvelopedData, 4573 bytes, BER-indefinite",
		"subjectKeyIdentifier " + hexOf(e.RecipientID) + " (SHA-256 of the SubjectPublicKeyInfo, as KMS writes it)",
		"RSAES-OAEP (1.2.840.113549.1.1.7), hash SHA-256, mask MGF1 with SHA-256, NULL hash parameters",
		"encrypted key:   256 bytes (RSA-2048)",
		"AES-256-CBC (2.16.840.1.101.3.4.1.42)",
		"iv:              f92dcb53d4617d10fc5a8bff96d7d6ff",
		"4112 bytes in 5 chunk(s), constructed [0], chunk sizes 4 of 1000, 112",
		"plaintext:       4096 to 4111 bytes",
	} {
		if !strings.Contains(s, line) {
			t.Errorf("Summary lacks %q:\n%s", line, s)
		}
	}
}
