package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// awsTimeout bounds one AWS CLI run (a Python start-up and one call).
const awsTimeout = 2 * time.Minute

// Credentials the real clients sign with. kmsproxyd ignores client
// signatures (kmsproxyd accepts and ignores them), so any well-formed key works; they are
// secrets all the same and must not reach a log.
var dummyClient = awsCreds{"AKIAE2EDUMMYCLIENT01", "e2e-dummy-client-secret-access-key-00000", ""}

// endpoint is one way a real client reaches kmsproxyd.
type endpoint struct {
	name string
	url  string // for --endpoint-url and BaseEndpoint
	addr string // for the client package
}

// TestRealClients has the AWS CLI from Debian and aws-sdk-go-v2, unchanged
// but for the endpoint, get correct plaintexts from the attested operations
// through `kmsproxyctl bridge` and through kmsproxyd's local listener.
func TestRealClients(t *testing.T) {
	build(t) // before the watchdog starts
	sc := newScan(t)
	s := startStack(t, sc, stackOptions{})
	sc.AddSecret("client secret access key", []byte(dummyClient.secret))

	bridgeAddr := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
	bridge := start(t, sc, "kmsproxyctl bridge", harness.CleanEnv(), s.bin.kmsproxyctl, "bridge",
		"--listen", bridgeAddr, "--enclave", s.parentAddr, "--log-level", "debug")
	waitHTTP(t, bridge, bridgeAddr, "/healthz")
	endpoints := []endpoint{
		{"bridge", "http://" + strings.TrimPrefix(bridgeAddr, "tcp://"), bridgeAddr},
		{"local listener", "http://" + strings.TrimPrefix(s.localAddr, "tcp://"), s.localAddr},
	}

	secret := make([]byte, 40)
	rand.Read(secret)
	sc.AddSecret("client test plaintext", secret)
	ec := map[string]string{"tenant": "acme"}
	enc, err := s.operatorKMS(t).Encrypt(context.Background(), &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: secret, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("operator Encrypt: %v", err)
	}
	ctFile := s.path("secret.enc")
	if err := os.WriteFile(ctFile, enc.CiphertextBlob, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("aws-cli", func(t *testing.T) {
		awsBin := harness.RequireTool(t, "aws", "/usr/bin/aws")
		home := t.TempDir()
		for _, ep := range endpoints {
			t.Run(ep.name, func(t *testing.T) {
				cli := func(args ...string) []byte {
					t.Helper()
					env := harness.CleanEnv(append(dummyClient.env(), "AWS_REGION="+region, "AWS_DEFAULT_REGION="+region, "AWS_PAGER=", "HOME="+home)...)
					args = append(args, "--endpoint-url", ep.url, "--cli-connect-timeout", "10", "--cli-read-timeout", "60")
					out, err := run(t, sc, "aws "+args[1], env, nil, awsTimeout, append([]string{awsBin}, args...)...)
					if err != nil {
						t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
					}
					return out
				}
				b64 := func(out []byte) []byte {
					t.Helper()
					b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
					if err != nil {
						t.Fatalf("the AWS CLI printed %q, not base64", out)
					}
					return b
				}

				got := b64(cli("kms", "decrypt", "--ciphertext-blob", "fileb://"+ctFile, "--encryption-context", "tenant=acme",
					"--output", "text", "--query", "Plaintext"))
				if !bytes.Equal(got, secret) {
					t.Errorf("aws kms decrypt: %d bytes that are not the plaintext", len(got))
				}

				var dk struct{ Plaintext, CiphertextBlob, KeyId string }
				if err := json.Unmarshal(cli("kms", "generate-data-key", "--key-id", alias, "--key-spec", "AES_256",
					"--encryption-context", "tenant=acme", "--output", "json"), &dk); err != nil {
					t.Fatalf("aws kms generate-data-key output: %v", err)
				}
				key, err1 := base64.StdEncoding.DecodeString(dk.Plaintext)
				blob, err2 := base64.StdEncoding.DecodeString(dk.CiphertextBlob)
				if err1 != nil || err2 != nil || len(key) != 32 || len(blob) == 0 || dk.KeyId != s.keyARN() {
					t.Fatalf("aws kms generate-data-key: %d-byte key, %d-byte blob, key %q (%v, %v)", len(key), len(blob), dk.KeyId, err1, err2)
				}
				sc.AddSecret("aws cli data key "+ep.name, key)
				dkFile := s.path("dk-" + strings.ReplaceAll(ep.name, " ", "-") + ".enc")
				if err := os.WriteFile(dkFile, blob, 0o600); err != nil {
					t.Fatal(err)
				}
				back := b64(cli("kms", "decrypt", "--ciphertext-blob", "fileb://"+dkFile, "--encryption-context", "tenant=acme",
					"--output", "text", "--query", "Plaintext"))
				if !bytes.Equal(back, key) {
					t.Error("the data key's CiphertextBlob does not decrypt to its Plaintext")
				}

				rnd := b64(cli("kms", "generate-random", "--number-of-bytes", "32", "--output", "text", "--query", "Plaintext"))
				if len(rnd) != 32 || bytes.Count(rnd, []byte{0}) == 32 {
					t.Errorf("aws kms generate-random: %d bytes", len(rnd))
				}
			})
		}
	})

	t.Run("aws-sdk-go-v2", func(t *testing.T) {
		ctx := context.Background()
		for _, ep := range endpoints {
			// The SDK as any app configures it for another endpoint, and the
			// client package's kms.Client for the same address.
			cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithCredentialsProvider(dummyClient.provider()))
			if err != nil {
				t.Fatal(err)
			}
			plain := kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(ep.url) })
			viaClient, err := client.New(ctx, ep.addr)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				kms  *kms.Client
			}{{"BaseEndpoint", plain}, {"client.New", viaClient}} {
				t.Run(ep.name+"/"+c.name, func(t *testing.T) {
					dec, err := c.kms.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, EncryptionContext: ec})
					if err != nil {
						t.Fatalf("Decrypt: %v", err)
					}
					if !bytes.Equal(dec.Plaintext, secret) || aws.ToString(dec.KeyId) != s.keyARN() || dec.CiphertextForRecipient != nil {
						t.Errorf("Decrypt: %d bytes, key %q, CiphertextForRecipient %d bytes", len(dec.Plaintext), aws.ToString(dec.KeyId), len(dec.CiphertextForRecipient))
					}
					dk, err := c.kms.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(alias), KeySpec: types.DataKeySpecAes256, EncryptionContext: ec})
					if err != nil {
						t.Fatalf("GenerateDataKey: %v", err)
					}
					sc.AddSecret("sdk data key "+ep.name+" "+c.name, dk.Plaintext)
					back, err := c.kms.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, EncryptionContext: ec})
					if err != nil || len(dk.Plaintext) != 32 || !bytes.Equal(back.Plaintext, dk.Plaintext) {
						t.Errorf("GenerateDataKey: %d-byte key that does not decrypt back (%v)", len(dk.Plaintext), err)
					}
					rnd, err := c.kms.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
					if err != nil || len(rnd.Plaintext) != 32 {
						t.Errorf("GenerateRandom: %v", err)
					}
				})
			}
		}
	})

	if code := bridge.stop(); code != 0 {
		t.Errorf("the bridge exited with status %d after SIGTERM, want 0", code)
	}
}
