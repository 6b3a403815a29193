package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// The attested instance's unit and where docs/deployment.md installs it.
const (
	instanceUnit     = "enclave/instance/kmsproxyd.service"
	instanceUnitDest = "/etc/systemd/system/kmsproxyd.service"
)

// TestInstanceUnitVerify runs systemd-analyze verify on the attested
// instance's unit, installed as docs/deployment.md installs it with the
// kmsproxyd built from this repository, and wants no output (see
// TestUnitsVerify for what verify checks).
func TestInstanceUnitVerify(t *testing.T) {
	analyze := harness.RequireTool(t, "systemd-analyze")
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(filepath.Join(harness.RepoRootT(t), instanceUnit)), "*.service"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("enclave/instance has %d units, this test knows 1: keep them (and docs/deployment.md) in step", len(matches))
	}
	root, install := unitRoot(t)
	install(instanceUnitDest, readRepoFile(t, instanceUnit), 0o644)
	bin, err := os.ReadFile(goBuild(t, t.TempDir(), "./cmd/kmsproxyd"))
	if err != nil {
		t.Fatal(err)
	}
	install("/usr/local/bin/kmsproxyd", bin, 0o755)

	cmd := exec.Command(analyze, "verify", "--root="+root, filepath.Join(root, instanceUnitDest))
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() != 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", instanceUnit, err, out.String())
	}
}

// TestInstanceUnitCommandLine: the unit runs the production kmsproxyd
// with a NitroTPM configuration it accepts (the flags exist and Validate
// passes: on this machine, without a TPM, it stops at opening the device,
// not at its flags), serving a unix socket in the service's runtime
// directory only.
func TestInstanceUnitCommandLine(t *testing.T) {
	d := unitDirectives(t, instanceUnit)
	starts := d["Service"]["ExecStart"]
	if len(starts) != 1 {
		t.Fatalf("%d ExecStart lines", len(starts))
	}
	words, err := SplitWords(starts[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if words[0] != "/usr/local/bin/kmsproxyd" {
		t.Fatalf("ExecStart runs %s", words[0])
	}
	flags := map[string]string{}
	for _, w := range words[1:] {
		if k, v, ok := strings.Cut(strings.TrimPrefix(w, "--"), "="); ok {
			flags[k] = v
		}
	}
	for i := 1; i+1 < len(words); i++ {
		if k, ok := strings.CutPrefix(words[i], "--"); ok && !strings.Contains(k, "=") {
			flags[k] = words[i+1]
			i++
		}
	}
	want := map[string]string{
		"attestation":   "nitrotpm",
		"tpm-device":    "/dev/tpmrm0",
		"policy":        "/etc/kmsproxy/policy.yaml",
		"listen-parent": "unix:///run/kmsproxy/kmsproxy.sock",
		"listen-local":  "",
		"kms-dial":      "direct",
		"imds-dial":     "tcp://169.254.169.254:80",
		"log-format":    "json",
	}
	if diff := cmp.Diff(want, flags); diff != "" {
		t.Errorf("kmsproxyd flags (-want +got):\n%s", diff)
	}
	for key, value := range map[string]string{"RuntimeDirectory": "kmsproxy", "RuntimeDirectoryMode": "0750", "UMask": "0007", "Group": "kmsproxy-apps", "DeviceAllow": "/dev/tpmrm0 rw"} {
		if got := strings.Join(d["Service"][key], " "); got != value {
			t.Errorf("%s=%s, want %s", key, got, value)
		}
	}

	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		t.Log("this machine has a TPM: the command line is not run")
		return
	}
	kmsproxyd := goBuild(t, t.TempDir(), "./cmd/kmsproxyd")
	// The repository's instance policy stands in for the AMI's
	// /etc/kmsproxy/policy.yaml.
	run := exec.Command(kmsproxyd, append(words[1:], "--region", "us-east-1", "--listen-parent", "unix://"+filepath.Join(t.TempDir(), "k.sock"),
		"--policy", filepath.Join(harness.RepoRootT(t), "enclave", "instance", "policy.yaml"))...)
	out, err := run.CombinedOutput()
	if run.ProcessState == nil || run.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "failed to open the attestation source: nitrotpm: no TPM device: /dev/tpmrm0 does not exist") {
		t.Fatalf("kmsproxyd with the unit's flags: %v\n%s", err, out)
	}
}

// TestInstancePolicy: the attested instance's policy (installed in the AMI
// at /etc/kmsproxy/policy.yaml) loads, pins the account and the keys, and
// opens only the listener the unit serves.
func TestInstancePolicy(t *testing.T) {
	const path = "enclave/instance/policy.yaml"
	p, err := policy.Parse(readRepoFile(t, path), path)
	if err != nil {
		t.Fatal(err)
	}
	if w := p.AccountsWarning(); w != "" {
		t.Errorf("%s pins no account: %s", path, w)
	}
	if w := p.KeysWarning(); w != "" {
		t.Errorf("%s pins no key: %s", path, w)
	}
	if err := p.Rules(policy.ListenerParent).AllowPlaintext("Decrypt"); err != nil {
		t.Errorf("the instance's apps may not decrypt: %v", err)
	}
	if err := p.Rules(policy.ListenerLocal).AllowOperation("Decrypt"); err == nil {
		t.Error("the local listener, which the unit turns off, is open in the policy")
	}
}
