package nsmsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Files Save writes and LoadCA reads.
const (
	// RootFile holds the root certificate (PEM): the file users pass to
	// `devkms --trust-root` and `kmsproxyctl attest verify --root`.
	RootFile = "root.pem"
	// IntermediateFile holds the intermediate certificate (PEM).
	IntermediateFile = "intermediate.pem"
	// IntermediateKeyFile holds the intermediate's private key (PKCS#8 PEM,
	// mode 0600). The root's private key is never written anywhere: it signs
	// the intermediate once, in NewCA, and is dropped.
	IntermediateKeyFile = "intermediate.key"
)

// maxCAFileSize bounds each file LoadCA reads: a P-384 certificate or key
// in PEM is well under 2 KiB.
const maxCAFileSize = 64 << 10

// Lifetimes. The root lives 30 years like the AWS Nitro Enclaves Root-G1
// (attestation_process.md §2.1: "a lifetime of 30 years"); the intermediate
// 10 years so a saved development CA keeps working; leaves 3 hours, as real
// NSM leaves do (e.g. 06:59:33 to 09:59:36 in marlin-2024.cbor).
const (
	rootLifetime         = 30 * 365 * 24 * time.Hour
	intermediateLifetime = 10 * 365 * 24 * time.Hour
	// LeafLifetime is how long each simulated signing certificate lives.
	LeafLifetime = 3 * time.Hour
)

// simOrg marks every simulator certificate, so no one mistakes one for AWS's.
const simOrg = "kmsproxy NSM simulator"

// CA is the simulator's stand-in for the AWS Nitro Attestation PKI: a root
// and an intermediate (P-384, ECDSA with SHA-384, as AWS's) whose key
// issues the short-lived leaves that sign documents.
type CA struct {
	root         *x509.Certificate
	intermediate *x509.Certificate
	key          *ecdsa.PrivateKey // the intermediate's
}

// NewCA creates a CA with fresh P-384 keys, valid from an hour ago (to
// tolerate clock skew between machines sharing the CA).
func NewCA() (*CA, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to generate the root key: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to generate the intermediate key: %w", err)
	}
	return NewCAFromKeys(rootKey, interKey, time.Now().Add(-time.Hour))
}

// NewCAFromKeys creates a CA from given P-384 keys whose certificates are
// valid from notBefore. With fixed keys and time the certificates are the
// same bytes every time (serial numbers derive from the keys and signatures
// are RFC 6979 deterministic), which is what test-vector generators need.
func NewCAFromKeys(rootKey, intermediateKey *ecdsa.PrivateKey, notBefore time.Time) (*CA, error) {
	for name, k := range map[string]*ecdsa.PrivateKey{"root": rootKey, "intermediate": intermediateKey} {
		if k == nil || k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("nsmsim: the %s key must be ECDSA P-384", name)
		}
	}
	notBefore = notBefore.UTC().Truncate(time.Second)
	rootTmpl := &x509.Certificate{
		Subject: pkix.Name{
			Country:            []string{"US"},
			Organization:       []string{simOrg},
			OrganizationalUnit: []string{"kmsproxy"},
			CommonName:         "kmsproxy-sim.nitro-enclaves",
		},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(rootLifetime),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	root, err := issue(rootTmpl, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to create the root certificate: %w", err)
	}
	interTmpl := &x509.Certificate{
		Subject: pkix.Name{
			Country:            []string{"US"},
			Organization:       []string{simOrg},
			OrganizationalUnit: []string{"kmsproxy"},
			CommonName:         "intermediate.kmsproxy-sim.nitro-enclaves",
		},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(intermediateLifetime),
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	inter, err := issue(interTmpl, root, &intermediateKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to create the intermediate certificate: %w", err)
	}
	return &CA{root: root, intermediate: inter, key: intermediateKey}, nil
}

// RootCertificate returns the CA's root certificate, the trust anchor for
// documents the simulator signs. Callers must not modify it.
func (ca *CA) RootCertificate() *x509.Certificate { return ca.root }

// Roots returns a new pool holding only the root, for attestation.Verify.
func (ca *CA) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.root)
	return pool
}

