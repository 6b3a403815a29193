package packaging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// The parent-side files and where docs/deployment.md installs them.
var parentInstall = []struct{ src, dest string }{
	{"enclave/parent/kmsproxy-vsock-proxy-kms.service", "/etc/systemd/system/kmsproxy-vsock-proxy-kms.service"},
	{"enclave/parent/kmsproxy-vsock-proxy-imds.service", "/etc/systemd/system/kmsproxy-vsock-proxy-imds.service"},
	{"enclave/parent/kmsproxy-enclave.service", "/etc/systemd/system/kmsproxy-enclave.service"},
	{"enclave/parent/kmsproxy-credentials.service", "/etc/systemd/system/kmsproxy-credentials.service"},
	{"enclave/parent/kmsproxy-bridge.service", "/etc/systemd/system/kmsproxy-bridge.service"},
	{"enclave/parent/vsock-proxy-kms", "/usr/local/lib/kmsproxy/vsock-proxy-kms"},
	{"enclave/parent/vsock-proxy.yaml", "/etc/kmsproxy/vsock-proxy.yaml"},
	{"enclave/run-enclave.json", "/etc/kmsproxy/run-enclave.json"},
}

func unitFiles(t testing.TB) []string {
	t.Helper()
	var units []string
	for _, f := range parentInstall {
		if strings.HasSuffix(f.src, ".service") {
			units = append(units, f.src)
		}
	}
	matches, err := filepath.Glob(filepath.Join(harness.RepoRootT(t), "enclave", "parent", "*.service"))
	if err != nil {
		t.Fatal(err)
	}
	if len(matches) != len(units) {
		t.Fatalf("enclave/parent has %d units, the install list %d: keep them (and docs/deployment.md) in step", len(matches), len(units))
	}
	return units
}

// TestUnitsVerify runs systemd-analyze verify on every unit, installed as
// docs/deployment.md installs them into a scratch root directory, and wants
// no output at all: no error and no warning.
//
// What verify checks (systemd 252): that each unit file parses and every
// directive and value is known, that the units its Requires=/Wants= name can
// be loaded, that the start job for each unit can be built (dependency
// cycles), that each Exec*= command exists and is executable, and that
// Documentation= man pages exist. It does not start anything, resolve
// DynamicUser=, or run the commands. With --root every path it checks is
// looked up under the root, so the root holds: this system's unit directory
// (the targets the units are ordered against), the units and the helper
// script installed at their real paths, kmsproxyctl built from this
// repository, and, for the two tools of the aws-nitro-enclaves-cli package
// that this machine does not have (nitro-cli, vsock-proxy) and its
// nitro-enclaves-allocator.service, stand-ins that only exist.
func TestUnitsVerify(t *testing.T) {
	analyze := harness.RequireTool(t, "systemd-analyze")
	root, install := unitRoot(t)
	for _, f := range parentInstall {
		mode := os.FileMode(0o644)
		if f.dest == "/usr/local/lib/kmsproxy/vsock-proxy-kms" {
			mode = 0o755
		}
		install(f.dest, readRepoFile(t, f.src), mode)
	}
	ctl, err := os.ReadFile(goBuild(t, t.TempDir(), "./cmd/kmsproxyctl"))
	if err != nil {
		t.Fatal(err)
	}
	install("/usr/local/bin/kmsproxyctl", ctl, 0o755)
	stub := []byte("#!/bin/sh\necho \"stand-in for a tool this test machine does not have\" >&2\nexit 1\n")
	install("/usr/bin/nitro-cli", stub, 0o755)
	install("/usr/bin/vsock-proxy", stub, 0o755)
	install("/usr/bin/true", stub, 0o755)
	install("/etc/systemd/system/nitro-enclaves-allocator.service",
		[]byte("[Unit]\nDescription=stand-in for aws-nitro-enclaves-cli's allocator\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/bin/true\n"), 0o644)

	verify := func(units ...string) string {
		t.Helper()
		args := append([]string{"verify", "--root=" + root}, units...)
		cmd := exec.Command(analyze, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err != nil && out.Len() == 0 {
			fmt.Fprintf(&out, "exit: %v", err)
		}
		return out.String()
	}
	var installed []string
	for _, u := range unitFiles(t) {
		installed = append(installed, filepath.Join(root, "etc/systemd/system", filepath.Base(u)))
	}
	if out := verify(installed...); out != "" {
		t.Errorf("systemd-analyze verify --root=%s %s:\n%s", root, strings.Join(unitFiles(t), " "), out)
	} else {
		t.Logf("systemd-analyze verify: %d units, no output", len(installed))
	}

	// The same check must see problems in this environment: a unit with an
	// unknown directive, a missing ExecStart binary and a missing Requires=.
	bad := "[Unit]\nDescription=broken\nRequires=no-such-unit.service\n\n[Service]\nExecStart=/usr/local/bin/not-installed\nNoNewPrivilege=yes\n"
	install("/etc/systemd/system/kmsproxy-broken.service", []byte(bad), 0o644)
	out := verify(filepath.Join(root, "etc/systemd/system/kmsproxy-broken.service"))
	for _, want := range []string{"NoNewPrivilege", "not-installed", "no-such-unit.service"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify of a broken unit did not report %q; output:\n%s", want, out)
		}
	}
}

