// Command devkms is a local AWS KMS for development and tests that
// understands the Nitro Enclaves Recipient parameter: it verifies attestation
// documents, enforces key policies with the kms:RecipientAttestation:*
// condition keys and answers with CiphertextForRecipient as AWS KMS does. See
// internal/devkms for what it implements.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	kmsversion "github.com/enclavekit/kmsproxy/internal/version"
)

const usage = `devkms: a local AWS KMS that understands Nitro Enclaves attestation.

Usage:
  devkms [flags]

It serves the KMS JSON 1.1 API (use it with --endpoint-url / BaseEndpoint).
devkms keeps key material in the clear: never use it with real secrets.

Examples:
  # TLS on the default address, trusting the NSM simulator's CA:
  devkms --tls-self-signed /tmp/devkms-tls --trust-root /tmp/simca/root.pem
  aws --endpoint-url https://127.0.0.1:4599 --ca-bundle /tmp/devkms-tls/ca.pem kms create-key

  # Keys that survive restarts, created from a seed, callers authenticated
  # and held to their IAM policies:
  devkms --state devkms-state.json --seed seed.yaml --credentials creds.yaml --iam-policies iam.yaml

  # Stand in for the EC2 instance metadata service too, so that kmsproxyd
  # --credentials imds gets the instance role's rotating credentials and the
  # region from it (SigV4 verification turns on):
  devkms --tls-self-signed /tmp/devkms-tls --imds tcp://127.0.0.1:4598 --imds-role enclave-parent
  kmsproxyd --credentials imds --imds-dial tcp://127.0.0.1:4598 ...

  # Throttle 10% of the requests and add 50ms to each:
  devkms --fault-throttle-rate 0.1 --fault-latency 50ms
  curl -X PUT -d '{"throttle_rate":0}' http://127.0.0.1:4599/devkms/faults

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

func run(args []string, stdout, stderr io.Writer) int {
	cfg := devkms.DefaultConfig()
	fs := flag.NewFlagSet("devkms", flag.ContinueOnError)
	// Parse errors are reported below in one line with a hint, as
	// kmsproxyd and kmsproxyctl report theirs; -h prints the usage on stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var trustRoots stringList
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to serve on: tcp://HOST:PORT or unix:///path")
	fs.StringVar(&cfg.StatePath, "state", "", "JSON `file` keeping keys, aliases and policies across restarts (atomic writes); in memory if absent")
	fs.StringVar(&cfg.SeedPath, "seed", "", "YAML `file` of keys (fixed IDs), aliases and key policies to create at every start")
	fs.StringVar(&cfg.TLSSelfSignedDir, "tls-self-signed", "", "serve TLS with a certificate for localhost, 127.0.0.1 and ::1 from a CA kept in `dir` (clients trust dir/ca.pem)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "serve TLS with this PEM certificate `file` (with --tls-key)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key `file` of --tls-cert")
	fs.Var(&trustRoots, "trust-root", "PEM `file` of an extra attestation root (repeatable), e.g. the NSM simulator's root.pem; the AWS Nitro root is always trusted")
	fs.DurationVar(&cfg.MaxAttestationAge, "max-attestation-age", cfg.MaxAttestationAge, "how old a Recipient attestation document may be")
	fs.StringVar(&cfg.CredentialsPath, "credentials", "", "JSON or YAML `file` mapping access keys to secrets and principal ARNs; turns on SigV4 verification")
	fs.StringVar(&cfg.IAMPoliciesPath, "iam-policies", "", "YAML `file` mapping principal ARNs to their identity-based (IAM) policies, evaluated with key policies and grants as KMS does (default: every principal may do kms:* as far as IAM is concerned)")
	fs.StringVar(&cfg.Region, "region", cfg.Region, "AWS region in key ARNs and SigV4 scopes")
	fs.StringVar(&cfg.AccountID, "account-id", cfg.AccountID, "AWS account ID in key ARNs; its root is the caller when signatures are not checked (neither --credentials nor --imds)")
	fs.StringVar(&cfg.IMDS, "imds", "", "also serve a stand-in for the EC2 instance metadata service (IMDSv2 only) at this `address`, tcp://HOST:PORT or unix:///path, for kmsproxyd --credentials imds; turns on SigV4 verification; off when empty")
	fs.StringVar(&cfg.IMDSRole, "imds-role", cfg.IMDSRole, "`name` of the instance profile's IAM role whose credentials --imds serves; they sign as arn:aws:sts::ACCOUNT:assumed-role/NAME/INSTANCE_ID")
	fs.StringVar(&cfg.IMDSInstanceID, "imds-instance-id", cfg.IMDSInstanceID, "instance `ID` --imds reports (instance-id, identity document, the role's session name)")
	fs.DurationVar(&cfg.IMDSCredentialLifetime, "imds-credential-lifetime", cfg.IMDSCredentialLifetime, "how long each set of --imds role credentials is valid, 2m to 12h; the next set is served 5 minutes (at most half the lifetime) before the current one expires")
	fs.DurationVar(&cfg.Faults.Latency, "fault-latency", 0, "latency added to every KMS request")
	fs.Float64Var(&cfg.Faults.ThrottleRate, "fault-throttle-rate", 0, "fraction (0-1) of KMS requests answered with ThrottlingException")
	fs.Float64Var(&cfg.Faults.ErrorRate, "fault-error-rate", 0, "fraction (0-1) of KMS requests answered with KMSInternalException")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "devkms: error: %v\ndevkms: hint: run devkms -h for the flags and examples\n", err)
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, "devkms", buildVersion())
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "devkms: error: unexpected argument %q\ndevkms: hint: devkms takes only flags; see devkms -h\n", fs.Arg(0))
		return 2
	}
	cfg.TrustRootFiles = trustRoots
	if cfg.IMDS == "" {
		var stray []string
		fs.Visit(func(f *flag.Flag) {
			if strings.HasPrefix(f.Name, "imds-") {
				stray = append(stray, "--"+f.Name)
			}
		})
		if len(stray) > 0 {
			fmt.Fprintf(stderr, "devkms: error: %s without --imds: the IMDS stand-in is off\ndevkms: hint: add --imds tcp://127.0.0.1:PORT (or unix:///path) to serve it\n", strings.Join(stray, ", "))
			return 2
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "devkms: error: %v\n", err)
		return 2
	}
	level, _ := devkms.ParseLogLevel(cfg.LogLevel)
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	srv, err := devkms.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "devkms: error: %v\n", err)
		var se *devkms.StateError
		if errors.As(err, &se) {
			fmt.Fprintf(stderr, "devkms: hint: start with another --state file, or remove %s to start empty\n", se.Path)
		}
		return 1
	}
	if cfg.TLSSelfSignedDir != "" {
		cfg.Logger.Info("TLS with a self-signed CA", "ca", filepath.Join(cfg.TLSSelfSignedDir, devkms.CAFile))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A second signal during the shutdown ends devkms at once.
	context.AfterFunc(ctx, stop)
	if err := srv.ListenAndServe(ctx); err != nil {
		fmt.Fprintf(stderr, "devkms: error: %v\n", err)
		return 1
	}
	return 0
}

// buildVersion returns the release devkms was built as and its Go release.
func buildVersion() string {
	return kmsversion.String() + " " + kmsversion.Go()
}
