package upstream_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/aws/aws-sdk-go-v2/aws"
	awscreds "github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

func ExampleNew() {
	// A stand-in for KMS: TLS with a certificate for example.com, answering
	// GenerateRandom.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kmsapi.WriteOutput(w, &kms.GenerateRandomOutput{Plaintext: make([]byte, 32)})
	}))
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	// In an enclave: vsock://3:8000, the parent's vsock-proxy to KMS.
	dial, err := transport.Parse("tcp://" + srv.Listener.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := upstream.New(upstream.Config{
		Region:        "us-east-1",
		Endpoint:      "https://example.com", // the TLS name and SigV4 host
		Dial:          dial,                  // where the bytes go
		ExtraRootsPEM: caPEM,                 // --kms-ca
		Credentials:   awscreds.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	ctx, cancel := c.WithTimeout(context.Background())
	defer cancel()
	out, err := c.KMS().GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(32)})
	if err != nil {
		fmt.Println(upstream.ToKMSError(err))
		return
	}
	fmt.Printf("%d random bytes over %d connection through %s\n", len(out.Plaintext), c.Conns(), c.Through()[:6])
	// Output: 32 random bytes over 1 connection through tcp://
}
