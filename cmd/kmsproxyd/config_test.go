package main

import (
	"bytes"
	"flag"
	"io"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/internal/cms"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfigFlagWinsOverEnv(t *testing.T) {
	c, err := parseConfig(
		[]string{"--region", "eu-west-1", "--max-inflight", "10"},
		env(map[string]string{
			"KMSPROXY_REGION":          "us-east-1",
			"KMSPROXY_KEY_BITS":        "4096",
			"KMSPROXY_ATTESTATION_TTL": "0s",
			"KMSPROXY_LISTEN_LOCAL":    "",
		}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Region != "eu-west-1" || c.MaxInflight != 10 {
		t.Errorf("flags: region=%q max-inflight=%d", c.Region, c.MaxInflight)
	}
	if c.KeyBits != 4096 || c.AttestationTTL != 0 {
		t.Errorf("env: key-bits=%d attestation-ttl=%v", c.KeyBits, c.AttestationTTL)
	}
	if c.ListenLocal != "tcp://127.0.0.1:8000" || c.KMSDial != "vsock://3:8000" || c.RequestTimeout != 10*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if got := c.Settings()["region"]; got != "eu-west-1" {
		t.Errorf("Settings region = %v", got)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "bad env value", env: map[string]string{"KMSPROXY_KEY_BITS": "many"}, want: `KMSPROXY_KEY_BITS="many": want a whole number, e.g. 2048`},
		{name: "bad env duration", env: map[string]string{"KMSPROXY_KEY_ROTATION": "hourly"}, want: `KMSPROXY_KEY_ROTATION="hourly": want a duration such as 90s, 5m or 1h30m`},
		{name: "unknown flag", args: []string{"--nope"}, want: "nope"},
		{name: "positional", args: []string{"serve"}, want: "unexpected argument"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseConfig error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// A release label in the environment, as deployments set one, must neither
// stop kmsproxyd nor turn it into a --version run.
func TestVersionIsNotReadFromTheEnvironment(t *testing.T) {
	for _, v := range []string{"1.4.2", "true", "v1.4.2-3-gdeadbeef"} {
		c, err := parseConfig(nil, env(map[string]string{"KMSPROXY_VERSION": v, "KMSPROXY_REGION": "eu-west-1"}), io.Discard)
		if err != nil {
			t.Fatalf("KMSPROXY_VERSION=%s: %v", v, err)
		}
		if c.Version || c.Region != "eu-west-1" {
			t.Errorf("KMSPROXY_VERSION=%s: Version=%v Region=%q", v, c.Version, c.Region)
		}
	}
}

// Every flag read from the environment names its variable and the form
// it wants when the value does not parse.
func TestEveryEnvErrorNamesVariableAndForm(t *testing.T) {
	var c Config
	fs := newFlagSet(&c)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		if !fromEnv(f.Name) {
			return
		}
		name := EnvName(f.Name)
		_, err := parseConfig(nil, env(map[string]string{name: "\x00not-a-value"}), io.Discard)
		if err == nil {
			return // a string flag: any text parses; Validate judges it
		}
		n++
		if msg := err.Error(); !strings.HasPrefix(msg, name+"=") || !strings.Contains(msg, ": want ") || strings.Contains(msg, "parse error") {
			t.Errorf("%s: error %q does not name the variable and the expected form", name, msg)
		}
	})
	if n < 5 {
		t.Fatalf("only %d flags rejected a bad value: the test lost its cases", n)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{name: "bad parent", args: []string{"--listen-parent", "5000"}, want: "--listen-parent"},
		{name: "bad local", args: []string{"--listen-local", "tcp://x"}, want: "--listen-local"},
		{name: "vsock dial without cid", args: []string{"--kms-dial", "vsock://:8000"}, want: "needs a CID"},
		{name: "push needs region", args: []string{"--credentials", "push"}, want: "--region is required"},
		{name: "bad credentials", args: []string{"--credentials", "file"}, want: "want imds, push or env"},
		{name: "sim needs ca", args: []string{"--nsm", "sim"}, want: "--sim-ca"},
		{name: "sim flags need sim", args: []string{"--sim-ca", "/tmp"}, want: "need a simulator source"},
		{name: "bad nsm", args: []string{"--nsm", "tpm"}, want: "want device or sim"},
		{name: "bad attestation", args: []string{"--attestation", "tpm"}, want: "want nsm, nitrotpm, nsm-sim or nitrotpm-sim"},
		{name: "nsm and attestation disagree", args: []string{"--nsm", "sim", "--attestation", "nitrotpm"}, want: "disagree"},
		{name: "nsm-sim needs ca", args: []string{"--attestation", "nsm-sim"}, want: "--sim-ca"},
		{name: "tpm device needs nitrotpm", args: []string{"--tpm-device", "/dev/tpm0"}, want: "--tpm-device needs --attestation nitrotpm"},
		{name: "tpm device relative", args: instance("--tpm-device", "tpm0"), want: "absolute path"},
		{name: "nitrotpm-sim needs ca or socket", args: []string{"--attestation", "nitrotpm-sim", "--listen-parent", "unix:///tmp/k.sock", "--kms-dial", "direct"}, want: "--sim-ca"},
		{name: "nitrotpm-sim socket not unix", args: []string{"--attestation", "nitrotpm-sim", "--tpm-device", "tcp://127.0.0.1:2321"}, want: "unix:///PATH"},
		{name: "nitrotpm-sim socket and ca", args: []string{"--attestation", "nitrotpm-sim", "--tpm-device", "unix:///tmp/tpm.sock", "--sim-ca", "/tmp"}, want: "in-process simulator"},
		{name: "nitrotpm with the default vsock parent", args: []string{"--attestation", "nitrotpm", "--kms-dial", "direct"}, want: "a vsock listener would serve the instance's enclaves"},
		{name: "nitrotpm on a public address", args: instance("--listen-local", "tcp://0.0.0.0:8000"), want: "loopback"},
		{name: "nitrotpm on a host name", args: instance("--listen-local", "tcp://localhost:8000"), want: "loopback"},
		{name: "nitrotpm through vsock-proxy", args: []string{"--attestation", "nitrotpm", "--listen-parent", "unix:///tmp/k.sock", "--imds-dial", "tcp://169.254.169.254:80"}, want: "--kms-dial direct"},
		{name: "nitrotpm IMDS through vsock", args: []string{"--attestation", "nitrotpm", "--listen-parent", "unix:///tmp/k.sock", "--kms-dial", "direct"}, want: "--imds-dial tcp://169.254.169.254:80"},
		{name: "bad bits", args: []string{"--key-bits", "1024"}, want: "--key-bits"},
		{name: "negative ttl", args: []string{"--attestation-ttl", "-1s"}, want: "--attestation-ttl"},
		{name: "tiny rotation", args: []string{"--key-rotation", "1ms"}, want: "--key-rotation"},
		{name: "rotation that cannot work", args: []string{"--key-rotation", "100ms"}, want: "--key-rotation 100ms: at least 1m0s"},
		{name: "attestation reused longer than KMS accepts", args: []string{"--attestation-ttl", "10m"}, want: "--attestation-ttl 10m0s: at most 5m0s"},
		{name: "zero inflight", args: []string{"--max-inflight", "0"}, want: "--max-inflight"},
		{name: "zero conns", args: []string{"--upstream-conns", "0"}, want: "--upstream-conns"},
		{name: "zero timeout", args: []string{"--request-timeout", "0s"}, want: "--request-timeout"},
		{name: "bad level", args: []string{"--log-level", "loud"}, want: "--log-level"},
		{name: "bad format", args: []string{"--log-format", "xml"}, want: "--log-format"},
		{name: "missing ca file", args: []string{"--kms-ca", "/nonexistent/ca.pem"}, want: "--kms-ca"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// instance is a valid configuration for an attested instance, plus extra.
func instance(extra ...string) []string {
	return append([]string{"--attestation", "nitrotpm", "--listen-parent", "unix:///run/kmsproxy/kmsproxy.sock",
		"--kms-dial", "direct", "--imds-dial", "tcp://169.254.169.254:80"}, extra...)
}

func TestValidateAttestationSources(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string // the source
	}{
		{name: "default", want: SourceNSM},
		{name: "old spelling device", args: []string{"--nsm", "device"}, want: SourceNSM},
		{name: "old spelling sim", args: []string{"--nsm", "sim", "--sim-ca", "/tmp"}, want: SourceNSMSim},
		{name: "old and new spelling agree", args: []string{"--nsm", "sim", "--attestation", "nsm-sim", "--sim-ca", "/tmp"}, want: SourceNSMSim},
		{name: "instance", args: instance(), want: SourceNitroTPM},
		{name: "instance with tpm0", args: instance("--tpm-device", "/dev/tpm0", "--listen-local", "tcp://[::1]:8000"), want: SourceNitroTPM},
		{name: "instance without a local listener", args: instance("--listen-local", ""), want: SourceNitroTPM},
		{name: "instance with pushed credentials", args: []string{"--attestation", "nitrotpm", "--listen-parent", "tcp://127.0.0.1:5000", "--kms-dial", "direct", "--credentials", "push", "--region", "us-east-1"}, want: SourceNitroTPM},
		{name: "simulated instance", args: []string{"--attestation", "nitrotpm-sim", "--sim-ca", "/tmp", "--listen-parent", "unix:///tmp/k.sock", "--kms-dial", "tcp://127.0.0.1:4599", "--credentials", "env", "--region", "us-east-1"}, want: SourceNitroTPMSim},
		{name: "simulator socket", args: []string{"--attestation", "nitrotpm-sim", "--tpm-device", "unix:///tmp/tpm.sock", "--listen-parent", "unix:///tmp/k.sock", "--kms-dial", "direct", "--credentials", "env", "--region", "us-east-1"}, want: SourceNitroTPMSim},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got := c.attestationSource(); got != tt.want {
				t.Errorf("source = %q, want %q", got, tt.want)
			}
		})
	}
	// The environment spells it too.
	c, err := parseConfig(nil, env(map[string]string{"KMSPROXY_ATTESTATION": "nitrotpm", "KMSPROXY_TPM_DEVICE": "/dev/tpm0"}), io.Discard)
	if err != nil || c.attestationSource() != SourceNitroTPM || c.TPMDevice != "/dev/tpm0" {
		t.Fatalf("from the environment: %v %+v", err, c)
	}
}

func TestRunUsageErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--key-bits", "7"}, env(nil), &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.HasPrefix(stderr.String(), "kmsproxyd: error: --key-bits 7") {
		t.Fatalf("stderr = %q", stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"-version"}, env(nil), &stdout, &stderr); code != 0 || !strings.HasPrefix(stdout.String(), "kmsproxyd ") {
		t.Fatalf("-version: exit %d, stdout %q", code, stdout.String())
	}
	// The Go release and the RSA backend, as the other binaries print
	// their Go release.
	want := " " + runtime.Version() + " rsa=" + string(cms.DefaultBackend()) + " ("
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("-version printed %q, want it to contain %q", stdout.String(), want)
	}
}

