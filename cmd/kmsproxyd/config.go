package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// envPrefix: every flag can also be set as KMSPROXY_<FLAG_IN_CAPS>, dashes
// as underscores (e.g. KMSPROXY_LISTEN_PARENT). The flag wins.
const envPrefix = "KMSPROXY_"

// Bounds of the recipient key's timings.
const (
	// MaxAttestationTTL is the longest kmsproxyd reuses one attestation
	// document. KMS does not publish how old a Recipient document it
	// accepts; AWS's own enclave tools (kmstool, the Nitro Enclaves SDK)
	// attest for every call, and devkms, like kmsproxyd's tests, accepts
	// documents up to 5 minutes old by default. A longer reuse would only
	// move failures from start-up to the first request after 5 minutes.
	MaxAttestationTTL = 5 * time.Minute
	// MinKeyRotation is the shortest key rotation: each rotation generates
	// an RSA key (tens of milliseconds for 2048 bits, up to seconds for
	// 4096) and asks the NSM for a document, so rotating faster than this
	// spends the enclave's CPU on keys instead of requests.
	MinKeyRotation = time.Minute
)

// flagHelp is returned by parseConfig after -h printed the usage.
var flagHelp = flag.ErrHelp

// Config is kmsproxyd's configuration, from flags and environment.
type Config struct {
	ListenParent   string
	ListenLocal    string
	Region         string
	KMSEndpoint    string
	KMSDial        string
	KMSCA          string
	Credentials    string
	IMDSDial       string
	Attestation    string
	NSM            string
	TPMDevice      string
	SimCA          string
	SimPCRs        string
	AttestationTTL time.Duration
	KeyRotation    time.Duration
	KeyBits        int
	Policy         string
	MaxInflight    int
	UpstreamConns  int
	RequestTimeout time.Duration
	LogLevel       string
	LogFormat      string
	Version        bool

	fs *flag.FlagSet // the flag set the values were parsed with
}

const usage = `kmsproxyd serves the AWS KMS API inside a Nitro Enclave (or on an EC2
instance with NitroTPM), adding the enclave's (or instance's) attestation to
every call that returns a secret and opening KMS's answer where it runs.

Usage:
  kmsproxyd [flags]

Every flag but --version can also be set in the environment as
KMSPROXY_<FLAG>, e.g. KMSPROXY_REGION=eu-west-1; a flag on the command line
wins.

Examples:
  # In an enclave: credentials from the parent's instance role via IMDS.
  kmsproxyd --region eu-west-1

  # Credentials pushed by the parent (kmsproxyctl credentials push).
  kmsproxyd --credentials push --policy /etc/kmsproxy/policy.yaml

  # On an EC2 instance with NitroTPM (an Attestable AMI): apps on the
  # instance use the unix socket; KMS and IMDS are reached directly.
  kmsproxyd --attestation nitrotpm --listen-parent unix:///run/kmsproxy/kmsproxy.sock \
    --kms-dial direct --imds-dial tcp://169.254.169.254:80

  # On a laptop against devkms, with the simulated NSM (built with -tags nsmsim).
  kmsproxyd --attestation nsm-sim --sim-ca ./ca --region us-east-1 \
    --kms-endpoint https://localhost:4599 --kms-dial tcp://127.0.0.1:4599 \
    --kms-ca ./tls/ca.pem --credentials env --listen-parent unix:///tmp/kmsproxy.sock

Flags:
`

