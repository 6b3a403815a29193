package devkms

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/enclavekit/kmsproxy/internal/transport"
)

// Defaults of devkms's flags.
const (
	DefaultListen            = "tcp://127.0.0.1:4599"
	DefaultRegion            = "us-east-1"
	DefaultAccountID         = "111122223333"
	DefaultMaxAttestationAge = 5 * time.Minute
	DefaultLogLevel          = "info"
)

// Config is everything devkms needs to start. The zero value is not valid;
// start from DefaultConfig. Paths are read by New; the fields without a path
// (TrustRoots, Credentials) let tests configure devkms without files.
type Config struct {
	// Listen is the address Server.ListenAndServe listens on
	// (tcp://HOST:PORT or unix:///path, internal/transport syntax).
	Listen string
	// StatePath is the JSON state file; "" keeps everything in memory.
	StatePath string
	// SeedPath is a YAML seed file applied at every start; "" for none.
	SeedPath string
	// TLSSelfSignedDir makes devkms serve TLS with a certificate for
	// localhost, 127.0.0.1 and ::1 issued by a CA whose certificate it
	// writes to DIR/ca.pem (and reuses on restart).
	TLSSelfSignedDir string
	// TLSCertFile and TLSKeyFile serve TLS with a given certificate.
	TLSCertFile string
	TLSKeyFile  string
	// TrustRootFiles are PEM files of extra attestation roots (e.g. the
	// NSM simulator's CA); the AWS Nitro Enclaves root is always trusted.
	TrustRootFiles []string
	// TrustRoots are extra attestation roots given as certificates.
	TrustRoots []*x509.Certificate
	// MaxAttestationAge is how old a Recipient attestation document may be.
	MaxAttestationAge time.Duration
	// CredentialsPath is a JSON or YAML file of access keys; with it (or
	// with Credentials) every request must carry a valid SigV4 signature.
	CredentialsPath string
	// Credentials are access keys given in code, merged with the file's.
	Credentials []Credential
	// IAMPoliciesPath is a YAML file mapping principals to their
	// identity-based (IAM) policies (LoadIAMPolicies). With it, or with
	// IAMPolicies non-nil, devkms evaluates IAM policies as KMS does: a key
	// policy statement that names the account lets only the principals
	// whose IAM policies allow the action through. Without either, every
	// principal is taken to have an IAM policy that allows kms:* on every
	// resource.
	IAMPoliciesPath string
	// IAMPolicies are identity-based policies given in code (inline
	// documents), merged with the file's.
	IAMPolicies map[string][]IAMPolicy
	// Region and AccountID make up the ARNs of keys and aliases.
	Region    string
	AccountID string
	// IMDS is the address (tcp://HOST:PORT or unix:///path) of devkms's
	// stand-in for the EC2 instance metadata service (imds.go), served by
	// ListenAndServe beside the KMS API; "" for none. With it, devkms
	// verifies SigV4 (as with a credentials file) and accepts the instance
	// role's credentials it serves there.
	IMDS string
	// IMDSRole is the name of the instance profile's role; its credentials
	// stand for arn:PARTITION:sts::AccountID:assumed-role/IMDSRole/IMDSInstanceID.
	IMDSRole string
	// IMDSInstanceID is the instance ID IMDS reports.
	IMDSInstanceID string
	// IMDSCredentialLifetime is how long each set of role credentials is
	// valid (MinIMDSCredentialLifetime to MaxIMDSCredentialLifetime).
	IMDSCredentialLifetime time.Duration
	// Faults are the initial fault injection settings.
	Faults Faults
	// LogLevel is debug, info, warn or error; used when Logger is nil.
	LogLevel string
	// Logger receives devkms's logs; nil logs to stderr at LogLevel.
	Logger *slog.Logger
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the configuration devkms starts with when no flag is
// given.
func DefaultConfig() Config {
	return Config{
		Listen:            DefaultListen,
		MaxAttestationAge: DefaultMaxAttestationAge,
		Region:            DefaultRegion,
		AccountID:         DefaultAccountID,
		LogLevel:          DefaultLogLevel,

		IMDSRole:               DefaultIMDSRole,
		IMDSInstanceID:         DefaultIMDSInstanceID,
		IMDSCredentialLifetime: DefaultIMDSCredentialLifetime,
	}
}

var (
	// regionPattern matches AWS region names such as us-east-1,
	// ap-southeast-2 or us-gov-west-1.
	regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	// accountPattern: "An AWS account ID is a 12-digit number" (AWS Account
	// Management Reference Guide, "View AWS account identifiers").
	accountPattern = regexp.MustCompile(`^[0-9]{12}$`)
)

// Validate reports the first problem with c in words, or nil.
func (c *Config) Validate() error {
	if c.Listen != "" {
		a, err := transport.Parse(c.Listen)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		if a.Network == transport.VSOCK {
			return errors.New("--listen: devkms serves on tcp:// or unix:// addresses, not vsock")
		}
	}
	if c.IMDS != "" {
		a, err := transport.Parse(c.IMDS)
		if err != nil {
			return fmt.Errorf("--imds: %w", err)
		}
		if a.Network == transport.VSOCK {
			return errors.New("--imds: devkms serves IMDS on tcp:// or unix:// addresses, not vsock (a vsock-proxy or socat can relay to it)")
		}
		// Port 0 asks the system for a free port each time, so two such
		// addresses never collide.
		if l, err := transport.Parse(c.Listen); err == nil && c.Listen != "" && l == a && !strings.HasSuffix(a.HostPort, ":0") {
			return fmt.Errorf("--imds %s is also the --listen address: give IMDS an address of its own", c.IMDS)
		}
		if err := c.validateIMDS(); err != nil {
			return err
		}
	}
	if !regionPattern.MatchString(c.Region) {
		return fmt.Errorf("--region %q is not an AWS region name such as us-east-1", c.Region)
	}
	if !accountPattern.MatchString(c.AccountID) {
		return fmt.Errorf("--account-id %q is not a 12-digit AWS account ID", c.AccountID)
	}
	if c.MaxAttestationAge <= 0 {
		return fmt.Errorf("--max-attestation-age %s must be positive", c.MaxAttestationAge)
	}
	if c.TLSSelfSignedDir != "" && (c.TLSCertFile != "" || c.TLSKeyFile != "") {
		return errors.New("--tls-self-signed and --tls-cert/--tls-key are exclusive: choose one")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	for _, f := range c.TrustRootFiles {
		if strings.TrimSpace(f) == "" {
			return errors.New("--trust-root needs a PEM file path")
		}
	}
	for i, cr := range c.Credentials {
		if err := cr.validate(); err != nil {
			return fmt.Errorf("credential %d: %w", i, err)
		}
	}
	if err := c.Faults.Validate(); err != nil {
		return err
	}
	if c.Logger == nil {
		if _, err := ParseLogLevel(c.LogLevel); err != nil {
			return err
		}
	}
	return nil
}

// ParseLogLevel parses a --log-level value.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

// partition returns the ARN partition of a region: aws-cn for China,
// aws-us-gov for GovCloud, aws otherwise (AWS General Reference, "Amazon
// Resource Names (ARNs)", partition).
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}
