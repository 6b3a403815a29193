package attestation

import (
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"sync"
)

// nitroRootPEM is the AWS Nitro Enclaves Root-G1 certificate (CN=aws.nitro-enclaves,
// valid 2019-10-28 to 2049-10-28), published by AWS at
// https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip.
// Its DER has SHA-256 fingerprint
// 641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b, as AWS's
// user guide (verify-root.html) states; TestNitroRootFingerprint pins it.
//
//go:embed aws_nitro_enclaves_root_g1.pem
var nitroRootPEM []byte

var nitroRoot = sync.OnceValue(func() *x509.Certificate {
	block, _ := pem.Decode(nitroRootPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		panic("attestation: embedded AWS Nitro root is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		panic("attestation: embedded AWS Nitro root does not parse: " + err.Error())
	}
	return cert
})

// NitroRoot returns the AWS Nitro Enclaves Root-G1 certificate, the trust
// anchor of every document real NSM hardware signs. Callers must not modify
// it.
func NitroRoot() *x509.Certificate { return nitroRoot() }

// NitroRoots returns a new pool holding only NitroRoot, for Verify.
func NitroRoots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(nitroRoot())
	return pool
}