func TestSimulatorNeedsBuildTag(t *testing.T) {
	if openSimulator != nil {
		t.Skip("skipping: this test binary was built with -tags nsmsim")
	}
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	for _, source := range [][]string{{"--nsm", "sim", "--sim-ca", dir}, {"--attestation", "nitrotpm-sim", "--sim-ca", dir, "--kms-dial", "direct"}} {
		stdout.Reset()
		stderr.Reset()
		code := run(append(source, "--credentials", "env", "--region", "us-east-1",
			"--listen-parent", "tcp://127.0.0.1:0", "--listen-local", ""), env(nil), &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), "built without the simulator") {
			t.Fatalf("%v: exit %d, stderr %s", source, code, stderr.String())
		}
	}
}

// TestNoTPMDevice: on a machine without a TPM (as here), --attestation
// nitrotpm stops at start with the reason.
func TestNoTPMDevice(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(instance("--tpm-device", t.TempDir()+"/tpmrm0", "--credentials", "env", "--region", "us-east-1", "--listen-parent", "tcp://127.0.0.1:0", "--listen-local", ""), env(nil), &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "kmsproxyd: error: failed to open the attestation source: nitrotpm: no TPM device") {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
}

// TestProductionBinaryHasNoSimulator checks what the enclave image (or an
// instance) would run: the production build of kmsproxyd links neither the
// NSM simulator, nor the NitroTPM simulator, nor devkms, but the NitroTPM
// client; the nsmsim build links both simulators.
func TestProductionBinaryHasNoSimulator(t *testing.T) {
	deps := func(tags ...string) string {
		args := append([]string{"list", "-deps"}, tags...)
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps: %v\n%s", err, out)
		}
		return string(out)
	}
	prod := deps()
	for _, forbidden := range []string{
		"github.com/enclavekit/kmsproxy/internal/nsmsim",
		"github.com/enclavekit/kmsproxy/internal/nitrotpmsim",
		"github.com/enclavekit/kmsproxy/internal/devkms",
		"github.com/enclavekit/kmsproxy/internal/keypolicy",
	} {
		if strings.Contains(prod, forbidden+"\n") {
			t.Errorf("production kmsproxyd links %s", forbidden)
		}
	}
	for _, want := range []string{"internal/proxy", "internal/nitrotpm"} {
		if !strings.Contains(prod, "github.com/enclavekit/kmsproxy/"+want+"\n") {
			t.Fatalf("go list -deps output lacks %s: it does not look like kmsproxyd's:\n%s", want, prod)
		}
	}
	sim := deps("-tags", "nsmsim")
	for _, want := range []string{"internal/nsmsim", "internal/nitrotpmsim"} {
		if !strings.Contains(sim, "github.com/enclavekit/kmsproxy/"+want+"\n") {
			t.Errorf("the nsmsim build does not link %s", want)
		}
	}
}

