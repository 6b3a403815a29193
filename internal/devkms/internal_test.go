package devkms

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"unix listener", func(c *Config) { c.Listen = "unix:///tmp/devkms.sock" }, ""},
		{"vsock listener", func(c *Config) { c.Listen = "vsock://:4599" }, "not vsock"},
		{"bad listener", func(c *Config) { c.Listen = "127.0.0.1:4599" }, "--listen"},
		{"bad region", func(c *Config) { c.Region = "mars" }, "--region"},
		{"bad account", func(c *Config) { c.AccountID = "1234" }, "--account-id"},
		{"zero attestation age", func(c *Config) { c.MaxAttestationAge = 0 }, "--max-attestation-age"},
		{"both TLS modes", func(c *Config) { c.TLSSelfSignedDir, c.TLSCertFile, c.TLSKeyFile = "d", "c", "k" }, "exclusive"},
		{"cert without key", func(c *Config) { c.TLSCertFile = "c" }, "go together"},
		{"empty trust root", func(c *Config) { c.TrustRootFiles = []string{" "} }, "--trust-root"},
		{"throttle rate above 1", func(c *Config) { c.Faults.ThrottleRate = 1.01 }, "throttle rate"},
		{"latency at the limit", func(c *Config) { c.Faults.Latency = MaxFaultLatency }, ""},
		{"latency past the limit", func(c *Config) { c.Faults.Latency = MaxFaultLatency + 1 }, "fault latency"},
		{"bad log level", func(c *Config) { c.LogLevel = "loud" }, "--log-level"},
		{"bad credential", func(c *Config) {
			c.Credentials = []Credential{{AccessKeyID: "short", SecretAccessKey: "s", Principal: "arn:aws:iam::111122223333:root"}}
		}, "access key ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.edit(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestFaultsJSON(t *testing.T) {
	f := Faults{Latency: 1500 * time.Millisecond, ThrottleRate: 0.25, ErrorRate: 0.5}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"latency":"1.5s","throttle_rate":0.25,"error_rate":0.5}` {
		t.Fatalf("Marshal = %s", b)
	}
	var got Faults
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(f, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func testKey(t testing.TB, id string) *key {
	t.Helper()
	k := &key{id: id, spec: types.KeySpecSymmetricDefault, usage: types.KeyUsageTypeEncryptDecrypt, enabled: true}
	if err := k.generate(k.spec); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCiphertextBlob(t *testing.T) {
	k := testKey(t, "11111111-2222-4333-8444-555555555555")
	other := testKey(t, "11111111-2222-4333-8444-555555555555") // same ID, other material
	ec := map[string]string{"b": "2", "a": "1"}
	blob, err := sealBlob(k, []byte("secret"), ec)
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) != blobOverhead+len("secret") {
		t.Fatalf("blob is %d bytes, want %d", len(blob), blobOverhead+6)
	}
	if id, err := blobKeyID(blob); err != nil || id != k.id {
		t.Fatalf("blobKeyID = %q, %v", id, err)
	}
	if pt, err := openBlob(k, blob, map[string]string{"a": "1", "b": "2"}); err != nil || string(pt) != "secret" {
		t.Fatalf("openBlob = %q, %v", pt, err)
	}
	// Every byte is authenticated, and so is the encryption context.
	for i := range blob {
		b := bytes.Clone(blob)
		b[i] ^= 0x80
		if _, err := openBlob(k, b, ec); err == nil {
			t.Fatalf("a change of byte %d went unnoticed", i)
		}
	}
	for _, bad := range []map[string]string{nil, {"a": "1"}, {"a": "1", "b": "3"}, {"a": "1", "b": "2", "c": "3"}, {"a1": "", "b": "2"}} {
		if _, err := openBlob(k, blob, bad); err == nil {
			t.Fatalf("openBlob accepted encryption context %v", bad)
		}
	}
	if _, err := openBlob(other, blob, ec); err == nil {
		t.Fatal("openBlob accepted another key's material")
	}
	if _, err := blobKeyID(blob[:blobOverhead-1]); err != errBadBlob {
		t.Fatalf("short blob: %v", err)
	}
	// Key/value boundaries are part of the AAD: {"ab":"c"} != {"a":"bc"}.
	if !bytes.Equal(blobAAD(nil, map[string]string{"a": "bc"}), blobAAD(nil, map[string]string{"a": "bc"})) ||
		bytes.Equal(blobAAD(nil, map[string]string{"ab": "c"}), blobAAD(nil, map[string]string{"a": "bc"})) {
		t.Fatal("canonical encryption context is ambiguous")
	}
	// The largest plaintext KMS accepts fits in a KMS-sized ciphertext.
	if _, err := sealBlob(k, make([]byte, MaxPlaintext), nil); err != nil || MaxPlaintext+blobOverhead > MaxCiphertextBlob {
		t.Fatalf("a %d-byte plaintext does not fit: %v", MaxPlaintext, err)
	}
}

func TestMaxRSAPlaintext(t *testing.T) {
	// KMS Developer Guide, "RSA key specs for encryption and decryption".
	tests := []struct {
		bits int
		alg  types.EncryptionAlgorithmSpec
		want int
	}{
		{2048, "RSAES_OAEP_SHA_1", 214}, {2048, "RSAES_OAEP_SHA_256", 190},
		{3072, "RSAES_OAEP_SHA_1", 342}, {3072, "RSAES_OAEP_SHA_256", 318},
		{4096, "RSAES_OAEP_SHA_1", 470}, {4096, "RSAES_OAEP_SHA_256", 446},
	}
	for _, tt := range tests {
		n := new(big.Int).Lsh(big.NewInt(1), uint(tt.bits-1))
		if got := maxRSAPlaintext(&rsa.PublicKey{N: n, E: 65537}, tt.alg); got != tt.want {
			t.Errorf("RSA_%d %s: %d, want %d", tt.bits, tt.alg, got, tt.want)
		}
	}
}

func TestRecipientCache(t *testing.T) {
	v := newRecipientVerifier(x509.NewCertPool(), time.Minute, time.Now)
	far := time.Now().Add(time.Hour)
	entry := &verifiedRecipient{timestamp: time.Now(), validUntil: far}
	var first, last [32]byte
	for i := range maxCachedDocuments {
		sum := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		if i == 0 {
			first = sum
		}
		v.remember(sum, entry)
	}
	if len(v.cache) != maxCachedDocuments || v.cache[first] == nil {
		t.Fatalf("cache holds %d entries at the limit, want %d including the first", len(v.cache), maxCachedDocuments)
	}
	last = sha256.Sum256([]byte("one more"))
	v.remember(last, entry)
	if len(v.cache) != maxCachedDocuments || v.cache[first] != nil || v.cache[last] == nil {
		t.Fatalf("one past the limit: %d entries, first kept %v", len(v.cache), v.cache[first] != nil)
	}
	// Remembering a cached document again does not grow the queue.
	v.remember(last, entry)
	if len(v.fifo) != maxCachedDocuments {
		t.Fatalf("fifo holds %d entries", len(v.fifo))
	}
}

func TestParseCredentials(t *testing.T) {
	good := "AKIAALICE00000000001:\n  secret_access_key: s3cr3t-value\n  principal: arn:aws:iam::111122223333:user/alice\n" +
		"ASIACAROL00000000001:\n  secret_access_key: other\n  session_token: tok\n  principal: arn:aws:sts::111122223333:assumed-role/r/s\n"
	creds, err := ParseCredentials("creds.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []Credential{
		{AccessKeyID: "AKIAALICE00000000001", SecretAccessKey: "s3cr3t-value", Principal: "arn:aws:iam::111122223333:user/alice"},
		{AccessKeyID: "ASIACAROL00000000001", SecretAccessKey: "other", SessionToken: "tok", Principal: "arn:aws:sts::111122223333:assumed-role/r/s"},
	}
	if diff := cmp.Diff(want, creds); diff != "" {
		t.Fatalf("ParseCredentials (-want +got):\n%s", diff)
	}
	if _, err := ParseCredentials("creds.yaml", []byte(`{"AKIAALICE00000000001":{"secret_access_key":"x","principal":"arn:aws:iam::111122223333:root"}}`)); err != nil {
		t.Fatalf("JSON credentials: %v", err)
	}
	bad := []struct{ name, in, want string }{
		{"empty", "", "no access keys"},
		{"no secret", "AKIAALICE00000000001:\n  principal: arn:aws:iam::111122223333:root\n", "no secret_access_key"},
		{"bad principal", "AKIAALICE00000000001:\n  secret_access_key: x\n  principal: alice\n", "principal"},
		{"short key", "AKIA:\n  secret_access_key: x\n  principal: arn:aws:iam::111122223333:root\n", "16 to 128"},
		{"unknown field", "AKIAALICE00000000001:\n  secret: x\n", `creds.yaml:2:3: AKIAALICE00000000001: unknown field "secret"; valid fields: secret_access_key, session_token, principal`},
		{"misspelt field", "AKIAALICE00000000001:\n  secret_acces_key: x\n", `creds.yaml:2:3: AKIAALICE00000000001: unknown field "secret_acces_key" (did you mean "secret_access_key"?)`},
		{"secret as a scalar", "AKIAALICE00000000001: s3cr3t-value\n", `creds.yaml:1:23: AKIAALICE00000000001: want a mapping, not a string`},
		{"bad principal, with its line", "AKIAALICE00000000001:\n  secret_access_key: x\n  principal: alice\n", `creds.yaml:3:14: AKIAALICE00000000001.principal: access key AKIAALICE00000000001: principal "alice" is not`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCredentials("creds.yaml", []byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("ParseCredentials = %v, want an error with %q and no secret", err, tt.want)
			}
		})
	}
}

func TestCredentialsFileLimit(t *testing.T) {
	good := "AKIAALICE00000000001:\n  secret_access_key: x\n  principal: arn:aws:iam::111122223333:root\n"
	for _, tt := range []struct {
		size int
		ok   bool
	}{{MaxCredentialsFile, true}, {MaxCredentialsFile + 1, false}} {
		path := filepath.Join(t.TempDir(), "creds.yaml")
		content := good + strings.Repeat("\n", tt.size-len(good))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadCredentials(path)
		if tt.ok != (err == nil) {
			t.Fatalf("LoadCredentials of %d bytes = %v", tt.size, err)
		}
	}
}

func TestSelfSignedTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	cfg1, ca1, err := selfSignedTLS(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	cfg2, ca2, err := selfSignedTLS(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if !bytes.Equal(ca1, ca2) || !bytes.Equal(ca1, onDisk) {
		t.Fatal("a restart made a new CA; clients would stop trusting devkms")
	}
	if fi, err := os.Stat(filepath.Join(dir, CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca1)
	for _, cfg := range []*tls.Config{cfg1, cfg2} {
		leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
				t.Errorf("server certificate for %s: %v", name, err)
			}
		}
		if leaf.VerifyHostname("example.com") == nil {
			t.Error("server certificate is valid for example.com")
		}
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := selfSignedTLS(dir, now); err == nil || !strings.Contains(err.Error(), "exists without") {
		t.Fatalf("CA without its key: %v", err)
	}
}

func TestTrustRootFiles(t *testing.T) {
	dir := t.TempDir()
	_, caPEM, err := selfSignedTLS(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"certificate", caPEM, ""},
		{"no certificate", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), "holds no PEM certificate"},
		{"at the size limit", append(bytes.Clone(caPEM), bytes.Repeat([]byte("\n"), maxPEMFile-len(caPEM))...), ""},
		{"past the size limit", append(bytes.Clone(caPEM), bytes.Repeat([]byte("\n"), maxPEMFile+1-len(caPEM))...), "larger than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "root.pem")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			certs, err := loadTrustRoots(path)
			if tt.want == "" && (err != nil || len(certs) != 1) {
				t.Fatalf("loadTrustRoots = %d certs, %v", len(certs), err)
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("loadTrustRoots = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestURL(t *testing.T) {
	s := &Server{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := s.URL(l); got != "http://"+l.Addr().String() {
		t.Fatalf("URL = %s", got)
	}
}

func TestAttestationDocumentLimit(t *testing.T) {
	v := newRecipientVerifier(x509.NewCertPool(), time.Minute, time.Now)
	for _, tt := range []struct {
		size int
		want string
	}{
		// At the limit the length is accepted and the parser refuses the
		// bytes; one past it the member's length constraint applies.
		{MaxAttestationDocument, "Invalid Recipient: the attestation document is malformed"},
		{MaxAttestationDocument + 1, "Value at 'recipient.attestationDocument' failed to satisfy constraint: Member must have length less than or equal to 262144"},
	} {
		_, err := v.verify(&types.RecipientInfo{AttestationDocument: make([]byte, tt.size)})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%d-byte document: %v, want %q", tt.size, err, tt.want)
		}
	}
}

func TestShorten(t *testing.T) {
	at := strings.Repeat("a", maxEchoed)
	if got := shorten(at); got != at {
		t.Errorf("shorten of %d bytes changed it", maxEchoed)
	}
	if got := shorten(at + "b"); got != at+"..." {
		t.Errorf("shorten of %d bytes = %q", maxEchoed+1, got)
	}
}
