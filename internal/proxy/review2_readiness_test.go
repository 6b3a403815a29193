package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// TestCallerCannotMakeKmsproxydNotReady (review, failing attack test): any
// caller of a listener that may call an attested operation (the parent
// under the image's policy) sends a request with a value KMS refuses and
// echoes in its ValidationException ("1 validation error detected: Value
// 'X' at 'encryptionAlgorithm' ..."). When X contains "recipient" or
// "attestation", kmsproxyd takes KMS's answer for a refusal of the
// enclave's own attestation document: /readyz turns 503 with
// attestation_accepted false, kmsproxy_ready drops to 0, and an Error log
// line tells the operator to check the enclave's clock. The enclave's
// documents are fine all along; one request per accepted call keeps it
// flapping.
func TestCallerCannotMakeKmsproxydNotReady(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{Policy: mustPolicy(t, `listeners:
  parent:
    operations: [Decrypt, GenerateDataKey, GenerateRandom, Encrypt]
    plaintext: true
    control: [healthz, readyz, metrics, attestation]
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
`)})
	parent := e.Client(t, e.ParentAddr)
	blob := encryptAsOperator(t, e, []byte("any secret"), nil)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Decrypt with EncryptionAlgorithm naming the recipient", func() error {
			_, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionAlgorithm: "RECIPIENT"})
			return err
		}},
		// Stripping the quoted value from KMS's message before looking
		// for the words is not enough: KMS does not escape quotes in it.
		{"Decrypt with EncryptionAlgorithm quoting its way out", func() error {
			_, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionAlgorithm: "A' Recipient 'B"})
			return err
		}},
		{"GenerateDataKey with KeySpec naming the attestation", func() error {
			_, err := parent.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &e.KeyID, KeySpec: types.DataKeySpec("ATTESTATION")})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A good attested call first: ready.
			if _, err := parent.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
				t.Fatal(err)
			}
			wantCode(t, tc.call(), "ValidationException")
			code, body := readyzOf(t, e, e.LocalAddr)
			if code != http.StatusOK {
				t.Errorf("/readyz on the local listener after one bad request from the parent: %d %s, want 200 (KMS never refused the enclave's document)", code, body)
			}
		})
	}
	if strings.Contains(e.Logs.String(), "KMS refused the enclave's attestation document") {
		t.Error("kmsproxyd logged that KMS refused the enclave's attestation document, after a caller's invalid request")
	}
}

func readyzOf(t testing.TB, e *enclavetest.Env, addr string) (int, string) {
	t.Helper()
	hc, err := e.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://kmsproxy.enclave/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
