package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

const hardened = `
listeners:
  parent:
    operations: [Decrypt, GenerateDataKey, Encrypt]
    keys: ["arn:aws:kms:*:111122223333:key/*", "alias/app-*"]
    encryption_context: {tenant: "*"}
    plaintext: true
    control: [healthz, readyz]
  local:
    operations: ["*"]
    plaintext: false
    control: ["*"]
`

func TestPolicyRules(t *testing.T) {
	pol, err := policy.Parse([]byte(hardened), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := enclavetest.Start(t, enclavetest.Options{Policy: pol})
	parent := e.Client(t, e.ParentAddr)
	local := e.Client(t, e.LocalAddr)
	tenant := map[string]string{"tenant": "acme"}
	blob := encryptAsOperator(t, e, []byte("tenant secret"), tenant)
	noTenant := encryptAsOperator(t, e, []byte("no tenant"), nil)

	t.Run("allowed by ARN", func(t *testing.T) {
		out, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: &e.KeyARN, EncryptionContext: tenant})
		if err != nil || string(out.Plaintext) != "tenant secret" {
			t.Fatalf("Decrypt: %v", err)
		}
	})
	t.Run("allowed by alias", func(t *testing.T) {
		out, err := parent.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-data"), NumberOfBytes: aws.Int32(32), EncryptionContext: tenant})
		if err != nil || len(out.Plaintext) != 32 {
			t.Fatalf("GenerateDataKey: %v", err)
		}
	})
	for _, tt := range []struct {
		name string
		call func() error
		want string
	}{
		{"operation not listed", func() error {
			_, err := parent.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
			return err
		}, "operations"},
		{"decrypt without key id", func() error {
			_, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: tenant})
			return err
		}, "KeyId"},
		{"bare key id not in patterns", func() error {
			_, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, KeyId: &e.KeyID, EncryptionContext: tenant})
			return err
		}, "keys"},
		{"alias of another app", func() error {
			_, err := parent.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/other"), Plaintext: []byte("x"), EncryptionContext: tenant})
			return err
		}, "keys"},
		{"missing tenant context", func() error {
			_, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: noTenant, KeyId: &e.KeyARN})
			return err
		}, "tenant"},
		{"no plaintext on local", func() error {
			_, err := local.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: tenant})
			return err
		}, "plaintext"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			wantCode(t, err, "AccessDeniedException")
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("denial %q does not mention %q", err, tt.want)
			}
		})
	}
	t.Run("local pass-through without plaintext", func(t *testing.T) {
		if _, err := local.Encrypt(ctx, &kms.EncryptInput{KeyId: &e.KeyID, Plaintext: []byte("x")}); err != nil {
			t.Fatalf("Encrypt on local: %v", err)
		}
	})
	t.Run("control endpoints", func(t *testing.T) {
		for _, tt := range []struct {
			addr, path string
			want       int
		}{
			{e.ParentAddr, "/readyz", 200},
			{e.ParentAddr, "/metrics", 403},
			{e.ParentAddr, "/v1/info", 403},
			{e.LocalAddr, "/metrics", 200},
		} {
			hc, _ := e.HTTPClient(tt.addr)
			resp, err := hc.Get("http://kmsproxy.enclave" + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s: %d, want %d", tt.addr, tt.path, resp.StatusCode, tt.want)
			}
		}
	})
}