// Save writes the CA to dir (created with mode 0700 if missing): RootFile
// and IntermediateFile (0644) and IntermediateKeyFile (0600), each replaced
// atomically.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("nsmsim: failed to create %s: %w", dir, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("nsmsim: failed to encode the intermediate key: %w", err)
	}
	files := []struct {
		name string
		mode fs.FileMode
		data []byte
	}{
		{RootFile, 0o644, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})},
		{IntermediateFile, 0o644, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.intermediate.Raw})},
		{IntermediateKeyFile, 0o600, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nsmsim-*") // created 0600
	if err != nil {
		return fmt.Errorf("nsmsim: failed to create a file beside %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("nsmsim: failed to write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("nsmsim: failed to set the mode of %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("nsmsim: failed to sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("nsmsim: failed to close %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("nsmsim: failed to replace %s: %w", path, err)
	}
	return nil
}

// LoadCA reads a CA that Save wrote and checks it: both certificates are
// P-384 CAs, the intermediate is signed by the self-signed root, and the
// key belongs to the intermediate.
func LoadCA(dir string) (*CA, error) {
	root, err := readCert(filepath.Join(dir, RootFile))
	if err != nil {
		return nil, err
	}
	inter, err := readCert(filepath.Join(dir, IntermediateFile))
	if err != nil {
		return nil, err
	}
	keyPEM, err := readLimited(filepath.Join(dir, IntermediateKeyFile))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("nsmsim: %s is not a PEM PRIVATE KEY", IntermediateKeyFile)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to parse %s: %w", IntermediateKeyFile, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P384() {
		return nil, fmt.Errorf("nsmsim: %s is not an ECDSA P-384 key", IntermediateKeyFile)
	}

	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{{RootFile, root}, {IntermediateFile, inter}} {
		pub, ok := c.cert.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P384() || !c.cert.IsCA {
			return nil, fmt.Errorf("nsmsim: %s is not a P-384 CA certificate", c.name)
		}
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("nsmsim: %s is not self-signed: %w", RootFile, err)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("nsmsim: %s is not signed by %s: %w", IntermediateFile, RootFile, err)
	}
	if !key.PublicKey.Equal(inter.PublicKey) {
		return nil, fmt.Errorf("nsmsim: %s does not belong to %s", IntermediateKeyFile, IntermediateFile)
	}
	return &CA{root: root, intermediate: inter, key: key}, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to open the CA: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCAFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to read %s: %w", path, err)
	}
	if len(b) > maxCAFileSize {
		return nil, fmt.Errorf("nsmsim: %s is larger than %d bytes", path, maxCAFileSize)
	}
	return b, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("nsmsim: %s is not a PEM CERTIFICATE", filepath.Base(path))
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("nsmsim: failed to parse %s: %w", filepath.Base(path), err)
	}
	return cert, nil
}

// rfc6979 signs deterministically (RFC 6979; crypto/ecdsa does so when
// given a nil random source), which keeps certificates and documents made
// from fixed keys reproducible and is as safe as random nonces.
type rfc6979 struct{ *ecdsa.PrivateKey }

func (s rfc6979) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		// go-cose passes nil options; it only uses this signer for ES384,
		// whose digest is SHA-384.
		opts = crypto.SHA384
	}
	return s.PrivateKey.Sign(nil, digest, opts)
}

// issue signs tmpl with signer (self-signed when parent is nil), giving it
// a serial number derived from the subject key and validity so that it is
// unique per key yet reproducible.
func issue(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(spki)
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(tmpl.NotBefore.Unix()))
	h.Write(t[:])
	sum := h.Sum(nil)[:20] // RFC 5280 §4.1.2.2: at most 20 octets
	sum[0] &= 0x7f         // positive
	sum[0] |= 0x40         // and non-zero
	tmpl.SerialNumber = new(big.Int).SetBytes(sum)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(nil, tmpl, parent, pub, rfc6979{signer})
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

var errCAExpired = errors.New("the simulator CA's intermediate certificate is not valid now; create a new CA (kmsproxyctl dev ca)")
