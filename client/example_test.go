package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/client"
)

// A parent-instance app decrypts a secret that only the enclave's image may
// decrypt. Apart from client.New, the code is what it would be for AWS KMS.
func ExampleNew() {
	ctx := context.Background()
	// The enclave's CID (nitro-cli describe-enclaves) and kmsproxyd's port.
	kmsClient, err := client.New(ctx, "vsock://16:5000")
	if err != nil {
		log.Fatal(err)
	}
	ciphertext, err := os.ReadFile("secret.enc")
	if err != nil {
		log.Fatal(err)
	}
	out, err := kmsClient.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob:    ciphertext,
		EncryptionContext: map[string]string{"tenant": "acme"},
	})
	if err != nil {
		log.Fatal(err) // e.g. "AccessDeniedException: ..." from KMS, unchanged
	}
	defer clear(out.Plaintext)
	fmt.Println(len(out.Plaintext), "bytes")
}

// Envelope encryption: a fresh data key for each object, its encrypted
// copy stored beside the data.
func ExampleNew_dataKey() {
	ctx := context.Background()
	kmsClient, err := client.New(ctx, "vsock://16:5000")
	if err != nil {
		log.Fatal(err)
	}
	dk, err := kmsClient.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:   aws.String("alias/app-data"),
		KeySpec: types.DataKeySpecAes256,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer clear(dk.Plaintext)
	// Encrypt with dk.Plaintext (AES-256-GCM), store dk.CiphertextBlob.
	fmt.Println(len(dk.Plaintext), len(dk.CiphertextBlob) > 0)
}

// Inside the enclave, apps reach kmsproxyd on loopback.
func ExampleNew_insideTheEnclave() {
	kmsClient, err := client.New(context.Background(), "tcp://127.0.0.1:8000")
	if err != nil {
		log.Fatal(err)
	}
	_ = kmsClient
}

// The control endpoints: readiness for a health check.
func ExampleHTTPClient() {
	hc, err := client.HTTPClient("vsock://16:5000")
	if err != nil {
		log.Fatal(err)
	}
	resp, err := hc.Get(client.Endpoint + "/readyz")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
}

// Log which image the parent is talking to.
func ExampleGetInfo() {
	info, err := client.GetInfo(context.Background(), "vsock://16:5000")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("kmsproxyd", info.Version, "PCR0", info.PCRs["0"])
}

// A remote verifier asks for a document binding its nonce, then verifies it
// (kmsproxyctl attest verify, or any Nitro attestation verifier).
func ExampleAttestation() {
	nonce := []byte("a fresh random nonce from the verifier")
	doc, err := client.Attestation(context.Background(), "vsock://16:5000", client.AttestationRequest{Nonce: nonce})
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile("doc.cbor", doc, 0o644); err != nil {
		log.Fatal(err)
	}
}
