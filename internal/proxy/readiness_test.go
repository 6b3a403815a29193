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