func newFlagSet(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("kmsproxyd", flag.ContinueOnError)
	fs.StringVar(&c.ListenParent, "listen-parent", "vsock://:5000", "API address for the parent instance")
	fs.StringVar(&c.ListenLocal, "listen-local", "tcp://127.0.0.1:8000", `API address for apps inside the enclave ("" disables); brings lo up if it is down`)
	fs.StringVar(&c.Region, "region", "", "AWS region (default: from IMDS with --credentials imds, else required)")
	fs.StringVar(&c.KMSEndpoint, "kms-endpoint", "", "KMS URL: TLS name and SigV4 host (default https://kms.<region>.amazonaws.com)")
	fs.StringVar(&c.KMSDial, "kms-dial", "vsock://3:8000", `where upstream connections really go ("direct" dials the endpoint host)`)
	fs.StringVar(&c.KMSCA, "kms-ca", "", "PEM file of extra root certificates for the KMS endpoint (e.g. devkms's ca.pem)")
	fs.StringVar(&c.Credentials, "credentials", "imds", "where AWS credentials come from: imds, push or env")
	fs.StringVar(&c.IMDSDial, "imds-dial", "vsock://3:8002", "vsock-proxy to 169.254.169.254:80, for --credentials imds")
	fs.StringVar(&c.Attestation, "attestation", SourceNSM, "attestation source: nsm (an enclave's /dev/nsm), nitrotpm (an EC2 instance's NitroTPM), nsm-sim or nitrotpm-sim (simulators, only in binaries built with -tags nsmsim)")
	fs.StringVar(&c.NSM, "nsm", "", "old spelling of --attestation: device (= nsm) or sim (= nsm-sim)")
	fs.StringVar(&c.TPMDevice, "tpm-device", "", "with --attestation nitrotpm: the TPM device (default "+nitrotpm.DefaultDevicePath+"); with nitrotpm-sim: unix:///PATH of a simulator to use instead of an in-process one")
	fs.StringVar(&c.SimCA, "sim-ca", "", "with a simulator source: the `DIR` that kmsproxyctl dev ca wrote")
	fs.StringVar(&c.SimPCRs, "sim-pcrs", "", "with a simulator source: measurements JSON for the simulated PCRs: nitro-cli's for nsm-sim (debug-mode zeros without it), nitro-tpm-pcr-compute's for nitrotpm-sim")
	fs.DurationVar(&c.AttestationTTL, "attestation-ttl", 5*time.Minute, "reuse one attestation document per key this long, at most 5m; 0 = a fresh one per request")
	fs.DurationVar(&c.KeyRotation, "key-rotation", time.Hour, "replace the recipient RSA key this often, at least 1m (next key pre-generated); 0 = never")
	fs.IntVar(&c.KeyBits, "key-bits", 2048, "recipient RSA key size: 2048, 3072 or 4096")
	fs.StringVar(&c.Policy, "policy", "", "YAML listener policy file (default: built-in, every operation with plaintext on both listeners)")
	fs.IntVar(&c.MaxInflight, "max-inflight", 256, "concurrent requests on each listener (the policy's max_inflight sets one listener's own); beyond it callers get ThrottlingException")
	fs.IntVar(&c.UpstreamConns, "upstream-conns", 4, "max connections to KMS (vsock-proxy runs 4 workers by default)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", 10*time.Second, "whole request, upstream retries included")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or text")
	fs.BoolVar(&c.Version, "version", false, "print the release, the Go release and the RSA backend (go or openssl), and exit")
	// Parse errors are reported by run, in one line with a hint, as
	// kmsproxyctl and devkms report theirs; -h prints the usage (printUsage).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// printUsage writes kmsproxyd -h.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, usage)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseConfig reads flags, then fills every flag not given on the command
// line from its KMSPROXY_ environment variable.
func parseConfig(args []string, getenv func(string) string, stdout io.Writer) (*Config, error) {
	var c Config
	fs := newFlagSet(&c)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, fs)
			return nil, flagHelp
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q (kmsproxyd takes only flags)", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || !fromEnv(f.Name) {
			return
		}
		name := EnvName(f.Name)
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want %s", name, v, expectedForm(f)))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	c.fs = fs
	return &c, nil
}

