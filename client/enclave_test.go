package client_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// encryptAsOperator encrypts plaintext under the Env's key directly with
// devkms, as the operator does before deploying the enclave.
func encryptAsOperator(t testing.TB, env *enclavetest.Env, plaintext []byte, ec map[string]string) []byte {
	t.Helper()
	out, err := env.Operator(t).Encrypt(context.Background(), &kms.EncryptInput{KeyId: &env.KeyID, Plaintext: plaintext, EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	return out.CiphertextBlob
}

func TestKMSClientThroughKmsproxyd(t *testing.T) {
	env := enclavetest.Start(t, enclavetest.Options{})
	ctx := context.Background()
	secret := []byte("the database password")
	ct := encryptAsOperator(t, env, secret, map[string]string{"tenant": "acme"})

	for _, l := range []struct{ name, addr string }{{"parent", env.ParentAddr}, {"local", env.LocalAddr}} {
		addr := l.addr
		t.Run(l.name, func(t *testing.T) {
			c, err := client.New(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct, EncryptionContext: map[string]string{"tenant": "acme"}})
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(dec.Plaintext, secret) || aws.ToString(dec.KeyId) != env.KeyARN || dec.CiphertextForRecipient != nil {
				t.Errorf("Decrypt = %q, key %q, CiphertextForRecipient %d bytes", dec.Plaintext, aws.ToString(dec.KeyId), len(dec.CiphertextForRecipient))
			}

			dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-data"), KeySpec: types.DataKeySpecAes256})
			if err != nil {
				t.Fatalf("GenerateDataKey: %v", err)
			}
			back, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
			if err != nil || len(dk.Plaintext) != 32 || !bytes.Equal(back.Plaintext, dk.Plaintext) {
				t.Errorf("data key: %d bytes, decrypts back: %v", len(dk.Plaintext), err)
			}

			rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(64)})
			if err != nil || len(rnd.Plaintext) != 64 {
				t.Errorf("GenerateRandom: %d bytes, %v", len(rnd.Plaintext), err)
			}

			pair, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: &env.KeyID, KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			if err != nil {
				t.Fatalf("GenerateDataKeyPair: %v", err)
			}
			priv, err := x509.ParsePKCS8PrivateKey(pair.PrivateKeyPlaintext)
			if err != nil {
				t.Fatalf("the pair's private key does not parse: %v", err)
			}
			pub, err := x509.ParsePKIXPublicKey(pair.PublicKey)
			signer, ok := priv.(crypto.Signer)
			if err != nil || !ok || !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
				t.Errorf("the private key does not match the public key: %v", err)
			}
		})
	}
}

func TestKMSErrorsPassThrough(t *testing.T) {
	env := enclavetest.Start(t, enclavetest.Options{KeyPolicyPCRs: enclavetest.PCRsFor("another image")})
	ctx := context.Background()
	ct := encryptAsOperator(t, env, []byte("x"), nil)
	c, err := client.New(ctx, env.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException" {
		t.Fatalf("Decrypt by an image the key does not trust = %v, want AccessDeniedException", err)
	}
	want := "User: " + enclavetest.SessionARN + " is not authorized to perform: kms:Decrypt on resource: " + env.KeyARN
	if msg := apiErr.ErrorMessage(); len(msg) < len(want) || msg[:len(want)] != want {
		t.Errorf("message = %q, want KMS's, starting %q", msg, want)
	}
}

// TestConcurrentCalls shares one client among goroutines, as a server
// app would; every call gets its own answer.
func TestConcurrentCalls(t *testing.T) {
	env := enclavetest.Start(t, enclavetest.Options{})
	ctx := context.Background()
	c, err := client.New(ctx, env.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	cts := make([][]byte, n)
	for i := range n {
		cts[i] = encryptAsOperator(t, env, []byte("secret "+strconv.Itoa(i)), nil)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: cts[i]})
			if err == nil && string(out.Plaintext) != "secret "+strconv.Itoa(i) {
				err = fmt.Errorf("call %d got %q", i, out.Plaintext)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestControlEndpoints(t *testing.T) {
	env := enclavetest.Start(t, enclavetest.Options{})
	ctx := context.Background()

	info, err := client.GetInfo(ctx, env.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if got, want := info.PCRs[strconv.Itoa(i)], hex.EncodeToString(env.PCRs[i]); got != want {
			t.Errorf("PCR%d = %s, want %s", i, got, want)
		}
	}
	if info.KeyFingerprint == "" || info.KeyBits != 2048 || info.Version == "" {
		t.Errorf("info = %+v", info)
	}

	nonce := []byte("verifier nonce 42")
	doc, err := client.Attestation(ctx, env.ParentAddr, client.AttestationRequest{Nonce: nonce, UserData: []byte("who")})
	if err != nil {
		t.Fatal(err)
	}
	d, err := attestation.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(d, env.CA.Roots(), time.Now()); err != nil {
		t.Fatalf("the document does not verify: %v", err)
	}
	// The user data comes back inside kmsproxyd's requested-attestation
	// structure, naming the listener.
	req, err := attestation.ParseRequested(d.UserData)
	if err != nil || !bytes.Equal(d.Nonce, nonce) || string(req.Data) != "who" || req.Listener != "parent" || !bytes.Equal(d.PCRs[0], env.PCRs[0]) {
		t.Errorf("document nonce %q, user data %q (%v)", d.Nonce, d.UserData, err)
	}

	hc, err := client.HTTPClient(env.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(client.Endpoint + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz = %d", resp.StatusCode)
	}
}

func TestPushCredentials(t *testing.T) {
	ctx := context.Background()
	creds := aws.Credentials{AccessKeyID: enclavetest.RoleAccessKey, SecretAccessKey: enclavetest.RoleSecretKey,
		SessionToken: enclavetest.RoleToken, CanExpire: true, Expires: time.Now().Add(time.Hour)}

	env := enclavetest.Start(t, enclavetest.Options{PushCredentials: true})
	if env.Push.Status().Ready {
		t.Fatal("ready before any push")
	}
	st, err := client.PushCredentials(ctx, env.ParentAddr, creds)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Ready || st.Mode != "push" || st.Expires.Sub(creds.Expires).Abs() > time.Second {
		t.Errorf("status = %+v", st)
	}
	c, err := client.New(ctx, env.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Errorf("KMS call with the pushed credentials: %v", err)
	}

	// Refusals come back with kmsproxyd's reason and without the secret.
	expired := creds
	expired.Expires = time.Now().Add(-time.Minute)
	_, err = client.PushCredentials(ctx, env.ParentAddr, expired)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != "ValidationException" {
		t.Errorf("pushing expired credentials = %v, want ValidationException", err)
	}
	other := enclavetest.Start(t, enclavetest.Options{})
	_, err = client.PushCredentials(ctx, other.ParentAddr, creds)
	if !errors.As(err, &e) || e.StatusCode != http.StatusConflict {
		t.Errorf("pushing to a kmsproxyd in env mode = %v, want 409", err)
	}
	if err != nil && bytes.Contains([]byte(err.Error()), []byte(enclavetest.RoleSecretKey)) {
		t.Errorf("the error contains the secret: %v", err)
	}
}
