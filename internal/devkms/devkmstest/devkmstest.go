// Package devkmstest starts devkms inside a test: a TLS server on
// 127.0.0.1 with its own CA, trusting the attestation roots the test gives
// (normally the NSM simulator's), with an aws-sdk-go-v2 KMS client ready to
// talk to it. kmsproxyd's tests and the end-to-end tests use it to have a
// real KMS endpoint, Recipient included, without AWS.
//
//	ca, _ := nsmsim.NewCA()
//	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
//	keyID := kmsd.CreateKey(t, "")   // symmetric key, default key policy
//	out, err := kmsd.Client(t).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("hi")})
//
// The instance stops when the test ends (t.Cleanup).
package devkmstest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
)

// Credentials used by clients when the instance has no credentials file:
// devkms then ignores signatures, so any well-formed key works.
const (
	AnonymousAccessKeyID     = "AKIADEVKMSTEST000000"
	AnonymousSecretAccessKey = "devkmstest-secret-not-checked"
)

// Option configures Start.
type Option func(*options)

type options struct {
	configure []func(*devkms.Config)
	seed      *devkms.Seed
	logLevel  slog.Level
}

// WithTrustRoots makes devkms accept attestation documents that chain to
// certs (e.g. nsmsim's CA.RootCertificate()), besides the AWS Nitro root.
func WithTrustRoots(certs ...*x509.Certificate) Option {
	return func(o *options) {
		o.configure = append(o.configure, func(c *devkms.Config) { c.TrustRoots = append(c.TrustRoots, certs...) })
	}
}

// WithCredentials turns on SigV4 verification with these access keys.
// Client(t) signs with the first one.
func WithCredentials(creds ...devkms.Credential) Option {
	return func(o *options) {
		o.configure = append(o.configure, func(c *devkms.Config) { c.Credentials = append(c.Credentials, creds...) })
	}
}

// WithSeed applies seed at start (keys with fixed IDs, aliases, policies).
func WithSeed(seed devkms.Seed) Option {
	return func(o *options) { o.seed = &seed }
}

// WithConfig lets the test change any configuration setting (state file,
// region, account, maximum attestation age, faults, clock, ...). Listen and
// TLS settings are ignored: Start always serves TLS on 127.0.0.1:0 (and
// IMDS, with WithIMDS, on another port of 127.0.0.1).
func WithConfig(fn func(*devkms.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, fn) }
}

// WithIMDS also serves devkms's IMDS stand-in (plain HTTP on 127.0.0.1,
// Instance.IMDSAddr), with the role, instance ID and credential lifetime of
// the configuration (WithConfig changes them). It turns SigV4 verification
// on: give the test's own callers keys with WithCredentials.
func WithIMDS() Option {
	return func(o *options) {
		o.configure = append(o.configure, func(c *devkms.Config) { c.IMDS = "tcp://127.0.0.1:0" })
	}
}

// WithLogLevel shows devkms's logs at this level in the test output (the
// default shows warnings and errors).
func WithLogLevel(l slog.Level) Option {
	return func(o *options) { o.logLevel = l }
}

// Instance is a running devkms.
type Instance struct {
	// URL is the endpoint, https://127.0.0.1:PORT.
	URL string
	// Addr is the listener's address, 127.0.0.1:PORT.
	Addr string
	// CAPEM is the certificate (PEM) of the CA that issued the server's
	// certificate; CAFile is the same in a file (for --kms-ca,
	// AWS_CA_BUNDLE).
	CAPEM  []byte
	CAFile string
	// Server is the devkms instance itself.
	Server *devkms.Server
	// Config is the configuration the instance runs with.
	Config devkms.Config
	// IMDSAddr is the IMDS stand-in's address, 127.0.0.1:PORT (for
	// kmsproxyd --imds-dial tcp://IMDSAddr), and IMDSURL its URL; empty
	// without WithIMDS.
	IMDSAddr string
	IMDSURL  string

	caPool   *x509.CertPool
	stop     func() error
	stopOnce sync.Once
	stopErr  error
}

// Close stops the instance (waiting for requests in flight) before the test
// ends, e.g. to restart devkms on the same state file. It is called by
// t.Cleanup anyway and is safe to call more than once.
func (i *Instance) Close() error {
	i.stopOnce.Do(func() { i.stopErr = i.stop() })
	return i.stopErr
}