func pushCreds(t testing.TB, e *enclavetest.Env, addr string, c credentials.PushedCredentials) (int, string) {
	t.Helper()
	body, err := credentials.EncodePush(c)
	if err != nil {
		t.Fatal(err)
	}
	hc, _ := e.HTTPClient(addr)
	req, _ := http.NewRequest(http.MethodPut, "http://kmsproxy.enclave/v1/credentials", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPushedCredentials(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{PushCredentials: true})
	c := e.Client(t, e.ParentAddr)
	hc, _ := e.HTTPClient(e.ParentAddr)
	readyz := func() int {
		resp, err := hc.Get("http://kmsproxy.enclave/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := readyz(); code != 503 {
		t.Fatalf("/readyz before any push: %d", code)
	}
	_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	wantCode(t, err, "KMSInternalException")
	if !strings.Contains(err.Error(), "credentials") {
		t.Errorf("error without credentials does not say so: %v", err)
	}
	if code, body := pushCreds(t, e, e.ParentAddr, enclavetest.RoleCredentials(time.Now().Add(-time.Minute))); code != 400 || !strings.Contains(body, "xpire") {
		t.Fatalf("push of expired credentials: %d %s", code, body)
	}
	if code, body := pushCreds(t, e, e.LocalAddr, enclavetest.RoleCredentials(time.Now().Add(time.Hour))); code != 403 || !strings.Contains(body, "AccessDenied") || !strings.Contains(body, `"kmsproxyd policy: `) {
		t.Fatalf("push on the local listener (not allowed by the default policy): %d %s", code, body)
	}
	if code, body := pushCreds(t, e, e.ParentAddr, enclavetest.RoleCredentials(time.Now().Add(time.Hour))); code != 200 {
		t.Fatalf("push: %d %s", code, body)
	}
	if code := readyz(); code != 200 {
		t.Fatalf("/readyz after push: %d", code)
	}
	if _, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Fatalf("after push: %v", err)
	}
	e.CheckLogsFree(t, []byte(enclavetest.RoleSecretKey), []byte(enclavetest.RoleToken))
}

func TestPushRefusedInEnvMode(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	if code, body := pushCreds(t, e, e.ParentAddr, enclavetest.RoleCredentials(time.Now().Add(time.Hour))); code != 409 || !strings.Contains(body, "--credentials=env") {
		t.Fatalf("push in env mode: %d %s", code, body)
	}
	// A listener the policy does not let push learns no more than that,
	// not the credentials mode.
	if code, body := pushCreds(t, e, e.LocalAddr, enclavetest.RoleCredentials(time.Now().Add(time.Hour))); code != 403 || strings.Contains(body, "--credentials") {
		t.Fatalf("push in env mode on a listener that may not push: %d %s", code, body)
	}
}

// TestRotationUnderLoad rotates the recipient key every 200 ms while
// clients decrypt through kmsproxyd: no request may fail.
func TestRotationUnderLoad(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{KeyRotation: 200 * time.Millisecond})
	secret := []byte("rotating secret")
	blob := encryptAsOperator(t, e, secret, nil)
	c := e.Client(t, e.ParentAddr)
	lctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for lctx.Err() == nil && e.Recipient.Status().Rotations < 4 {
				out, err := c.Decrypt(lctx, &kms.DecryptInput{CiphertextBlob: blob})
				if err != nil || !bytes.Equal(out.Plaintext, secret) {
					if lctx.Err() == nil {
						failed.Add(1)
						t.Errorf("Decrypt during rotation: %v", err)
					}
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if rot := e.Recipient.Status().Rotations; rot < 4 {
		t.Fatalf("only %d rotations in 90s", rot)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during rotations", failed.Load(), ok.Load()+failed.Load())
	}
	t.Logf("%d decrypts across %d rotations, 0 failures", ok.Load(), e.Recipient.Status().Rotations)
}

// flakyAttester fails or panics on demand, as a broken NSM (or a bug) would.
type flakyAttester struct {
	inner attestation.Attester
	mode  atomic.Int32 // 0 ok, 1 fail, 2 panic
}

func (f *flakyAttester) Attest(ctx context.Context, r attestation.Request) ([]byte, error) {
	switch f.mode.Load() {
	case 1:
		return nil, errors.New("nsm: ioctl failed")
	case 2:
		panic("attester bug")
	}
	return f.inner.Attest(ctx, r)
}

func TestNSMFailureAndPanic(t *testing.T) {
	var fa *flakyAttester
	e := enclavetest.Start(t, enclavetest.Options{
		AttestationTTL: -1, // a fresh document per request: the NSM is on the path
		Attester: func(a attestation.Attester) attestation.Attester {
			fa = &flakyAttester{inner: a}
			return fa
		},
	})
	c := e.Client(t, e.ParentAddr)
	call := func() error {
		_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		return err
	}
	fa.mode.Store(1)
	err := call()
	wantCode(t, err, "KMSInternalException")
	if !strings.Contains(err.Error(), "attestation") {
		t.Errorf("NSM failure does not name the step: %v", err)
	}
	fa.mode.Store(2)
	wantCode(t, call(), "KMSInternalException")
	if !strings.Contains(e.Logs.String(), "panic in handler") {
		t.Error("the panic was not logged")
	}
	fa.mode.Store(0)
	if err := call(); err != nil {
		t.Fatalf("after the NSM recovered: %v", err)
	}
}
