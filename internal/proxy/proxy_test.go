package proxy_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

var ctx = context.Background()

// apiErrorCode returns the KMS exception name of err, or "".
func apiErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := apiErrorCode(err); got != code {
		t.Fatalf("error = %v, want %s", err, code)
	}
}

// encryptAsOperator encrypts plaintext under the env's key directly at
// devkms, as the operator would.
func encryptAsOperator(t testing.TB, e *enclavetest.Env, plaintext []byte, ec map[string]string) []byte {
	t.Helper()
	out, err := e.Operator(t).Encrypt(ctx, &kms.EncryptInput{KeyId: &e.KeyID, Plaintext: plaintext, EncryptionContext: ec})
	if err != nil {
		t.Fatalf("operator Encrypt: %v", err)
	}
	return out.CiphertextBlob
}

func TestAttestedOperations(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	ecdhKey := e.CreateKey(t, devkms.SeedKey{KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT"})
	var secrets [][]byte
	for _, listener := range []struct{ name, addr string }{{"parent", e.ParentAddr}, {"local", e.LocalAddr}} {
		t.Run(listener.name, func(t *testing.T) {
			c := e.Client(t, listener.addr)

			secret := []byte("database password for " + listener.name)
			secrets = append(secrets, secret)
			ec := map[string]string{"tenant": "acme"}
			blob := encryptAsOperator(t, e, secret, ec)
			dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob, EncryptionContext: ec})
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(dec.Plaintext, secret) || aws.ToString(dec.KeyId) != e.KeyARN || dec.CiphertextForRecipient != nil {
				t.Fatalf("Decrypt = %q key %s cfr %d bytes", dec.Plaintext, aws.ToString(dec.KeyId), len(dec.CiphertextForRecipient))
			}

			dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-data"), KeySpec: types.DataKeySpecAes256})
			if err != nil {
				t.Fatalf("GenerateDataKey: %v", err)
			}
			if len(dk.Plaintext) != 32 || len(dk.CiphertextBlob) == 0 {
				t.Fatalf("GenerateDataKey: plaintext %d bytes, blob %d bytes", len(dk.Plaintext), len(dk.CiphertextBlob))
			}
			secrets = append(secrets, dk.Plaintext)
			again, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob, KeyId: &e.KeyID})
			if err != nil || !bytes.Equal(again.Plaintext, dk.Plaintext) {
				t.Fatalf("Decrypt of the data key: %v", err)
			}

			kp, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: &e.KeyID, KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			if err != nil {
				t.Fatalf("GenerateDataKeyPair: %v", err)
			}
			priv, err := x509.ParsePKCS8PrivateKey(kp.PrivateKeyPlaintext)
			if err != nil {
				t.Fatalf("GenerateDataKeyPair private key: %v", err)
			}
			pub, err := x509.ParsePKIXPublicKey(kp.PublicKey)
			if err != nil || !priv.(*ecdsa.PrivateKey).PublicKey.Equal(pub) {
				t.Fatalf("GenerateDataKeyPair: public key does not match the private key (%v)", err)
			}
			if len(kp.PrivateKeyCiphertextBlob) == 0 {
				t.Fatal("GenerateDataKeyPair: no PrivateKeyCiphertextBlob")
			}

			rnd, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(48)})
			if err != nil || len(rnd.Plaintext) != 48 {
				t.Fatalf("GenerateRandom: %d bytes, %v", len(rnd.Plaintext), err)
			}

			peer, _ := ecdh.P256().GenerateKey(rand.Reader)
			peerDER, _ := x509.MarshalPKIXPublicKey(peer.PublicKey())
			ds, err := c.DeriveSharedSecret(ctx, &kms.DeriveSharedSecretInput{
				KeyId: &ecdhKey, KeyAgreementAlgorithm: types.KeyAgreementAlgorithmSpecEcdh, PublicKey: peerDER,
			})
			if err != nil {
				t.Fatalf("DeriveSharedSecret: %v", err)
			}
			gp, err := e.Operator(t).GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &ecdhKey})
			if err != nil {
				t.Fatal(err)
			}
			kmsPub, _ := x509.ParsePKIXPublicKey(gp.PublicKey)
			kmsECDH, _ := kmsPub.(*ecdsa.PublicKey).ECDH()
			want, _ := peer.ECDH(kmsECDH)
			if !bytes.Equal(ds.SharedSecret, want) {
				t.Fatal("DeriveSharedSecret: the shared secret differs from our own ECDH")
			}
		})
	}
	e.CheckLogsFree(t, secrets...)
}

