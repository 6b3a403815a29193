package devkms_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

func withState(path string) devkmstest.Option {
	return devkmstest.WithConfig(func(c *devkms.Config) { c.StatePath = path })
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	first := devkmstest.Start(t, withState(path))
	c := first.Client(t)
	sym := createKey(t, c, types.KeySpecSymmetricDefault, "")
	signer := createKey(t, c, types.KeySpecEccNistP384, types.KeyUsageTypeSignVerify)
	mac := createKey(t, c, types.KeySpecHmac384, types.KeyUsageTypeGenerateVerifyMac)
	rsaEnc := createKey(t, c, types.KeySpecRsa2048, types.KeyUsageTypeEncryptDecrypt)
	off := createKey(t, c, types.KeySpecSymmetricDefault, "")
	if _, err := c.DisableKey(ctx, &kms.DisableKeyInput{KeyId: &off}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/kept"), TargetKeyId: &sym}); err != nil {
		t.Fatal(err)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Sid":"kept","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`
	if _, err := c.PutKeyPolicy(ctx, &kms.PutKeyPolicyInput{KeyId: &sym, Policy: &policy}); err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/kept"), Plaintext: []byte("survives"), EncryptionContext: map[string]string{"a": "b"}})
	if err != nil {
		t.Fatal(err)
	}
	rsaCT, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &rsaEnc, Plaintext: []byte("rsa"), EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: &signer, Message: []byte("m"), SigningAlgorithm: "ECDSA_SHA_384"})
	if err != nil {
		t.Fatal(err)
	}
	tag, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &mac, Message: []byte("m"), MacAlgorithm: "HMAC_SHA_384"})
	if err != nil {
		t.Fatal(err)
	}
	before := describeAll(t, c)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var header struct {
		Comment string `json:"comment"`
	}
	if err := json.Unmarshal(raw, &header); err != nil || !strings.Contains(header.Comment, "IN THE CLEAR") {
		t.Errorf("state file comment %q does not warn that keys are stored in the clear", header.Comment)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state directory holds %d entries, want only the state file (no temporary files)", len(entries))
	}

	second := devkmstest.Start(t, withState(path))
	c = second.Client(t)
	if diff := cmp.Diff(before, describeAll(t, c), cmpopts.IgnoreUnexported(types.KeyMetadata{})); diff != "" {
		t.Errorf("keys after restart (-before +after):\n%s", diff)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"a": "b"}})
	if err != nil || string(dec.Plaintext) != "survives" {
		t.Fatalf("Decrypt after restart: %v", err)
	}
	dec, err = c.Decrypt(ctx, &kms.DecryptInput{KeyId: &rsaEnc, CiphertextBlob: rsaCT.CiphertextBlob, EncryptionAlgorithm: "RSAES_OAEP_SHA_256"})
	if err != nil || string(dec.Plaintext) != "rsa" {
		t.Fatalf("RSA Decrypt after restart: %v", err)
	}
	if v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: &signer, Message: []byte("m"), Signature: sig.Signature, SigningAlgorithm: "ECDSA_SHA_384"}); err != nil || !v.SignatureValid {
		t.Fatalf("Verify after restart: %v", err)
	}
	if v, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &mac, Message: []byte("m"), Mac: tag.Mac, MacAlgorithm: "HMAC_SHA_384"}); err != nil || !v.MacValid {
		t.Fatalf("VerifyMac after restart: %v", err)
	}
	gp, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: &sym})
	if err != nil || aws.ToString(gp.Policy) != policy {
		t.Fatalf("GetKeyPolicy after restart = %v, %v", gp, err)
	}
	d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/kept")})
	if err != nil || aws.ToString(d.KeyMetadata.KeyId) != sym {
		t.Fatalf("alias after restart: %v", err)
	}
}

// describeAll returns the metadata of every key, in ListKeys order.
func describeAll(t *testing.T, c *kms.Client) []types.KeyMetadata {
	t.Helper()
	list, err := c.ListKeys(ctx, &kms.ListKeysInput{})
	if err != nil {
		t.Fatal(err)
	}
	var out []types.KeyMetadata
	for _, k := range list.Keys {
		d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: k.KeyId})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *d.KeyMetadata)
	}
	return out
}

// validState returns a state file written by devkms holding one key and one
// alias.
func validState(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.json")
	kmsd := devkmstest.Start(t, withState(path))
	kmsd.CreateKeyWith(t, devkms.SeedKey{ID: "11111111-2222-4333-8444-555555555555", Aliases: []string{"alias/one"}})
	if err := kmsd.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorruptStateIsRefusedAndKept(t *testing.T) {
	valid := validState(t)
	edit := func(from, to string) []byte {
		if !bytes.Contains(valid, []byte(from)) {
			t.Fatalf("valid state lacks %q", from)
		}
		return bytes.Replace(valid, []byte(from), []byte(to), 1)
	}
	tests := []struct {
		name    string
		content []byte
		reason  string
	}{
		{"empty file", []byte{}, "bad JSON"},
		{"truncated", valid[:len(valid)/2], "bad JSON"},
		{"not JSON", []byte("keys: []\n"), "bad JSON"},
		{"unknown member", edit(`"version": 1`, `"version": 1, "extra": true`), "unknown field"},
		{"other version", edit(`"version": 1`, `"version": 2`), "version 2"},
		{"other region", edit(`"region": "us-east-1"`, `"region": "eu-west-1"`), "written for region \"eu-west-1\""},
		{"bad key ID", edit(`"key_id": "11111111-2222-4333-8444-555555555555"`, `"key_id": "k1"`), "is not a UUID"},
		{"bad key spec", edit(`"key_spec": "SYMMETRIC_DEFAULT"`, `"key_spec": "AES_512"`), "unsupported key spec"},
		{"bad material", edit(`"material": "`, `"material": "AAAA`), "material is"},
		{"alias to a missing key", edit(`"target_key_id": "11111111-2222-4333-8444-555555555555"`, `"target_key_id": "99999999-2222-4333-8444-555555555555"`), "is not in the file"},
		{"trailing data", append(bytes.Clone(valid), []byte("{}")...), "data after the JSON document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := devkms.DefaultConfig()
			cfg.StatePath = path
			_, err := devkms.New(cfg)
			var se *devkms.StateError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), tt.reason) || !strings.Contains(err.Error(), "leaving it untouched") {
				t.Fatalf("New = %v, want a *StateError mentioning %q", err, tt.reason)
			}
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got, tt.content) {
				t.Fatal("devkms changed the refused state file")
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("devkms left %d files in the state directory", len(entries))
			}
		})
	}
}

func TestStateFileLimit(t *testing.T) {
	valid := validState(t)
	for _, tt := range []struct {
		name string
		size int
		ok   bool
	}{{"at the limit", devkms.MaxStateFile, true}, {"one byte past", devkms.MaxStateFile + 1, false}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			content := append(bytes.Clone(valid), bytes.Repeat([]byte(" "), tt.size-len(valid))...)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := devkms.DefaultConfig()
			cfg.StatePath = path
			cfg.LogLevel = "error"
			_, err := devkms.New(cfg)
			if tt.ok && err != nil {
				t.Fatalf("New with a %d-byte state file: %v", tt.size, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "larger than")) {
				t.Fatalf("New with a %d-byte state file = %v, want a size error", tt.size, err)
			}
		})
	}
}

func TestStatePathNotWritable(t *testing.T) {
	cfg := devkms.DefaultConfig()
	cfg.StatePath = filepath.Join(t.TempDir(), "missing-dir", "state.json")
	if _, err := devkms.New(cfg); err == nil || !strings.Contains(err.Error(), "failed to write state file") {
		t.Fatalf("New = %v, want a write error", err)
	}
}

// TestConcurrentChanges creates keys and aliases from several goroutines
// while others use them; every change must land in the state file.
func TestConcurrentChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	kmsd := devkmstest.Start(t, withState(path))
	c := kmsd.Client(t)
	const workers, perWorker = 4, 5
	ids := make(chan string, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				out, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
				if err != nil {
					t.Errorf("CreateKey: %v", err)
					return
				}
				id := aws.ToString(out.KeyMetadata.KeyId)
				ids <- id
				alias := fmt.Sprintf("alias/w%d-%d", w, i)
				if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: &alias, TargetKeyId: &id}); err != nil {
					t.Errorf("CreateAlias: %v", err)
				}
				enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &alias, Plaintext: []byte(alias)})
				if err != nil {
					t.Errorf("Encrypt: %v", err)
					continue
				}
				if dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}); err != nil || string(dec.Plaintext) != alias {
					t.Errorf("Decrypt: %v", err)
				}
			}
		})
	}
	wg.Wait()
	close(ids)
	if err := kmsd.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := devkmstest.Start(t, withState(path))
	rc := reopened.Client(t)
	for id := range ids {
		if _, err := rc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &id}); err != nil {
			t.Errorf("key %s lost: %v", id, err)
		}
	}
	aliases, err := rc.ListAliases(ctx, &kms.ListAliasesInput{Limit: aws.Int32(100)})
	if err != nil || len(aliases.Aliases) != workers*perWorker {
		t.Fatalf("%d aliases in the state file (%v), want %d", len(aliases.Aliases), err, workers*perWorker)
	}
}