// unitDirectives reads a unit file into section → key → values.
func unitDirectives(t testing.TB, rel string) map[string]map[string][]string {
	t.Helper()
	m := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(readRepoFile(t, rel)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			m[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot read %q", rel, line)
			}
			m[section][k] = append(m[section][k], v)
		}
	}
	return m
}

// The units' command lines use flags that exist, the enclave's CID and
// name from run-enclave.json, and the vsock ports of kmsproxyd's defaults.
func TestUnitsCommandLines(t *testing.T) {
	tmp := t.TempDir()
	ctl := goBuild(t, tmp, "./cmd/kmsproxyctl")
	kmsproxyd := goBuild(t, tmp, "./cmd/kmsproxyd")

	var rc runEnclaveConfig
	if err := json.Unmarshal(readRepoFile(t, "enclave/run-enclave.json"), &rc); err != nil {
		t.Fatal(err)
	}
	enclaveAddr := fmt.Sprintf("vsock://%d:%d", rc.EnclaveCID, defaultVsockPort(t, kmsproxyd, "listen-parent"))
	kmsPort := defaultVsockPort(t, kmsproxyd, "kms-dial")
	imdsPort := defaultVsockPort(t, kmsproxyd, "imds-dial")

	execStart := func(unit string) []string {
		t.Helper()
		d := unitDirectives(t, "enclave/parent/"+unit)
		starts := d["Service"]["ExecStart"]
		if len(starts) != 1 {
			t.Fatalf("%s: %d ExecStart lines", unit, len(starts))
		}
		words, err := SplitWords(starts[0], nil)
		if err != nil {
			t.Fatalf("%s: %v", unit, err)
		}
		return words
	}
	tests := []struct {
		unit string
		want []string
	}{
		{"kmsproxy-credentials.service", []string{"/usr/local/bin/kmsproxyctl", "credentials", "push", "--enclave", enclaveAddr, "--watch"}},
		{"kmsproxy-bridge.service", []string{"/usr/local/bin/kmsproxyctl", "bridge", "--listen", "tcp://127.0.0.1:8000", "--enclave", enclaveAddr}},
		{"kmsproxy-enclave.service", []string{"/usr/bin/nitro-cli", "run-enclave", "--config", "/etc/kmsproxy/run-enclave.json"}},
		{"kmsproxy-vsock-proxy-imds.service", []string{"/usr/bin/vsock-proxy", fmt.Sprint(imdsPort), "169.254.169.254", "80", "--config", "/etc/kmsproxy/vsock-proxy.yaml"}},
		{"kmsproxy-vsock-proxy-kms.service", []string{"/usr/local/lib/kmsproxy/vsock-proxy-kms"}},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			got := execStart(tt.unit)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ExecStart (-want +got):\n%s", diff)
			}
			if got[0] != "/usr/local/bin/kmsproxyctl" {
				return
			}
			// Every flag must be one the subcommand has.
			sub := []string{got[1]}
			if got[1] == "credentials" {
				sub = append(sub, got[2])
			}
			help, _ := exec.Command(ctl, append(sub, "-h")...).CombinedOutput()
			for _, w := range got[len(sub)+1:] {
				if name, ok := strings.CutPrefix(w, "--"); ok {
					if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(name) + `\b`).Match(help) {
						t.Errorf("kmsproxyctl %s has no flag --%s", strings.Join(sub, " "), name)
					}
				}
			}
		})
	}
	// The script's default port is kmsproxyd's --kms-dial port.
	if script := string(readRepoFile(t, "enclave/parent/vsock-proxy-kms")); !strings.Contains(script, fmt.Sprintf("port=${KMSPROXY_KMS_VSOCK_PORT:-%d}", kmsPort)) {
		t.Errorf("vsock-proxy-kms's default port is not kmsproxyd's --kms-dial port %d", kmsPort)
	}
	d := unitDirectives(t, "enclave/parent/kmsproxy-enclave.service")
	for _, key := range []string{"ExecStop", "ExecStartPre"} {
		want := "nitro-cli terminate-enclave --enclave-name " + rc.EnclaveName
		if v := strings.Join(d["Service"][key], " "); !strings.Contains(v, want) {
			t.Errorf("kmsproxy-enclave.service %s = %q, want it to run %q", key, v, want)
		}
	}
}

