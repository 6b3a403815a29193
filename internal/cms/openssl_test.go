package cms

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// opensslPath returns the openssl binary, skipping the test when it is absent
// unless KMSPROXY_REQUIRE_TOOLS=1, which makes its absence a failure.
func opensslPath(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("KMSPROXY_REQUIRE_TOOLS") == "1" {
			tb.Fatalf("openssl not found and KMSPROXY_REQUIRE_TOOLS=1: %v", err)
		}
		tb.Skipf("skipping: openssl not found (%v); install it or set KMSPROXY_REQUIRE_TOOLS=1 to make this a failure", err)
	}
	return p
}

// runOpenSSL runs openssl with args and stdin, bounded in time.
func runOpenSSL(tb testing.TB, stdin []byte, args ...string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, opensslPath(tb), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("openssl %v: %v\n%s", args, err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// TestOpenSSLDecryptsEncrypt: `openssl cms -decrypt -inform DER -inkey
// key.pem` decrypts what Encrypt writes, for every key size, and the
// committed vectors.
func TestOpenSSLDecryptsEncrypt(t *testing.T) {
	opensslPath(t)
	dir := t.TempDir()
	for _, bits := range []int{2048, 3072, 4096} {
		keyFile := filepath.Join("testdata", "keys", fmt.Sprintf("rsa-%d.pem", bits))
		for _, size := range []int{0, 32, 1999, MaxPlaintext} {
			t.Run(fmt.Sprintf("RSA-%d/%d bytes", bits, size), func(t *testing.T) {
				want := bytes.Repeat([]byte{byte(size)}, size)
				envFile := filepath.Join(dir, fmt.Sprintf("%d-%d.ber", bits, size))
				if err := os.WriteFile(envFile, mustEncrypt(t, &testKey(t, bits).PublicKey, want), 0o600); err != nil {
					t.Fatal(err)
				}
				got := runOpenSSL(t, nil, "cms", "-decrypt", "-inform", "DER", "-in", envFile, "-inkey", keyFile, "-binary")
				if !bytes.Equal(got, want) {
					t.Errorf("openssl decrypted %d bytes, want %d", len(got), len(want))
				}
			})
		}
	}
	vectors, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.ber"))
	if err != nil || len(vectors) == 0 {
		t.Fatalf("no committed vectors: %v", err)
	}
	for _, v := range vectors {
		name := filepath.Base(v[:len(v)-len(".ber")])
		t.Run("vector "+name, func(t *testing.T) {
			var bits int
			if _, err := fmt.Sscanf(name, "rsa%d-", &bits); err != nil {
				t.Fatalf("vector name %q: %v", name, err)
			}
			_, want := readVector(t, name)
			got := runOpenSSL(t, nil, "cms", "-decrypt", "-inform", "DER", "-in", v,
				"-inkey", filepath.Join("testdata", "keys", fmt.Sprintf("rsa-%d.pem", bits)), "-binary")
			if !bytes.Equal(got, want) {
				t.Errorf("openssl decrypted %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

// TestOpenSSLEnvelopeShapes makes envelopes with OpenSSL that the shared
// samples do not cover: an issuerAndSerialNumber recipient (decrypted by
// trying each key), and the defaults that must be refused (SHA-1 OAEP,
// AES-128, PKCS #1 v1.5 key transport).
func TestOpenSSLEnvelopeShapes(t *testing.T) {
	opensslPath(t)
	cert := filepath.Join(realDir, filepath.FromSlash(opensslCert))
	key := readKey(t, realFile(t, opensslKey))
	plaintext := []byte("a secret from openssl")
	oaep256 := []string{"-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}

	tests := []struct {
		name     string
		args     []string
		wantKind error // nil: decrypts
		reason   string
	}{
		{"issuerAndSerialNumber, DER", append([]string{"-aes-256-cbc"}, oaep256...), nil, ""},
		{"issuerAndSerialNumber, -stream", append([]string{"-aes-256-cbc", "-stream"}, oaep256...), nil, ""},
		{"OAEP with SHA-1 defaults", []string{"-aes-256-cbc", "-keyid", "-keyopt", "rsa_padding_mode:oaep"}, ErrUnsupported, "SHA-1"},
		{"OAEP SHA-256 with MGF1-SHA-1 (omitted as the default)", append([]string{"-aes-256-cbc", "-keyid", "-keyopt", "rsa_mgf1_md:sha1"}, oaep256...), ErrUnsupported, "maskGenFunc absent, which means MGF1 with SHA-1"},
		{"AES-128-CBC", append([]string{"-aes-128-cbc", "-keyid"}, oaep256...), ErrUnsupported, "AES-128-CBC"},
		{"PKCS #1 v1.5 key transport", []string{"-aes-256-cbc", "-keyid"}, ErrUnsupported, "rsaEncryption"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"cms", "-encrypt", "-binary", "-outform", "DER", "-recip", cert}, tt.args...)
			env := runOpenSSL(t, plaintext, args...)
			got, err := Decrypt(env, mustOtherKey(t), key)
			checkTyped(t, err)
			if tt.wantKind == nil {
				if err != nil || !bytes.Equal(got, plaintext) {
					t.Fatalf("Decrypt = %q, %v", got, err)
				}
				e, err := Parse(env)
				if err != nil || e.RecipientIDKind != IssuerAndSerialNumber || e.Version != 0 || e.RecipientVersion != 0 {
					t.Errorf("Parse: %v, %+v", err, e)
				}
				return
			}
			if !isKind(err, tt.wantKind) || !bytes.Contains([]byte(err.Error()), []byte(tt.reason)) {
				t.Errorf("Decrypt error = %v, want %v mentioning %q", err, tt.wantKind, tt.reason)
			}
		})
	}
}
