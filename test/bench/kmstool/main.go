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
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// maxCAFile bounds --ca: a PEM bundle of a few certificates.
const maxCAFile = 1 << 20

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

	// The NSM (here its simulator) as the process finds it at start.
	ca, err := nsmsim.LoadCA(*simCA)
	if err != nil {
		return err
	}
	var opts nsmsim.Options
	if *simPCRs != "" {
		if opts.PCRs, err = nsmsim.LoadMeasurements(*simPCRs); err != nil {
			return err
		}
	}
	nsm, err := nsmsim.New(ca, opts)
	if err != nil {
		return err
	}

	// A new RSA-2048 key pair for this one request.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("failed to generate the RSA key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("failed to encode the public key: %w", err)
	}
	// A new attestation document binding it.
	doc, err := nsm.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		return fmt.Errorf("failed to get an attestation document: %w", err)
	}

	// A new TLS connection to KMS.
	hc, err := oneShotHTTP(*caFile, *dial)
	if err != nil {
		return err
	}
	client := kms.New(kms.Options{
		Region:       *region,
		BaseEndpoint: aws.String(*endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(*accessKey, *secretKey, *token),
		HTTPClient:   hc,
	})
	out, err := client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob: blob,
		Recipient: &types.RecipientInfo{
			AttestationDocument:    doc,
			KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
		},
	})
	if err != nil {
		return fmt.Errorf("failed to call Decrypt: %w", err)
	}
	plaintext, err := cms.Decrypt(out.CiphertextForRecipient, key)
	if err != nil {
		return fmt.Errorf("failed to open CiphertextForRecipient: %w", err)
	}
	defer clear(plaintext)
	_, err = fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(plaintext))
	return err
}

// oneShotHTTP is an HTTP client whose single connection is new: no
// keep-alive across runs is possible in a new process anyway. With dial
// set, the connection goes there whatever the URL's host.
func oneShotHTTP(caFile, dial string) (*http.Client, error) {
	f, err := os.Open(caFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pem, err := io.ReadAll(io.LimitReader(f, maxCAFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	dialContext := dialer.DialContext
	if dial != "" {
		a, err := transport.Parse(dial)
		if err != nil {
			return nil, fmt.Errorf("--dial: %w", err)
		}
		if a.Network == transport.VSOCK {
			return nil, errors.New("--dial: vsock is not for benchmarks on this machine; use unix:// or tcp://")
		}
		dialContext = transport.DialFunc(a)
	}
	return &http.Client{Transport: &http.Transport{
		DialContext:     dialContext,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		Proxy:           nil,
	}}, nil
}