// Start runs a devkms over TLS on 127.0.0.1 with a fresh self-signed CA and
// stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Instance {
	t.Helper()
	o := options{logLevel: slog.LevelWarn}
	for _, opt := range opts {
		opt(&o)
	}
	cfg := devkms.DefaultConfig()
	for _, fn := range o.configure {
		fn(&cfg)
	}
	tlsDir := t.TempDir()
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.TLSSelfSignedDir, cfg.TLSCertFile, cfg.TLSKeyFile = tlsDir, "", ""
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: o.logLevel}))
	}
	srv, err := devkms.New(cfg)
	if err != nil {
		t.Fatalf("devkmstest: failed to start devkms: %v", err)
	}
	if o.seed != nil {
		if err := srv.ApplySeed(*o.seed); err != nil {
			t.Fatalf("devkmstest: failed to apply seed: %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("devkmstest: failed to listen: %v", err)
	}
	var il net.Listener
	if cfg.IMDS != "" {
		if il, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			l.Close()
			t.Fatalf("devkmstest: failed to listen for IMDS: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	servers := 1
	go func() { done <- srv.Serve(ctx, l) }()
	if il != nil {
		servers++
		go func() { done <- srv.ServeIMDS(ctx, il) }()
	}
	caPEM := srv.CACertPEM()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("devkmstest: devkms wrote no CA certificate")
	}
	inst := &Instance{
		URL:    "https://" + l.Addr().String(),
		Addr:   l.Addr().String(),
		CAPEM:  caPEM,
		CAFile: filepath.Join(tlsDir, devkms.CAFile),
		Server: srv,
		Config: cfg,
		caPool: pool,
	}
	if il != nil {
		inst.IMDSAddr = il.Addr().String()
		inst.IMDSURL = "http://" + inst.IMDSAddr
	}
	inst.stop = func() error {
		cancel()
		deadline := time.After(devkms.ShutdownTimeout + 5*time.Second)
		var errs []error
		for range servers {
			select {
			case err := <-done:
				errs = append(errs, err)
			case <-deadline:
				return errors.New("devkms did not stop")
			}
		}
		return errors.Join(errs...)
	}
	t.Cleanup(func() {
		if err := inst.Close(); err != nil {
			t.Errorf("devkmstest: %v", err)
		}
	})
	if _, err := os.Stat(inst.CAFile); err != nil {
		t.Fatalf("devkmstest: %v", err)
	}
	return inst
}

// HTTPClient returns an HTTP client that trusts the instance's CA.
func (i *Instance) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: sdkhttp.BufferBodies(&http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: i.caPool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 16,
		}, 0),
	}
}

// Client returns a KMS client for the instance, signing with the first
// configured credential (any credential when SigV4 is off). It does not
// retry, so tests see every error devkms answers.
func (i *Instance) Client(t testing.TB) *kms.Client {
	t.Helper()
	if len(i.Config.Credentials) > 0 {
		return i.ClientWith(t, i.Config.Credentials[0])
	}
	return i.ClientWith(t, devkms.Credential{AccessKeyID: AnonymousAccessKeyID, SecretAccessKey: AnonymousSecretAccessKey})
}

// ClientFor returns a KMS client signing with the configured credential of
// the given access key ID.
func (i *Instance) ClientFor(t testing.TB, accessKeyID string) *kms.Client {
	t.Helper()
	for _, c := range i.Config.Credentials {
		if c.AccessKeyID == accessKeyID {
			return i.ClientWith(t, c)
		}
	}
	t.Fatalf("devkmstest: no credential with access key %s", accessKeyID)
	return nil
}

// ClientWith returns a KMS client signing with cred, which need not be one
// devkms knows (to test authentication failures).
func (i *Instance) ClientWith(t testing.TB, cred devkms.Credential) *kms.Client {
	t.Helper()
	return kms.New(kms.Options{
		Region:       i.Config.Region,
		BaseEndpoint: aws.String(i.URL),
		HTTPClient:   i.HTTPClient(),
		Credentials:  credentials.NewStaticCredentialsProvider(cred.AccessKeyID, cred.SecretAccessKey, cred.SessionToken),
		Retryer:      aws.NopRetryer{},
	})
}

// SetFaults changes the fault injection settings.
func (i *Instance) SetFaults(f devkms.Faults) { i.Server.SetFaults(f) }

// CreateKey creates a symmetric encryption key with the given key policy
// ("" for the default key policy, which lets the account root do anything)
// and returns its key ID. It goes through the seed mechanism, so neither the
// caller's permissions nor the policy lockout check apply.
func (i *Instance) CreateKey(t testing.TB, policy string) string {
	t.Helper()
	return i.CreateKeyWith(t, devkms.SeedKey{Policy: policy})
}

// CreateKeyWith creates a key as described (ID, spec, usage, policy,
// aliases) and returns its key ID; an empty ID gets a random one.
func (i *Instance) CreateKeyWith(t testing.TB, k devkms.SeedKey) string {
	t.Helper()
	if k.ID == "" {
		k.ID = newUUID()
	}
	if err := i.Server.ApplySeed(devkms.Seed{Keys: []devkms.SeedKey{k}}); err != nil {
		t.Fatalf("devkmstest: failed to create key: %v", err)
	}
	return k.ID
}

// KeyARN returns the ARN of a key ID on this instance.
func (i *Instance) KeyARN(keyID string) string {
	return devkms.KeyARN(i.Config.Region, i.Config.AccountID, keyID)
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[0:4]) + "-" + hex.EncodeToString(b[4:6]) + "-" + hex.EncodeToString(b[6:8]) + "-" +
		hex.EncodeToString(b[8:10]) + "-" + hex.EncodeToString(b[10:16])
}
