package devkms_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

const (
	seedAppKey    = "2b9e6c1a-1c6e-4c0b-9d3b-7f2f9c2f6a11"
	seedSignerKey = "5d0f4a53-8d2e-4f7e-9a5c-0c1b2d3e4f50"
)

const seedYAML = `
keys:
  - id: ` + seedAppKey + `
    description: app data key
    policy_file: app-policy.json
    aliases: [alias/app]
  - id: ` + seedSignerKey + `
    key_spec: ECC_NIST_P256
    key_usage: SIGN_VERIFY
aliases:
  - name: alias/signer
    target_key_id: ` + seedSignerKey + `
`

const seedPolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"seeded","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}`

func writeSeed(t *testing.T, dir, yaml string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "app-policy.json"), []byte(seedPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "seed.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSeedIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	seed := writeSeed(t, dir, seedYAML)
	state := filepath.Join(dir, "state.json")
	opts := devkmstest.WithConfig(func(c *devkms.Config) { c.StatePath, c.SeedPath = state, seed })

	first := devkmstest.Start(t, opts)
	c := first.Client(t)
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/app"), Plaintext: []byte("seeded")})
	if err != nil {
		t.Fatalf("Encrypt with the seeded alias: %v", err)
	}
	if aws.ToString(enc.KeyId) != first.KeyARN(seedAppKey) {
		t.Fatalf("alias/app is %s, want %s", aws.ToString(enc.KeyId), first.KeyARN(seedAppKey))
	}
	gp, err := c.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(seedAppKey)})
	if err != nil || aws.ToString(gp.Policy) != seedPolicy {
		t.Fatalf("seeded policy = %v, %v", gp, err)
	}
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: aws.String("alias/signer"), Message: []byte("m"), SigningAlgorithm: "ECDSA_SHA_256"})
	if err != nil {
		t.Fatalf("Sign with the seeded signer: %v", err)
	}
	// Applying the same seed again in the same process changes nothing.
	loaded, err := devkms.LoadSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Server.ApplySeed(loaded); err != nil {
		t.Fatalf("second ApplySeed: %v", err)
	}
	if n := len(describeAll(t, c)); n != 2 {
		t.Fatalf("%d keys after applying the seed twice, want 2", n)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart applies the seed again: same keys, same material.
	second := devkmstest.Start(t, opts)
	c = second.Client(t)
	if n := len(describeAll(t, c)); n != 2 {
		t.Fatalf("%d keys after restart, want 2", n)
	}
	dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(dec.Plaintext) != "seeded" {
		t.Fatalf("Decrypt after re-seeding: %v", err)
	}
	if _, err := c.Verify(ctx, &kms.VerifyInput{KeyId: aws.String(seedSignerKey), Message: []byte("m"), Signature: sig.Signature, SigningAlgorithm: "ECDSA_SHA_256"}); err != nil {
		t.Fatalf("Verify after re-seeding: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}

	// A changed seed moves the alias and updates the description.
	changed := strings.Replace(seedYAML, "aliases: [alias/app]", "aliases: []", 1) + "  - name: alias/app\n    target_key_id: " + seedSignerKey + "\n"
	changed = strings.Replace(changed, "app data key", "renamed", 1)
	writeSeed(t, dir, changed)
	third := devkmstest.Start(t, opts)
	c = third.Client(t)
	d, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("alias/app")})
	if err != nil || aws.ToString(d.KeyMetadata.KeyId) != seedSignerKey {
		t.Fatalf("alias/app after the seed moved it: %v, %v", d, err)
	}
	d, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(seedAppKey)})
	if err != nil || aws.ToString(d.KeyMetadata.Description) != "renamed" {
		t.Fatalf("description after the seed changed it: %v, %v", d, err)
	}
}