func TestPassThroughOperations(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	c := e.Client(t, e.ParentAddr)
	rsaKey := e.CreateKey(t, devkms.SeedKey{KeySpec: "RSA_2048", KeyUsage: "SIGN_VERIFY"})
	macKey := e.CreateKey(t, devkms.SeedKey{KeySpec: "HMAC_256", KeyUsage: "GENERATE_VERIFY_MAC"})
	other := e.CreateKey(t, devkms.SeedKey{})

	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &e.KeyID, Plaintext: []byte("x")})
	if err != nil || len(enc.CiphertextBlob) == 0 {
		t.Fatalf("Encrypt: %v", err)
	}
	if _, err := c.GenerateDataKeyWithoutPlaintext(ctx, &kms.GenerateDataKeyWithoutPlaintextInput{KeyId: &e.KeyID, NumberOfBytes: aws.Int32(16)}); err != nil {
		t.Fatalf("GenerateDataKeyWithoutPlaintext: %v", err)
	}
	if _, err := c.GenerateDataKeyPairWithoutPlaintext(ctx, &kms.GenerateDataKeyPairWithoutPlaintextInput{KeyId: &e.KeyID, KeyPairSpec: types.DataKeyPairSpecRsa2048}); err != nil {
		t.Fatalf("GenerateDataKeyPairWithoutPlaintext: %v", err)
	}
	re, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{CiphertextBlob: enc.CiphertextBlob, DestinationKeyId: &other})
	if err != nil || aws.ToString(re.KeyId) != e.DevKMS.KeyARN(other) {
		t.Fatalf("ReEncrypt: %v", err)
	}
	dk, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: &e.KeyID})
	if err != nil || dk.KeyMetadata.CreationDate == nil || aws.ToString(dk.KeyMetadata.Arn) != e.KeyARN {
		t.Fatalf("DescribeKey: %+v, %v", dk, err)
	}
	gp, err := c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: &rsaKey})
	if err != nil {
		t.Fatalf("GetPublicKey: %v", err)
	}
	msg := []byte("signed through kmsproxyd")
	sig, err := c.Sign(ctx, &kms.SignInput{KeyId: &rsaKey, Message: msg, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	v, err := c.Verify(ctx, &kms.VerifyInput{KeyId: &rsaKey, Message: msg, Signature: sig.Signature, SigningAlgorithm: types.SigningAlgorithmSpecRsassaPssSha256})
	if err != nil || !v.SignatureValid {
		t.Fatalf("Verify: %v", err)
	}
	pub, _ := x509.ParsePKIXPublicKey(gp.PublicKey)
	digest := sha256Sum(msg)
	if err := rsa.VerifyPSS(pub.(*rsa.PublicKey), cryptoSHA256, digest, sig.Signature, nil); err != nil {
		t.Fatalf("signature does not verify with the public key: %v", err)
	}
	mac, err := c.GenerateMac(ctx, &kms.GenerateMacInput{KeyId: &macKey, Message: msg, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	if err != nil {
		t.Fatalf("GenerateMac: %v", err)
	}
	vm, err := c.VerifyMac(ctx, &kms.VerifyMacInput{KeyId: &macKey, Message: msg, Mac: mac.Mac, MacAlgorithm: types.MacAlgorithmSpecHmacSha256})
	if err != nil || !vm.MacValid {
		t.Fatalf("VerifyMac: %v", err)
	}
}

func TestCallerRecipientPassesThrough(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	own, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&own.PublicKey)
	sim, err := nsmsim.New(e.CA, nsmsim.Options{PCRs: e.PCRs})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("for my own key only")
	blob := encryptAsOperator(t, e, secret, nil)
	out, err := e.Client(t, e.ParentAddr).Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: blob,
		Recipient:      &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256},
	})
	if err != nil {
		t.Fatalf("Decrypt with the caller's Recipient: %v", err)
	}
	if out.Plaintext != nil {
		t.Fatal("kmsproxyd answered a caller-attested Decrypt with plaintext")
	}
	got, err := cms.Decrypt(out.CiphertextForRecipient, own)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("caller's envelope: %q, %v", got, err)
	}
}

