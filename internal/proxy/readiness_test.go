package proxy_test

import (
	"encoding/json"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"

	"net/http"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// TestReadyzWhenKMSRefusesTheAttestation: when KMS refuses the enclave's
// attestation document (here: devkms's clock is ten minutes ahead, so every
// document is too old, as with an enclave clock far behind), every attested
// call would fail the same way; /readyz turns not ready and says why, and
// turns ready again with the first attested call KMS accepts.
func TestReadyzWhenKMSRefusesTheAttestation(t *testing.T) {
	var ahead atomic.Int64
	e := enclavetest.Start(t, enclavetest.Options{DevKMS: []devkmstest.Option{
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
		}),
	}})
	c := e.Client(t, e.ParentAddr)
	hc, _ := e.HTTPClient(e.LocalAddr)
	readyz := func() (int, map[string]any) {
		t.Helper()
		resp, err := hc.Get("http://kmsproxy.enclave/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("/readyz: %v: %s", err, b)
		}
		kmsPart, _ := body["kms"].(map[string]any)
		return resp.StatusCode, kmsPart
	}
	random := func() error {
		_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		return err
	}
	if err := random(); err != nil {
		t.Fatal(err)
	}
	if code, k := readyz(); code != 200 || k["attestation_accepted"] != true {
		t.Fatalf("/readyz while KMS accepts the documents: %d %v", code, k)
	}

	ahead.Store(int64(10 * time.Minute))
	err := random()
	wantCode(t, err, "ValidationException")
	code, k := readyz()
	if code != 503 || k["attestation_accepted"] != false || !strings.Contains(k["refused"].(string), "too old") {
		t.Fatalf("/readyz after KMS refused the document: %d %v", code, k)
	}
	if !strings.Contains(e.Logs.String(), "KMS refused the enclave's attestation document") {
		t.Errorf("no log line says that KMS refused the document:\n%s", e.Logs.String())
	}

	// The clock is right again: the next attested call KMS accepts makes
	// kmsproxyd ready.
	ahead.Store(0)
	if err := random(); err != nil {
		t.Fatal(err)
	}
	if code, k := readyz(); code != 200 || k["attestation_accepted"] != true || k["refused"] != nil {
		t.Fatalf("/readyz after KMS accepted a document again: %d %v", code, k)
	}
}

// TestReadyzIgnoresKeyPolicyDenials: a key policy refusing the enclave
// concerns one key, not every attested call: /readyz stays ready.
func TestReadyzIgnoresKeyPolicyDenials(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{KeyPolicyPCRs: enclavetest.PCRsFor("another image")})
	c := e.Client(t, e.ParentAddr)
	blob := encryptAsOperator(t, e, []byte("x"), nil)
	_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob})
	wantCode(t, err, "AccessDeniedException")
	hc, _ := e.HTTPClient(e.LocalAddr)
	resp, err := hc.Get("http://kmsproxy.enclave/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz after a key policy denial: %d, want 200", resp.StatusCode)
	}
}

// TestCallerCannotMakeKmsproxydNotReady: a caller of a listener that may
// call an attested operation (the parent under the image's policy) sends a
// value KMS refuses and echoes in its ValidationException ("1 validation
// error detected: Value 'X' at 'encryptionAlgorithm' ..."), with
// "recipient" or "attestation" in X, hoping kmsproxyd takes it for KMS
// refusing the enclave's own attestation document and turns /readyz not
// ready. It does not: a refusal counts only when no string of the request
// mentions either word.
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