// TestBadSeeds: every seed error names the file, the line and column, the
// path of the value, and what is wrong, with the nearest valid field for a
// misspelt one (never a Go type name).
func TestBadSeeds(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"key ID not a UUID", "keys:\n  - id: app\n", `seed.yaml:2:9: keys[0].id: "app" must be a key ID (UUID)`},
		{"misspelt field", "keys:\n  - id: " + seedAppKey + "\n    polcy_file: app-policy.json\n",
			`seed.yaml:3:5: keys[0]: unknown field "polcy_file" (did you mean "policy_file"?); valid fields: id, description, key_spec, key_usage, enabled, policy, policy_file, aliases`},
		{"unknown field", "keys:\n  - id: " + seedAppKey + "\n    colour: blue\n", `seed.yaml:3:5: keys[0]: unknown field "colour"; valid fields: id,`},
		{"wrong type", "keys:\n  - id: " + seedAppKey + "\n    enabled: sometimes\n", `seed.yaml:3:14: keys[0].enabled: want true or false, not a string`},
		{"policy and policy_file", "keys:\n  - id: " + seedAppKey + "\n    policy: '{}'\n    policy_file: app-policy.json\n", "seed.yaml:4:18: keys[0].policy_file: give policy or policy_file, not both"},
		{"missing policy file", "keys:\n  - id: " + seedAppKey + "\n    policy_file: nope.json\n", "seed.yaml:3:18: keys[0].policy_file: failed to read the policy file: open "},
		{"malformed policy", "keys:\n  - id: " + seedAppKey + "\n    policy: '{'\n", "seed.yaml:3:13: keys[0].policy: not a valid key policy: the key policy is not valid JSON"},
		{"bad alias", "keys:\n  - id: " + seedAppKey + "\n    aliases: [app]\n", `seed.yaml:3:15: keys[0].aliases[0]: Alias must start with the prefix "alias/"`},
		{"alias to a missing key", "aliases:\n  - name: alias/x\n    target_key_id: " + seedAppKey + "\n", "seed.yaml:3:20: aliases[0].target_key_id: target key " + seedAppKey + " of alias/x does not exist"},
		{"unsupported key spec", "keys:\n  - id: " + seedAppKey + "\n    key_spec: ECC_SECG_P256K1\n    key_usage: SIGN_VERIFY\n", "seed.yaml:3:15: keys[0].key_spec: KeySpec ECC_SECG_P256K1 is not supported by devkms: the Go standard library has no secp256k1"},
		{"usage missing", "keys:\n  - id: " + seedAppKey + "\n    key_spec: RSA_2048\n", "seed.yaml:2:5: keys[0].key_usage: You must specify a KeyUsage value"},
		{"key twice", "keys:\n  - id: " + seedAppKey + "\n  - id: " + seedAppKey + "\n", "seed.yaml:3:9: keys[1].id: key " + seedAppKey + " appears twice (first as keys[0])"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := devkms.DefaultConfig()
			cfg.SeedPath = writeSeed(t, t.TempDir(), tt.yaml)
			_, err := devkms.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing\n%s", err, tt.want)
			}
			if strings.Contains(err.Error(), "devkms.") || strings.Contains(err.Error(), "not found in type") {
				t.Errorf("the error names a Go type: %v", err)
			}
		})
	}
	t.Run("key spec cannot change", func(t *testing.T) {
		kmsd := devkmstest.Start(t)
		kmsd.CreateKeyWith(t, devkms.SeedKey{ID: seedAppKey})
		err := kmsd.Server.ApplySeed(devkms.Seed{Keys: []devkms.SeedKey{{ID: seedAppKey, KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC"}}})
		if err == nil || !strings.Contains(err.Error(), "a key's spec and usage cannot change") {
			t.Fatalf("ApplySeed = %v, want a refusal", err)
		}
	})
}

func TestSeedFileLimit(t *testing.T) {
	for _, tt := range []struct {
		name string
		size int
		ok   bool
	}{{"at the limit", devkms.MaxSeedFile, true}, {"one byte past", devkms.MaxSeedFile + 1, false}} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			content := []byte(seedYAML)
			content = append(content, bytes.Repeat([]byte("\n"), tt.size-len(content))...)
			path := writeSeed(t, dir, string(content))
			_, err := devkms.LoadSeed(path)
			if tt.ok && err != nil {
				t.Fatalf("LoadSeed of %d bytes: %v", tt.size, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "larger than")) {
				t.Fatalf("LoadSeed of %d bytes = %v, want a size error", tt.size, err)
			}
		})
	}
}
