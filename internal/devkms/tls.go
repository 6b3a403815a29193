package devkms

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files --tls-self-signed DIR keeps. Clients trust CAFile (kmsproxyd
// --kms-ca, AWS_CA_BUNDLE); CAKeyFile lets a restarted devkms issue a new
// server certificate under the same CA so clients keep trusting it.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// maxPEMFile bounds PEM files devkms reads (CA, trust roots); devkms's own
// limit, far above any certificate bundle.
const maxPEMFile = 1 << 20

// Validity of the generated certificates. The CA lives long so a kept
// directory stays usable; server certificates are issued at every start.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
)

// selfSignedTLS loads or creates the CA in dir and issues a server
// certificate for localhost, 127.0.0.1 and ::1. It returns the TLS
// configuration and the CA certificate in PEM.
func selfSignedTLS(dir string, now time.Time) (*tls.Config, []byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("failed to create TLS directory: %w", err)
	}
	caPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	caCert, caKey, caPEM, err := loadCA(caPath, keyPath)
	if errors.Is(err, os.ErrNotExist) {
		caCert, caKey, caPEM, err = createCA(caPath, keyPath, now)
	}
	if err != nil {
		return nil, nil, err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "devkms"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(serverValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to issue server certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, caCert.Raw}, PrivateKey: leafKey}},
	}
	return cfg, caPEM, nil
}

func createCA(caPath, keyPath string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	if _, err := os.Stat(keyPath); err == nil {
		return nil, nil, nil, fmt.Errorf("%s exists without %s: remove it or restore the certificate", keyPath, caPath)
	}
	if _, err := os.Stat(caPath); err == nil {
		return nil, nil, nil, fmt.Errorf("%s exists without %s: remove it or restore the key", caPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "devkms development CA", Organization: []string{"devkms (not for production)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to parse CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to encode CA key: %w", err)
	}
	// The key first, so a crash between the two writes leaves a directory
	// that the next start reports instead of a CA clients trust but nobody
	// can sign with.
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(caPath, caPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	return cert, key, caPEM, nil
}

func loadCA(caPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	caPEM, err := readLimited(caPath, maxPEMFile)
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := readLimited(keyPath, maxPEMFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("%s exists without %s: remove it to create a new CA", caPath, keyPath)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	cb, _ := pem.Decode(caPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, nil, nil, fmt.Errorf("%s holds no PEM certificate", caPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to parse %s: %w", caPath, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, nil, fmt.Errorf("%s holds no PEM key", keyPath)
	}
	priv, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to parse %s: %w", keyPath, err)
	}
	key, ok := priv.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, nil, fmt.Errorf("%s does not hold the key of %s", keyPath, caPath)
	}
	if !cert.IsCA {
		return nil, nil, nil, fmt.Errorf("%s is not a CA certificate", caPath)
	}
	return cert, key, caPEM, nil
}

// loadTLSFiles loads --tls-cert/--tls-key.
func loadTLSFiles(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("failed to load TLS certificate: %w", err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}, nil
}

// loadTrustRoots reads PEM certificates from a --trust-root file.
func loadTrustRoots(path string) ([]*x509.Certificate, error) {
	b, err := readLimited(path, maxPEMFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read trust root: %w", err)
	}
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("failed to parse trust root %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("trust root %s holds no PEM certificate", path)
	}
	return certs, nil
}

func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// writeFileAtomic writes a small file through a temporary file and rename.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("failed to sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

func randomSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	return new(big.Int).SetBytes(b)
}