// usageError is a mistake on the command line: run adds a hint to -h.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// fromEnv reports whether a flag is read from the environment: every flag
// but --version, which is an action, not a setting. Deployments commonly
// set KMSPROXY_VERSION=1.4.2 to label what they run; read as the flag it
// would stop kmsproxyd (not a boolean) or make it print its version and
// exit instead of serving.
func fromEnv(flagName string) bool { return flagName != "version" }

// expectedForm says in words what a flag's value must look like, for an
// environment variable that does not parse.
func expectedForm(f *flag.Flag) string {
	switch f.Value.(flag.Getter).Get().(type) {
	case bool:
		return "true or false"
	case int:
		return "a whole number, e.g. " + f.DefValue
	case time.Duration:
		return "a duration such as 90s, 5m or 1h30m (0 where the flag allows it)"
	default:
		return "a value for --" + f.Name
	}
}

// EnvName is the environment variable for a flag name.
func EnvName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Validate names the first problem with the configuration in words.
func (c *Config) Validate() error {
	if _, err := transport.Parse(c.ListenParent); err != nil {
		return fmt.Errorf("--listen-parent: %w", err)
	}
	if c.ListenLocal != "" {
		if _, err := transport.Parse(c.ListenLocal); err != nil {
			return fmt.Errorf("--listen-local: %w", err)
		}
	}
	if a, _, err := upstream.ParseDial(c.KMSDial); err != nil {
		return fmt.Errorf("--kms-dial: %w", err)
	} else if a.Network == transport.VSOCK && a.CID == transport.AnyCID {
		return errors.New("--kms-dial: a vsock dial address needs a CID, e.g. vsock://3:8000")
	}
	switch c.Credentials {
	case "imds":
		if _, err := transport.Parse(c.IMDSDial); err != nil {
			return fmt.Errorf("--imds-dial: %w", err)
		}
	case "push", "env":
		if c.Region == "" {
			return fmt.Errorf("--region is required with --credentials %s (only imds can tell the region)", c.Credentials)
		}
	default:
		return fmt.Errorf("--credentials %q: want imds, push or env", c.Credentials)
	}
	if err := c.validateAttestation(); err != nil {
		return err
	}
	switch c.KeyBits {
	case 2048, 3072, 4096:
	default:
		return fmt.Errorf("--key-bits %d: want 2048, 3072 or 4096", c.KeyBits)
	}
	switch {
	case c.AttestationTTL < 0:
		return errors.New("--attestation-ttl must not be negative")
	case c.AttestationTTL > MaxAttestationTTL:
		return fmt.Errorf("--attestation-ttl %s: at most %s, the age up to which kmsproxyd can count on KMS accepting a document; longer, KMS would refuse the reused document", c.AttestationTTL, MaxAttestationTTL)
	case c.KeyRotation < 0:
		return errors.New("--key-rotation must not be negative")
	case c.KeyRotation > 0 && c.KeyRotation < MinKeyRotation:
		return fmt.Errorf("--key-rotation %s: at least %s (or 0 for never); each key needs its own RSA key generation and NSM attestation, which take up to seconds for larger keys", c.KeyRotation, MinKeyRotation)
	case c.MaxInflight < 1:
		return errors.New("--max-inflight must be at least 1")
	case c.UpstreamConns < 1:
		return errors.New("--upstream-conns must be at least 1")
	case c.RequestTimeout <= 0:
		return errors.New("--request-timeout must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		return fmt.Errorf("--log-format %q: want json or text", c.LogFormat)
	}
	if c.KMSCA != "" {
		if _, err := os.Stat(c.KMSCA); err != nil {
			return fmt.Errorf("--kms-ca: %w", err)
		}
	}
	return nil
}

// Settings is the effective configuration for /v1/info: every flag but
// version. No flag holds a secret (credentials never come from flags).
func (c *Config) Settings() map[string]any {
	fs := c.fs
	m := map[string]any{}
	names := []string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "version" {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, n := range names {
		m[n] = fs.Lookup(n).Value.String()
	}
	return m
}
