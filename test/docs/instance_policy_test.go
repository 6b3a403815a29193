package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// generateCommand is the command docs/deployment.md's attested instance
// section runs to write the key policy it shows.
var generateCommand = regexp.MustCompile("(?m)^kmsproxyctl policy generate --kind nitrotpm (.*) \\\\\n +(.*) > build/instance-key-policy.json$")

// TestInstanceKeyPolicyExample: the key policy docs/deployment.md shows for
// an attested instance is exactly what its `policy generate --kind
// nitrotpm` command writes for the nitro-tpm-pcr-compute output it shows,
// so the guide can never drift back to a hand-written policy.
func TestInstanceKeyPolicyExample(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(harness.RepoRootT(t), "docs", "deployment.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples := map[string]string{}
	for _, m := range exampleMarker.FindAllStringSubmatch(string(text), -1) {
		examples[m[1]] = m[2]
	}
	measurements, policy := examples["nitro-tpm-pcr-compute output"], examples["instance key policy"]
	if measurements == "" || policy == "" {
		t.Fatalf("docs/deployment.md lacks the nitro-tpm-pcr-compute output or the instance key policy example")
	}
	m := generateCommand.FindStringSubmatch(string(text))
	if m == nil {
		t.Fatal("docs/deployment.md has no `kmsproxyctl policy generate --kind nitrotpm ... > build/instance-key-policy.json` command")
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "build"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "build", "instance-measurements.json"), []byte(measurements), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"policy", "generate", "--kind", "nitrotpm"}, strings.Fields(m[1]+" "+m[2])...)
	cmd := exec.Command(filepath.Join(binaries(t), "kmsproxyctl"), args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kmsproxyctl %s: %v", strings.Join(args, " "), err)
	}
	if got := strings.TrimSpace(string(out)); got != strings.TrimSpace(policy) {
		t.Errorf("docs/deployment.md's instance key policy is not what `kmsproxyctl %s` writes:\n%s", strings.Join(args, " "), got)
	}
}
