// Command kmstool is the benchmark's stand-in for kmstool-enclave-cli, the
// tool AWS ships for decrypting with KMS inside a Nitro Enclave without a
// resident daemon. The benchmark runs it once per Decrypt to measure the
// cost kmsproxyd avoids.
//
// Each run does what kmstool-enclave-cli's decrypt does in one process
// (aws-nitro-enclaves-sdk-c, bin/kmstool-enclave-cli/main.c and
// source/kms.c): aws_nitro_enclaves_kms_client_new generates a new RSA-2048
// key pair (aws_attestation_rsa_keypair_new(allocator, AWS_RSA_2048)),
// aws_kms_decrypt_blocking asks the NSM for a new attestation document
// binding that key, opens a new TLS connection to KMS through the
// vsock-proxy, sends Decrypt with the Recipient, opens the
// CiphertextForRecipient envelope with the new key, and the tool prints the
// base64 plaintext and exits. Here the NSM is the simulator (a CA directory
// from `kmsproxyctl dev ca`) and KMS is devkms; nothing is cached between
// runs.
//
//	kmstool --endpoint https://localhost:4599 --dial unix:///tmp/kms.sock --ca tls/ca.pem --region us-east-1 \
//	  --sim-ca ./simca --sim-pcrs measurements.json \
//	  --aws-access-key-id ... --aws-secret-access-key ... --aws-session-token ... \
//	  --ciphertext BASE64
//
// It is a benchmark tool: it never dials vsock, and it exists only under
// test/bench.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/test/bench/internal/standin"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kmstool: error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("kmstool", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "", "KMS `URL` (devkms): the TLS server name and SigV4 host, e.g. https://localhost:4599")
	dial := fs.String("dial", "", "where the connection really goes (kmsproxy address syntax, e.g. unix:///tmp/kms.sock, as kmstool-enclave-cli's --proxy-port names the vsock-proxy); default: the endpoint's host")
	caFile := fs.String("ca", "", "PEM `file` of the endpoint's CA (devkms's ca.pem)")
	region := fs.String("region", "us-east-1", "AWS region")
	simCA := fs.String("sim-ca", "", "NSM simulator CA `dir` (kmsproxyctl dev ca)")
	simPCRs := fs.String("sim-pcrs", "", "nitro-cli measurements JSON `file` for the simulated PCRs")
	accessKey := fs.String("aws-access-key-id", "", "AWS access key ID")
	secretKey := fs.String("aws-secret-access-key", "", "AWS secret access key")
	token := fs.String("aws-session-token", "", "AWS session token")
	ciphertext := fs.String("ciphertext", "", "base64 CiphertextBlob to decrypt")
	timeout := fs.Duration("timeout", 10*time.Second, "whole run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *endpoint == "" || *caFile == "" || *simCA == "":
		return errors.New("--endpoint, --ca and --sim-ca are required")
	case *accessKey == "" || *secretKey == "":
		return errors.New("--aws-access-key-id and --aws-secret-access-key are required")
	case *ciphertext == "":
		return errors.New("--ciphertext is required")
	}
	blob, err := base64.StdEncoding.DecodeString(*ciphertext)
	if err != nil {
		return fmt.Errorf("--ciphertext is not base64: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// A new RSA-2048 key pair for this one request, and a new attestation
	// document binding it, from the NSM (here its simulator).
	id, err := standin.NewIdentity(ctx, *simCA, *simPCRs)
	if err != nil {
		return err
	}
	// A new TLS connection to KMS: a new process has no other.
	client, err := standin.NewKMS(standin.KMSConfig{
		Endpoint: *endpoint, Dial: *dial, CAFile: *caFile, Region: *region, Conns: 1,
		AccessKey: *accessKey, SecretKey: *secretKey, Token: *token,
	})
	if err != nil {
		return err
	}
	out, err := client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: blob,
		Recipient: &types.RecipientInfo{
			AttestationDocument:    id.Document,
			KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
		},
	})
	if err != nil {
		return fmt.Errorf("failed to call Decrypt: %w", err)
	}
	plaintext, err := cms.Decrypt(out.CiphertextForRecipient, id.Key)
	if err != nil {
		return fmt.Errorf("failed to open CiphertextForRecipient: %w", err)
	}
	defer clear(plaintext)
	_, err = fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(plaintext))
	return err
}
