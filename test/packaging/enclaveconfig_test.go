package packaging

import (
	"bytes"
	"encoding/json"
	"path"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/enclavekit/kmsproxy/internal/policy"
)

// runEnclaveConfig is nitro-cli run-enclave --config's JSON: the fields of
// nitro-cli's RunEnclavesArgs, in snake case (AWS Nitro Enclaves User Guide,
// "nitro-cli run-enclave"; aws-nitro-enclaves-cli src/common/commands_parser.rs).
type runEnclaveConfig struct {
	EnclaveName   string `json:"enclave_name"`
	CPUCount      int    `json:"cpu_count"`
	CPUIDs        []int  `json:"cpu_ids"`
	MemoryMiB     int    `json:"memory_mib"`
	EifPath       string `json:"eif_path"`
	EnclaveCID    int    `json:"enclave_cid"`
	DebugMode     *bool  `json:"debug_mode"`
	AttachConsole bool   `json:"attach_console"`
}

func TestRunEnclaveConfig(t *testing.T) {
	var rc runEnclaveConfig
	dec := json.NewDecoder(bytes.NewReader(readRepoFile(t, "enclave/run-enclave.json")))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rc); err != nil {
		t.Fatalf("enclave/run-enclave.json: %v (nitro-cli ignores unknown keys and would miss the setting)", err)
	}
	if rc.DebugMode == nil || *rc.DebugMode {
		// A debug-mode enclave attests with PCR0/1/2 all zero: no key policy
		// bound to the image's measurements would admit it.
		t.Error("debug_mode must be present and false")
	}
	if rc.EnclaveName != "kmsproxyd" {
		t.Errorf("enclave_name %q, want kmsproxyd (the units terminate it by that name)", rc.EnclaveName)
	}
	// CIDs 0-2 are reserved and 3 is the parent (vsock(7)); the units dial 16.
	if rc.EnclaveCID != 16 {
		t.Errorf("enclave_cid %d, want 16 (the units' vsock://16:5000)", rc.EnclaveCID)
	}
	if !path.IsAbs(rc.EifPath) {
		t.Errorf("eif_path %q must be absolute (the unit runs nitro-cli from /)", rc.EifPath)
	}
	if rc.CPUCount < 2 || rc.CPUCount%2 != 0 || rc.CPUIDs != nil {
		t.Errorf("cpu_count %d, cpu_ids %v: want an even cpu_count (whole cores on x86 with hyper-threading)", rc.CPUCount, rc.CPUIDs)
	}
	if rc.AttachConsole {
		t.Error("attach_console works only in debug mode")
	}

	var alloc struct {
		MemoryMiB int `yaml:"memory_mib"`
		CPUCount  int `yaml:"cpu_count"`
	}
	ydec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, "enclave/allocator.yaml")))
	ydec.KnownFields(true)
	if err := ydec.Decode(&alloc); err != nil {
		t.Fatalf("enclave/allocator.yaml: %v", err)
	}
	if rc.MemoryMiB < 128 || rc.MemoryMiB > alloc.MemoryMiB {
		t.Errorf("memory_mib %d: want at least 128 and at most the allocator's %d", rc.MemoryMiB, alloc.MemoryMiB)
	}
	if rc.CPUCount > alloc.CPUCount {
		t.Errorf("cpu_count %d exceeds the allocator's %d", rc.CPUCount, alloc.CPUCount)
	}
}

// The policy the image bakes must load in kmsproxyd, be narrower than the
// built-in default, and pin the account and the keys kmsproxyd may use.
func TestBakedPolicy(t *testing.T) {
	p, err := policy.Parse(readRepoFile(t, PolicySource), PolicySource)
	if err != nil {
		t.Fatal(err)
	}
	if p.IsDefault() {
		t.Fatal("the baked policy is the built-in default")
	}
	parent := p.Rules(policy.ListenerParent)
	if slices.Contains(parent.Operations, policy.Wildcard) {
		t.Errorf("the parent may call every operation: %v", parent.Operations)
	}
	for _, op := range []string{"Decrypt", "GenerateDataKey", "GenerateRandom", "Encrypt"} {
		if !slices.Contains(parent.Operations, op) {
			t.Errorf("the parent may not call %s, which kmsproxyctl offers", op)
		}
	}
	if slices.Contains(parent.Control, "info") || slices.Contains(parent.Control, policy.Wildcard) {
		t.Errorf("the parent may read /v1/info: %v", parent.Control)
	}
	if err := parent.AllowCredentialsPush(); err != nil {
		t.Errorf("credentials push refused: %v", err)
	}
	// The parent chooses kmsproxyd's account unless the policy pins one,
	// and whoever may create keys in that account chooses the key unless
	// the policy pins the keys, by ARN: a pattern for every key id of the
	// account is refused when the policy is parsed.
	if w := p.AccountsWarning(); w != "" {
		t.Errorf("the baked policy pins no account: %s", w)
	}
	if w := p.KeysWarning(); w != "" {
		t.Errorf("the baked policy pins no key: %s", w)
	}
	// The example policy must load too: operators start from it.
	if _, err := policy.Parse(readRepoFile(t, "enclave/policy.example.yaml"), "enclave/policy.example.yaml"); err != nil {
		t.Error(err)
	}
}