// TestUsageConvention: an unknown flag is one error line and a hint, as
// kmsproxyctl and devkms report it; -h prints the usage on stdout.
func TestUsageConvention(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--bogus"}, env(nil), &stdout, &stderr); code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	want := "kmsproxyd: error: flag provided but not defined: -bogus\nkmsproxyd: hint: run kmsproxyd -h for the flags and examples\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("stderr:\n%s\nstdout:\n%s\nwant stderr:\n%s", stderr.String(), stdout.String(), want)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"-h"}, env(nil), &stdout, &stderr); code != 0 {
		t.Errorf("-h: exit status %d, want 0", code)
	}
	if !strings.Contains(stdout.String(), "Examples:") || !strings.Contains(stdout.String(), "-listen-parent") || stderr.Len() != 0 {
		t.Errorf("-h: stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}

func TestEndpointRegion(t *testing.T) {
	for _, tt := range []struct {
		endpoint, want string
	}{
		{"https://kms.eu-west-1.amazonaws.com", "eu-west-1"},
		{"https://kms-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"},
		{"https://kms.cn-north-1.amazonaws.com.cn", "cn-north-1"},
		{"https://kms.ap-southeast-5.api.aws", "ap-southeast-5"},
		{"https://vpce-0123abcd-4567efgh.kms.eu-central-2.vpce.amazonaws.com", "eu-central-2"},
		{"https://KMS.EU-WEST-1.AMAZONAWS.COM:443", "eu-west-1"},
		{"https://localhost:4599", ""},
		{"https://kms.eu-west-1.example.com", ""},
		{"https://kms.eu-west-1.amazonaws.com.evil.example", ""},
		{"https://notkms.eu-west-1.amazonaws.com", ""},
		{"::", ""},
	} {
		got, ok := endpointRegion(tt.endpoint)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("endpointRegion(%q) = %q, %v; want %q", tt.endpoint, got, ok, tt.want)
		}
	}
}
