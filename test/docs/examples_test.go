package docs

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// exampleMarker precedes an example file in the docs: an HTML comment
// naming its kind, then a fenced code block.
var exampleMarker = regexp.MustCompile("(?m)^<!-- example: ([a-z -]+) -->\n```[a-z]*\n((?s:.*?))\n```")

// TestConfigurationExamplesParse: the example seed, credentials and IAM
// policies files in docs/configuration.md are accepted by devkms, and the
// policies they hold are valid, so that a reader who copies one starts from
// a working file.
func TestConfigurationExamplesParse(t *testing.T) {
	text, err := os.ReadFile(filepath.Join(harness.RepoRootT(t), "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, m := range exampleMarker.FindAllStringSubmatch(string(text), -1) {
		if _, dup := found[m[1]]; dup {
			t.Errorf("two examples of %q", m[1])
		}
		found[m[1]] = m[2]
	}
	checks := map[string]func(t *testing.T, body []byte){
		"devkms seed": func(t *testing.T, body []byte) {
			seed, err := devkms.ParseSeed("seed.yaml", body)
			if err != nil {
				t.Fatal(err)
			}
			if len(seed.Keys) == 0 || len(seed.Aliases) == 0 {
				t.Fatalf("the example declares no keys or aliases: %+v", seed)
			}
			for _, k := range seed.Keys {
				if k.Policy == "" {
					continue
				}
				if _, err := keypolicy.Parse([]byte(k.Policy)); err != nil {
					t.Errorf("key %s: inline policy: %v", k.ID, err)
				}
			}
			// The seed applies (policy_file names a file the example does
			// not show; drop it).
			for i := range seed.Keys {
				seed.Keys[i].PolicyFile = ""
			}
			srv, err := devkms.New(quietConfig())
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.ApplySeed(seed); err != nil {
				t.Fatalf("ApplySeed: %v", err)
			}
		},
		"devkms credentials": func(t *testing.T, body []byte) {
			creds, err := devkms.ParseCredentials("credentials.yaml", body)
			if err != nil {
				t.Fatal(err)
			}
			if len(creds) < 2 {
				t.Fatalf("the example has %d access keys", len(creds))
			}
		},
		"devkms iam-policies": func(t *testing.T, body []byte) {
			m, err := devkms.ParseIAMPolicies("iam.yaml", body)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for principal, list := range m {
				for _, p := range list {
					if _, err := keypolicy.ParseIdentity([]byte(p.Policy)); err != nil {
						t.Errorf("%s: policy %s: %v", principal, p.Name, err)
					}
					n++
				}
			}
			if n == 0 {
				t.Fatal("the example has no policies")
			}
			cfg := quietConfig()
			cfg.IAMPolicies = m
			if _, err := devkms.New(cfg); err != nil {
				t.Fatalf("devkms refuses the example: %v", err)
			}
		},
	}
	for kind, check := range checks {
		t.Run(kind, func(t *testing.T) {
			body, ok := found[kind]
			if !ok {
				t.Fatalf("docs/configuration.md has no example marked <!-- example: %s -->", kind)
			}
			check(t, []byte(strings.TrimSpace(body)+"\n"))
		})
	}
	for kind := range found {
		if _, ok := checks[kind]; !ok {
			t.Errorf("docs/configuration.md has an example of %q, which no test checks", kind)
		}
	}
}

// quietConfig is devkms's default configuration without its logs.
func quietConfig() devkms.Config {
	cfg := devkms.DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}
