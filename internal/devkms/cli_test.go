package devkms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

// awsCLIs returns the AWS CLIs to test: the first aws in PATH and Debian's
// /usr/bin/aws (awscli) when that is another program.
func awsCLIs(t *testing.T) []string {
	t.Helper()
	first := requireTool(t, "aws")
	clis := []string{first}
	if deb, err := filepath.EvalSymlinks("/usr/bin/aws"); err == nil {
		if f, err := filepath.EvalSymlinks(first); err == nil && f != deb {
			clis = append(clis, "/usr/bin/aws")
		}
	}
	return clis
}

// TestAWSCLI drives devkms with the AWS CLI: SigV4 from botocore (not
// aws-sdk-go-v2), the CLI's own JSON serialization and TLS with the devkms
// CA in AWS_CA_BUNDLE.
func TestAWSCLI(t *testing.T) {
	for _, cli := range awsCLIs(t) {
		t.Run(cli, func(t *testing.T) {
			kmsd := devkmstest.Start(t, devkmstest.WithCredentials(alice))
			dir := t.TempDir()
			empty := filepath.Join(dir, "empty")
			if err := os.WriteFile(empty, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			env := []string{
				"AWS_ACCESS_KEY_ID=" + alice.AccessKeyID,
				"AWS_SECRET_ACCESS_KEY=" + alice.SecretAccessKey,
				"AWS_DEFAULT_REGION=us-east-1",
				"AWS_REGION=us-east-1",
				"AWS_CA_BUNDLE=" + kmsd.CAFile,
				"AWS_CONFIG_FILE=" + empty,
				"AWS_SHARED_CREDENTIALS_FILE=" + empty,
				"AWS_PAGER=",
				"AWS_EC2_METADATA_DISABLED=true",
			}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "AWS_") {
					env = append(env, kv)
				}
			}
			run := func(args ...string) (string, string, error) {
				t.Helper()
				tctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				cmd := exec.CommandContext(tctx, cli, append([]string{"kms", "--endpoint-url", kmsd.URL}, args...)...)
				cmd.Env = env
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				return strings.TrimSpace(stdout.String()), stderr.String(), err
			}
			must := func(args ...string) string {
				t.Helper()
				out, stderr, err := run(args...)
				if err != nil {
					t.Fatalf("aws kms %s: %v\n%s", strings.Join(args, " "), err, stderr)
				}
				return out
			}

			var created struct {
				KeyMetadata struct {
					KeyId   string
					KeySpec string
					Arn     string
				}
			}
			if err := json.Unmarshal([]byte(must("create-key", "--description", "from the AWS CLI", "--output", "json")), &created); err != nil {
				t.Fatalf("create-key output: %v", err)
			}
			id := created.KeyMetadata.KeyId
			if created.KeyMetadata.KeySpec != "SYMMETRIC_DEFAULT" || created.KeyMetadata.Arn != kmsd.KeyARN(id) {
				t.Fatalf("create-key: %+v", created.KeyMetadata)
			}

			plain := []byte("plaintext from the AWS CLI\x00\xff")
			plainPath, ctPath := filepath.Join(dir, "plain.bin"), filepath.Join(dir, "ct.bin")
			if err := os.WriteFile(plainPath, plain, 0o600); err != nil {
				t.Fatal(err)
			}
			ctB64 := must("encrypt", "--key-id", id, "--plaintext", "fileb://"+plainPath, "--encryption-context", "purpose=cli",
				"--query", "CiphertextBlob", "--output", "text")
			ct, err := base64.StdEncoding.DecodeString(ctB64)
			if err != nil {
				t.Fatalf("encrypt output %q is not base64: %v", ctB64, err)
			}
			if err := os.WriteFile(ctPath, ct, 0o600); err != nil {
				t.Fatal(err)
			}
			ptB64 := must("decrypt", "--ciphertext-blob", "fileb://"+ctPath, "--encryption-context", "purpose=cli", "--query", "Plaintext", "--output", "text")
			if pt, err := base64.StdEncoding.DecodeString(ptB64); err != nil || !bytes.Equal(pt, plain) {
				t.Fatalf("decrypt returned %q (%v), want the plaintext", ptB64, err)
			}
			rndB64 := must("generate-random", "--number-of-bytes", "32", "--query", "Plaintext", "--output", "text")
			if rnd, err := base64.StdEncoding.DecodeString(rndB64); err != nil || len(rnd) != 32 {
				t.Fatalf("generate-random returned %q (%v), want 32 bytes", rndB64, err)
			}
			_, stderr, err := run("decrypt", "--ciphertext-blob", "fileb://"+ctPath, "--encryption-context", "purpose=other")
			if err == nil || !strings.Contains(stderr, "InvalidCiphertextException") {
				t.Fatalf("decrypt with another encryption context: %v\n%s", err, stderr)
			}
		})
	}
}
