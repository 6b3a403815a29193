// Package standin holds what the benchmark's stand-in programs share
// (test/bench/kmstool, the kmstool-enclave-cli stand-in, and
// test/bench/floor, the bare prescribed parts): an enclave identity from
// the NSM simulator — a new RSA-2048 recipient key and the attestation
// document that binds it — and a KMS client that reaches devkms through
// the harness's socket. They are benchmark tools: nothing here dials
// vsock.
package standin

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

const (
	// maxCAFile bounds a CA file: a PEM bundle of a few certificates.
	maxCAFile = 1 << 20
	// dialTimeout bounds a connection to the endpoint's host.
	dialTimeout = 5 * time.Second
)

// Identity is what an enclave process holds to call KMS with a Recipient.
type Identity struct {
	Key *rsa.PrivateKey
	// Document is an attestation document binding Key's public key.
	Document []byte
}

// NewIdentity generates an RSA-2048 key, as kmstool-enclave-cli does per
// call (aws_attestation_rsa_keypair_new(allocator, AWS_RSA_2048)) and
// kmsproxyd per rotation, and gets a document for it from the simulator
// whose CA is in caDir (kmsproxyctl dev ca), with the PCRs of pcrsFile (a
// nitro-cli measurements JSON; debug-mode zeros when empty).
func NewIdentity(ctx context.Context, caDir, pcrsFile string) (*Identity, error) {
	ca, err := nsmsim.LoadCA(caDir)
	if err != nil {
		return nil, err
	}
	var opts nsmsim.Options
	if pcrsFile != "" {
		if opts.PCRs, err = nsmsim.LoadMeasurements(pcrsFile); err != nil {
			return nil, err
		}
	}
	nsm, err := nsmsim.New(ca, opts)
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("failed to generate the RSA key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the public key: %w", err)
	}
	doc, err := nsm.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		return nil, fmt.Errorf("failed to get an attestation document: %w", err)
	}
	return &Identity{Key: key, Document: doc}, nil
}

// KMSConfig says how to reach devkms.
type KMSConfig struct {
	Endpoint string // URL: the TLS server name and the SigV4 host
	Dial     string // where connections really go: unix:// or tcp://; empty: the endpoint's host
	CAFile   string // PEM file of the endpoint's CA
	Region   string
	// Conns bounds the keep-alive connections (at least one).
	Conns int
	// AccessKey, SecretKey and Token are the caller's credentials.
	AccessKey, SecretKey, Token string
}

// Addr parses s in kmsproxy's address syntax and refuses vsock: the
// stand-ins run on machines where vsock leads outside.
func Addr(s string) (transport.Addr, error) {
	a, err := transport.Parse(s)
	if err != nil {
		return transport.Addr{}, err
	}
	if a.Network == transport.VSOCK {
		return transport.Addr{}, fmt.Errorf("%q: vsock is not for benchmarks on this machine; use unix:// or tcp://", s)
	}
	return a, nil
}

// NewKMS returns an aws-sdk-go-v2 KMS client for cfg: TLS to the
// endpoint's name, each connection to cfg.Dial, and the request bodies
// buffered as kmsproxyd's upstream does (internal/sdkhttp), so that
// keep-alive connections stay open.
func NewKMS(cfg KMSConfig) (*kms.Client, error) {
	if cfg.Endpoint == "" || cfg.CAFile == "" {
		return nil, errors.New("the KMS endpoint and its CA file are required")
	}
	f, err := os.Open(cfg.CAFile)
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
		return nil, fmt.Errorf("no certificate in %s", cfg.CAFile)
	}
	dial := (&net.Dialer{Timeout: dialTimeout}).DialContext
	if cfg.Dial != "" {
		a, err := Addr(cfg.Dial)
		if err != nil {
			return nil, err
		}
		dial = transport.DialFunc(a)
	}
	conns := max(cfg.Conns, 1)
	hc := &http.Client{Transport: sdkhttp.BufferBodies(&http.Transport{
		DialContext:         dial,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxConnsPerHost:     conns,
		MaxIdleConnsPerHost: conns,
	}, sdkhttp.MaxBuffered)}
	return kms.New(kms.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(cfg.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.Token),
		HTTPClient:   hc,
	}), nil
}
