package packaging

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// makefile is the Makefile the targets are tested in.
func makefile(t testing.TB) string {
	t.Helper()
	return filepath.Join(harness.RepoRootT(t), "Makefile")
}

// runMake runs make TARGET in the repository with exactly the environment
// given (PATH included), and returns its exit error and combined output.
func runMake(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	mk := harness.RequireTool(t, "make")
	cmd := exec.Command(mk, append([]string{"-f", makefile(t)}, args...)...)
	cmd.Dir = harness.RepoRootT(t)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fakeTool writes an executable shell script into dir.
func fakeTool(t testing.TB, dir, name, script string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// The Nitro targets run on a Nitro Enclaves parent instance; elsewhere they
// must stop before doing anything, with a message that says why.
func TestMakeNitroTargetsExplainWhatIsMissing(t *testing.T) {
	harness.RequireTool(t, "make")
	empty := t.TempDir()
	noDaemon := t.TempDir()
	fakeTool(t, noDaemon, "docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1\n")
	noNitro := t.TempDir()
	fakeTool(t, noNitro, "docker", "case \"$1\" in info) exit 0;; *) echo \"docker $* must not run\" >&2; exit 3;; esac\n")
	build := t.TempDir()

	tests := []struct {
		name string
		path string
		args []string
		want string
	}{
		{"eif without docker", empty, []string{"eif"}, "make eif: docker is not installed"},
		{"eif without a docker daemon", noDaemon, []string{"eif"}, "make eif: cannot reach the docker daemon"},
		{"eif without nitro-cli", noNitro, []string{"eif"}, "make eif: nitro-cli is not installed"},
		{"run-enclave without nitro-cli", empty, []string{"run-enclave"}, "make run-enclave: nitro-cli is not installed"},
		{"policy without a role", empty, []string{"policy"}, "make policy: set ROLE_ARN"},
		// No C compiler or libssl-dev: make build and make reproducible say
		// what to install, or how to build pure Go, before running go.
		{"build without libcrypto", empty, []string{"build"}, "apt-get install gcc libssl-dev), or\nmake:   build the pure Go kmsproxyd (crypto/rsa) instead: make build CRYPTO=go"},
		{"reproducible without libcrypto", empty, []string{"reproducible"}, "make reproducible CRYPTO=go"},
		{"policy without measurements", empty, []string{"policy", "ROLE_ARN=arn:aws:iam::111122223333:role/enclave-parent", "BUILD=" + build}, "measurements.json is missing: run make eif first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runMake(t, []string{"PATH=" + tt.path, "HOME=" + t.TempDir()}, tt.args...)
			if err == nil {
				t.Fatalf("make %s succeeded:\n%s", strings.Join(tt.args, " "), out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("make %s said:\n%s\nwant %q", strings.Join(tt.args, " "), out, tt.want)
			}
			if strings.Contains(out, "must not run") {
				t.Errorf("make %s went on to run docker:\n%s", strings.Join(tt.args, " "), out)
			}
		})
	}
}

// make run-enclave starts the enclave with run-enclave.json's settings and
// the EIF make eif built; make policy writes a key policy for the build's
// measurements.
func TestMakeRunEnclaveAndPolicy(t *testing.T) {
	harness.RequireTool(t, "make")
	build := t.TempDir()
	if err := os.WriteFile(filepath.Join(build, "kmsproxyd.eif"), []byte("an EIF"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	record := filepath.Join(t.TempDir(), "config.json")
	fakeTool(t, bin, "nitro-cli", `[ "$1 $2" = "run-enclave --config" ] || { echo "unexpected nitro-cli $*" >&2; exit 2; }
cp "$3" `+record+"\n")
	env := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if out, err := runMake(t, env, "run-enclave", "BUILD="+build); err != nil {
		t.Fatalf("make run-enclave: %v\n%s", err, out)
	}
	var got, want runEnclaveConfig
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("config given to nitro-cli: %v\n%s", err, data)
	}
	if err := json.Unmarshal(readRepoFile(t, "enclave/run-enclave.json"), &want); err != nil {
		t.Fatal(err)
	}
	want.EifPath = filepath.Join(build, "kmsproxyd.eif")
	if got.EifPath != want.EifPath || got.EnclaveCID != want.EnclaveCID || got.EnclaveName != want.EnclaveName ||
		got.MemoryMiB != want.MemoryMiB || got.CPUCount != want.CPUCount || got.DebugMode == nil || *got.DebugMode {
		t.Errorf("nitro-cli got config\n%s\nwant enclave/run-enclave.json with eif_path %s", data, want.EifPath)
	}

	measurements := `{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + strings.Repeat("a1", 48) +
		`", "PCR1": "` + strings.Repeat("b2", 48) + `", "PCR2": "` + strings.Repeat("c3", 48) + `"}}`
	if err := os.WriteFile(filepath.Join(build, "measurements.json"), []byte(measurements), 0o644); err != nil {
		t.Fatal(err)
	}
	const role = "arn:aws:iam::111122223333:role/enclave-parent"
	if out, err := runMake(t, env, "policy", "ROLE_ARN="+role, "BUILD="+build); err != nil {
		t.Fatalf("make policy: %v\n%s", err, out)
	}
	kp, err := os.ReadFile(filepath.Join(build, "key-policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Statement []json.RawMessage }
	if err := json.Unmarshal(kp, &doc); err != nil || len(doc.Statement) < 3 {
		t.Fatalf("key-policy.json: %v, %d statements\n%s", err, len(doc.Statement), kp)
	}
	for _, want := range []string{role, strings.Repeat("a1", 48), strings.Repeat("c3", 48)} {
		if !bytes.Contains(kp, []byte(want)) {
			t.Errorf("key-policy.json does not name %s", want)
		}
	}
}
