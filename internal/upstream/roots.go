package upstream

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"sync"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// embeddedRoots parses Mozilla's roots, embedded in the binary by
// golang.org/x/crypto/x509roots/fallback/bundle, once. An enclave image has
// no CA files, so the system pool cannot be relied on. Roots that NSS
// distrusts after a date carry that constraint into the pool.
var embeddedRoots = sync.OnceValues(func() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for r := range bundle.Roots() {
		cert, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			return nil, fmt.Errorf("upstream: failed to parse an embedded root: %w", err)
		}
		if r.Constraint != nil {
			pool.AddCertWithConstraint(cert, r.Constraint)
		} else {
			pool.AddCert(cert)
		}
	}
	return pool, nil
})

// rootPool returns the embedded roots plus the certificates in extraPEM
// (--kms-ca). extraPEM must hold only CERTIFICATE blocks.
func rootPool(extraPEM []byte) (*x509.CertPool, error) {
	base, err := embeddedRoots()
	if err != nil {
		return nil, err
	}
	pool := base.Clone()
	if len(bytes.TrimSpace(extraPEM)) == 0 {
		return pool, nil
	}
	rest := extraPEM
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if n == 1 {
				return nil, fmt.Errorf("upstream: --kms-ca holds no PEM certificate")
			}
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, fmt.Errorf("upstream: --kms-ca has data after PEM block %d that is not PEM", n-1)
			}
			return pool, nil
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("upstream: --kms-ca PEM block %d is %q, want CERTIFICATE", n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("upstream: --kms-ca PEM block %d: %w", n, err)
		}
		pool.AddCert(cert)
	}
}