// defaultVsockPort reads the port of a vsock address flag's default from
// kmsproxyd -h.
func defaultVsockPort(t testing.TB, kmsproxyd, flag string) int {
	t.Helper()
	help, _ := exec.Command(kmsproxyd, "-h").CombinedOutput()
	m := regexp.MustCompile(`(?s)\n  -` + regexp.QuoteMeta(flag) + ` string\n[^\n]*\(default "vsock://\d*:(\d+)"\)`).FindSubmatch(help)
	if m == nil {
		t.Fatalf("kmsproxyd -h shows no vsock default for -%s", flag)
	}
	var port int
	fmt.Sscan(string(m[1]), &port)
	return port
}

// Hardening every long-running unit carries, and the unprivileged ones more.
func TestUnitsHardening(t *testing.T) {
	for _, u := range unitFiles(t) {
		t.Run(filepath.Base(u), func(t *testing.T) {
			s := unitDirectives(t, u)["Service"]
			want := map[string]string{"NoNewPrivileges": "yes", "ProtectHome": "yes", "PrivateTmp": "yes"}
			if !strings.Contains(u, "kmsproxy-enclave") {
				// nitro-cli needs root and /dev/nitro_enclaves; the rest do not.
				want["DynamicUser"] = "yes"
				want["ProtectSystem"] = "strict"
				want["CapabilityBoundingSet"] = ""
				want["Restart"] = "on-failure"
			} else {
				want["ProtectSystem"] = "full"
				want["Type"] = "oneshot"
				want["RemainAfterExit"] = "yes"
			}
			for k, v := range want {
				if got := s[k]; !slices.Equal(got, []string{v}) {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestVsockProxyAllowlist(t *testing.T) {
	var cfg struct {
		Allowlist []struct {
			Address string `yaml:"address"`
			Port    int    `yaml:"port"`
		} `yaml:"allowlist"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, "enclave/parent/vsock-proxy.yaml")))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range cfg.Allowlist {
		got = append(got, fmt.Sprintf("%s:%d", e.Address, e.Port))
	}
	want := []string{"kms.REGION.amazonaws.com:443", "169.254.169.254:80"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("allowlist (-want +got):\n%s", diff)
	}
}