func TestKMSErrorsPassThrough(t *testing.T) {
	// The key trusts another image: KMS (devkms) refuses the enclave.
	e := enclavetest.Start(t, enclavetest.Options{KeyPolicyPCRs: enclavetest.PCRsFor("another image")})
	c := e.Client(t, e.ParentAddr)
	blob := encryptAsOperator(t, e, []byte("not for this enclave"), nil)
	_, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob})
	wantCode(t, err, "AccessDeniedException")
	var ae smithy.APIError
	errors.As(err, &ae)
	if !strings.Contains(ae.ErrorMessage(), "kms:Decrypt") || !strings.Contains(ae.ErrorMessage(), enclavetest.SessionARN) {
		t.Errorf("AccessDenied message not KMS's: %q", ae.ErrorMessage())
	}

	_, err = c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("11111111-2222-3333-4444-555555555555")})
	wantCode(t, err, "NotFoundException")
	_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("garbage ciphertext blob")})
	wantCode(t, err, "InvalidCiphertextException")
	_, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(5000)})
	wantCode(t, err, "ValidationException")
}

// rawCall posts a KMS request as raw bytes, for inputs SDKs cannot send.
func rawCall(t testing.TB, e *enclavetest.Env, target, contentType string, body io.Reader) (int, map[string]string) {
	t.Helper()
	hc, err := e.HTTPClient(e.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://kmsproxy.enclave/", body)
	if target != "" {
		req.Header.Set("X-Amz-Target", target)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("raw call: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

func TestBadRequests(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	const ct = "application/x-amz-json-1.1"
	for _, tt := range []struct {
		name, target, ct, body string
		status                 int
		typ                    string
	}{
		{"unknown operation", "TrentService.CreateKey", ct, "{}", 400, "UnknownOperationException"},
		{"no target", "", ct, "{}", 400, "UnknownOperationException"},
		{"other service", "DynamoDB_20120810.GetItem", ct, "{}", 400, "UnknownOperationException"},
		{"malformed json", "TrentService.Decrypt", ct, `{"CiphertextBlob":`, 400, "SerializationException"},
		{"bad base64", "TrentService.Decrypt", ct, `{"CiphertextBlob":"@@@"}`, 400, "SerializationException"},
		{"wrong type", "TrentService.GenerateRandom", ct, `{"NumberOfBytes":"ten"}`, 400, "SerializationException"},
		{"wrong content type", "TrentService.Decrypt", "text/plain", "{}", 400, "SerializationException"},
		{"body over limit", "TrentService.Decrypt", ct, `{"KeyId":"` + strings.Repeat("a", 70<<10) + `"}`, 400, "ValidationException"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, m := rawCall(t, e, tt.target, tt.ct, strings.NewReader(tt.body))
			if status != tt.status || m["__type"] != tt.typ || m["message"] == "" {
				t.Fatalf("got %d %v, want %d %s", status, m, tt.status, tt.typ)
			}
		})
	}
	// Still serving.
	if _, err := e.Client(t, e.ParentAddr).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Fatalf("after bad requests: %v", err)
	}
}

func TestControlEndpoints(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	hc, err := e.HTTPClient(e.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, []byte) {
		resp, err := hc.Get("http://kmsproxy.enclave" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := get("/healthz"); code != 200 || !strings.Contains(string(b), "serving") {
		t.Errorf("/healthz: %d %s", code, b)
	}
	code, b := get("/readyz")
	var rd struct {
		Ready     bool `json:"ready"`
		Recipient struct {
			KeyFingerprint string `json:"key_fingerprint"`
		} `json:"recipient"`
		Credentials struct {
			Ready bool `json:"ready"`
		} `json:"credentials"`
	}
	if err := json.Unmarshal(b, &rd); err != nil || code != 200 || !rd.Ready || !rd.Credentials.Ready || len(rd.Recipient.KeyFingerprint) != 64 {
		t.Errorf("/readyz: %d %s", code, b)
	}
	// One attested call so the step metrics have samples.
	if _, err := e.Client(t, e.ParentAddr).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
		t.Fatal(err)
	}
	code, b = get("/metrics")
	for _, m := range []string{
		`kmsproxy_requests_total{listener="parent",operation="GenerateRandom",outcome="ok"} 1`,
		`kmsproxy_step_duration_seconds_count{listener="parent",step="upstream"} 1`,
		`kmsproxy_step_duration_seconds_count{listener="parent",step="envelope"} 1`,
		`kmsproxy_step_duration_seconds_count{listener="parent",step="attestation"} 1`,
		`kmsproxy_request_duration_seconds_count{listener="parent",operation="GenerateRandom"} 1`,
		`kmsproxy_inflight_requests{listener="parent"} 0`,
		`kmsproxy_open_connections{listener="parent"}`,
		"kmsproxy_upstream_connections",
		"kmsproxy_credentials_expiry_timestamp_seconds",
		"kmsproxy_clock_offset_seconds",
	} {
		if code != 200 || !strings.Contains(string(b), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	code, b = get("/v1/info")
	var inf struct {
		Attestation    string            `json:"attestation"`
		PCRs           map[string]string `json:"pcrs"`
		KeyFingerprint string            `json:"key_fingerprint"`
		Policy         struct {
			Default bool `json:"default"`
		} `json:"policy"`
	}
	if err := json.Unmarshal(b, &inf); err != nil || code != 200 || inf.PCRs["0"] != hexOf(e.PCRs[0]) || inf.Attestation != "Nitro Enclave" || inf.KeyFingerprint != rd.Recipient.KeyFingerprint || !inf.Policy.Default {
		t.Errorf("/v1/info: %d %s", code, b)
	}

	nonce := []byte("remote verifier nonce 0123456789")
	body, _ := json.Marshal(map[string][]byte{"nonce": nonce, "user_data": []byte("hello")})
	resp, err := hc.Post("http://kmsproxy.enclave/v1/attestation", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var att struct{ Document string }
	_ = json.NewDecoder(resp.Body).Decode(&att)
	resp.Body.Close()
	raw, _ := base64.StdEncoding.DecodeString(att.Document)
	doc, err := attestation.Parse(raw)
	if err != nil {
		t.Fatalf("/v1/attestation document: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(e.CA.RootCertificate())
	if err := attestation.Verify(doc, roots, time.Now()); err != nil || !bytes.Equal(doc.Nonce, nonce) {
		t.Fatalf("/v1/attestation: verify %v, nonce %q", err, doc.Nonce)
	}
	if req, err := attestation.ParseRequested(doc.UserData); err != nil || req.Listener != "parent" || string(req.Data) != "hello" {
		t.Fatalf("/v1/attestation user_data: %+v, %v; want the requested-attestation structure naming parent and holding the caller's data", req, err)
	}
	resp, err = hc.Post("http://kmsproxy.enclave/v1/attestation", "application/json", strings.NewReader(`{"nonce":"`+base64.StdEncoding.EncodeToString(make([]byte, 4096))+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("oversized nonce: status %d", resp.StatusCode)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
}

func TestMaxInflight(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{MaxInflight: 2})
	e.DevKMS.SetFaults(devkms.Faults{Latency: 500 * time.Millisecond})
	c := e.Client(t, e.ParentAddr)
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
			errs <- err
		}()
	}
	ok, throttled := 0, 0
	for range n {
		switch err := <-errs; apiErrorCode(err) {
		case "":
			ok++
		case "ThrottlingException":
			throttled++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok < 1 || throttled < 1 || ok > 2*n {
		t.Fatalf("%d ok, %d throttled: want both", ok, throttled)
	}
}

func TestRequestTimeout(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{RequestTimeout: 300 * time.Millisecond})
	e.DevKMS.SetFaults(devkms.Faults{Latency: 2 * time.Second})
	_, err := e.Client(t, e.ParentAddr).GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	wantCode(t, err, "DependencyTimeoutException")
}
