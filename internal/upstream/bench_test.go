package upstream

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// cannedKMS answers every request with one fixed KMS answer, in memory.
type cannedKMS struct{ answer []byte }

func (c cannedKMS) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	h := http.Header{}
	h.Set("Content-Type", "application/x-amz-json-1.1")
	h.Set("X-Amzn-Requestid", "0c3ed5a5-8a4f-4c4b-9e0e-5c1e2e7d2c11")
	h.Set("Content-Length", strconv.Itoa(len(c.answer)))
	return &http.Response{StatusCode: http.StatusOK, Header: h, Body: io.NopCloser(bytes.NewReader(c.answer)),
		ContentLength: int64(len(c.answer)), Request: r}, nil
}

// BenchmarkSDKDecrypt is the aws-sdk-go-v2 client's own cost for one
// attested Decrypt as kmsproxyd makes it (a 4.5 KiB attestation document,
// as real NSM documents are), without network or TLS: middleware stack,
// endpoint, serialization, SigV4 signing, retry bookkeeping and
// deserialization. Compare with t_rsa (internal/proxy BenchmarkRSADecrypt).
func BenchmarkSDKDecrypt(b *testing.B) {
	cfg, _, err := Config{Region: testRegion, Endpoint: testEndpoint, Direct: true, Credentials: testCreds}.normalize()
	if err != nil {
		b.Fatal(err)
	}
	answer := []byte(`{"KeyId":"arn:aws:kms:us-west-2:111122223333:key/6b656e63-6c61-4e76-a562-656e63686d6b",` +
		`"EncryptionAlgorithm":"SYMMETRIC_DEFAULT","CiphertextForRecipient":"` + string(bytes.Repeat([]byte("QUJD"), 150)) + `"}`)
	c := newKMS(cfg, &http.Client{Transport: cannedKMS{answer}})
	in := &kms.DecryptInput{
		CiphertextBlob: bytes.Repeat([]byte{1}, 184),
		Recipient: &types.RecipientInfo{
			AttestationDocument:    bytes.Repeat([]byte{2}, 4600),
			KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
		},
	}
	b.ReportAllocs()
	for b.Loop() {
		out, err := c.Decrypt(context.Background(), in)
		if err != nil || len(out.CiphertextForRecipient) != 450 {
			b.Fatal(err)
		}
	}
}
