package devkms_test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// benchServer is an in-process devkms (no TLS, no network) with one key
// whose policy requires PCR0, and a ciphertext of a 32-byte data key.
func benchServer(b *testing.B) (*devkms.Server, *nsmsim.CA, map[int][]byte, []byte) {
	b.Helper()
	ca := sharedCA(b)
	pcrs := randomPCRs(b)
	cfg := devkms.DefaultConfig()
	cfg.TrustRoots = append(cfg.TrustRoots, ca.RootCertificate())
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := devkms.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	const keyID = "0e2b7c4d-8f1a-4b3c-9d5e-6f7a8b9c0d1e"
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*",
	  "Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:PCR0":"` + hex.EncodeToString(pcrs[0]) + `"}}}]}`
	if err := srv.ApplySeed(devkms.Seed{Keys: []devkms.SeedKey{{ID: keyID, Policy: policy}}}); err != nil {
		b.Fatal(err)
	}
	// The policy's condition needs an attestation document for every
	// action, so the ciphertext comes from GenerateDataKey with one.
	rcpt, _ := recipient(b, ca, pcrs)
	var out kms.GenerateDataKeyOutput
	call(b, srv, "GenerateDataKey", &kms.GenerateDataKeyInput{KeyId: aws.String(keyID), NumberOfBytes: aws.Int32(32), Recipient: rcpt}, &out)
	return srv, ca, pcrs, out.CiphertextBlob
}

// call sends one request to the handler and decodes the answer into out.
func call(b *testing.B, h http.Handler, op string, in, out any) {
	b.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, kmsRequest(b, op, in))
	if rec.Code != 200 {
		b.Fatalf("%s: %d %s", op, rec.Code, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
		b.Fatalf("%s answer: %v", op, err)
	}
}

// kmsRequest encodes an SDK input in KMS's wire form (the same encoder
// devkms uses for outputs writes blobs in base64, as SDKs do).
func kmsRequest(b *testing.B, op string, in any) *http.Request {
	b.Helper()
	body, err := kmsapi.EncodeOutput(in)
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	req.Header.Set("Content-Type", kmsapi.ContentType)
	req.Header.Set(kmsapi.TargetHeader, kmsapi.TargetPrefix+op)
	return req
}

// BenchmarkDecryptWithRecipient measures Decrypt with a Recipient through the
// handler, serially on one goroutine, with the same attestation document
// every time (as kmsproxyd reuses one per --attestation-ttl), so its
// verification is cached: JSON, key policy evaluation, AES-GCM and the CMS
// envelope (RSA-OAEP) per request.
func BenchmarkDecryptWithRecipient(b *testing.B) {
	srv, ca, pcrs, blob := benchServer(b)
	rcpt, _ := recipient(b, ca, pcrs)
	body, err := kmsapi.EncodeOutput(&kms.DecryptInput{CiphertextBlob: blob, Recipient: rcpt})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set("Content-Type", kmsapi.ContentType)
		req.Header.Set(kmsapi.TargetHeader, "TrentService.Decrypt")
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("Decrypt: %d %s", rec.Code, rec.Body)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkDecryptWithFreshRecipient is the same with a new attestation
// document for every request: the COSE signature and certificate chain are
// verified each time. The ratio to BenchmarkDecryptWithRecipient is what the
// verification cache saves.
func BenchmarkDecryptWithFreshRecipient(b *testing.B) {
	srv, ca, pcrs, blob := benchServer(b)
	priv := sharedRecipientKey(b)
	spki, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	// One simulator, so documents share a leaf certificate as one enclave's
	// documents do; each document is new bytes and is verified in full.
	sim, err := nsmsim.New(ca, nsmsim.Options{PCRs: pcrs})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		b.StopTimer()
		doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
		if err != nil {
			b.Fatal(err)
		}
		body, err := kmsapi.EncodeOutput(&kms.DecryptInput{CiphertextBlob: blob,
			Recipient: &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}})
		if err != nil {
			b.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		req.Header.Set("Content-Type", kmsapi.ContentType)
		req.Header.Set(kmsapi.TargetHeader, "TrentService.Decrypt")
		rec := httptest.NewRecorder()
		b.StartTimer()
		srv.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("Decrypt: %d %s", rec.Code, rec.Body)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "req/s")
}
