package packaging

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/google/go-cmp/cmp"
)

// fakeIMDS answers the two IMDSv2 calls vsock-proxy-kms makes, the way EC2's
// metadata service does: PUT /latest/api/token with a TTL header gives a
// token; a metadata GET without a valid token is 401 Unauthorized.
type fakeIMDS struct {
	region     string
	tokenCode  int // status for the token request; 0 = 200
	calls      atomic.Int32
	withoutTTL atomic.Int32
}

const fakeToken = "AQAEAFake-token=="

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			f.withoutTTL.Add(1)
			http.Error(w, "missing TTL", http.StatusBadRequest)
			return
		}
		if f.tokenCode != 0 {
			http.Error(w, "refused", f.tokenCode)
			return
		}
		w.Write([]byte(fakeToken))
	case r.Method == http.MethodGet && r.URL.Path == "/latest/meta-data/placement/region":
		if r.Header.Get("X-aws-ec2-metadata-token") != fakeToken {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(f.region))
	default:
		http.NotFound(w, r)
	}
}

func TestVsockProxyKMSScript(t *testing.T) {
	bash := harness.RequireTool(t, "bash")
	harness.RequireTool(t, "curl")
	script := filepath.Join(harness.RepoRootT(t), "enclave", "parent", "vsock-proxy-kms")
	template := string(readRepoFile(t, "enclave/parent/vsock-proxy.yaml"))

	tests := []struct {
		name      string
		imds      *fakeIMDS
		env       []string
		allowlist string // the shipped template with REGION replaced by this
		wantArgs  []string
		wantErr   string
		wantCalls int32 // -1: any
	}{
		{
			name: "region from IMDSv2", imds: &fakeIMDS{region: "eu-west-1"}, allowlist: "eu-west-1",
			wantArgs: []string{"8000", "kms.eu-west-1.amazonaws.com", "443", "--config", "ALLOWLIST"}, wantCalls: 2,
		},
		{
			name: "GovCloud", imds: &fakeIMDS{region: "us-gov-west-1"}, allowlist: "us-gov-west-1",
			wantArgs: []string{"8000", "kms.us-gov-west-1.amazonaws.com", "443", "--config", "ALLOWLIST"}, wantCalls: 2,
		},
		{
			name: "China", imds: &fakeIMDS{region: "cn-north-1"}, allowlist: "cn-north-1",
			wantErr: "does not allow kms.cn-north-1.amazonaws.com.cn:443", wantCalls: 2,
		},
		{
			name: "region given", imds: &fakeIMDS{region: "eu-west-1"}, env: []string{"KMSPROXY_REGION=ap-southeast-2"}, allowlist: "ap-southeast-2",
			wantArgs: []string{"8000", "kms.ap-southeast-2.amazonaws.com", "443", "--config", "ALLOWLIST"}, wantCalls: 0,
		},
		{
			name: "FIPS host and another port", imds: &fakeIMDS{region: "us-east-1"},
			env:       []string{"KMSPROXY_KMS_HOST=kms-fips.us-east-1.amazonaws.com", "KMSPROXY_KMS_VSOCK_PORT=9000"},
			allowlist: "us-east-1\n- {address: kms-fips.us-east-1.amazonaws.com, port: 443}",
			wantArgs:  []string{"9000", "kms-fips.us-east-1.amazonaws.com", "443", "--config", "ALLOWLIST"}, wantCalls: 2,
		},
		{
			name: "region not in the allowlist", imds: &fakeIMDS{region: "eu-west-1"}, allowlist: "eu-west-2",
			wantErr: `hint: add the line "- {address: kms.eu-west-1.amazonaws.com, port: 443}"`, wantCalls: 2,
		},
		{
			name: "template not filled in", imds: &fakeIMDS{region: "eu-west-1"}, allowlist: "REGION",
			wantErr: "does not allow kms.eu-west-1.amazonaws.com:443", wantCalls: 2,
		},
		{
			name: "IMDS refuses a token", imds: &fakeIMDS{region: "eu-west-1", tokenCode: http.StatusForbidden}, allowlist: "eu-west-1",
			wantErr: "failed to get an IMDSv2 session token", wantCalls: 1,
		},
		{
			name: "not a region", imds: &fakeIMDS{region: "../../etc/passwd"}, allowlist: "eu-west-1",
			wantErr: `"../../etc/passwd" is not an AWS region name`, wantCalls: 2,
		},
		{
			name: "empty region", imds: &fakeIMDS{region: ""}, allowlist: "eu-west-1",
			wantErr: "is not an AWS region name", wantCalls: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.imds)
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			allowlist := filepath.Join(dir, "vsock-proxy.yaml")
			if err := os.WriteFile(allowlist, []byte(strings.ReplaceAll(template, "REGION", tt.allowlist)), 0o644); err != nil {
				t.Fatal(err)
			}
			// A stand-in vsock-proxy that records the arguments it was exec'd with.
			argsFile := filepath.Join(dir, "args")
			fake := filepath.Join(dir, "vsock-proxy")
			if err := os.WriteFile(fake, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > "+argsFile+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bash, script)
			cmd.Env = append([]string{
				"PATH=" + os.Getenv("PATH"),
				"KMSPROXY_IMDS_ENDPOINT=" + srv.URL,
				"KMSPROXY_VSOCK_PROXY=" + fake,
				"KMSPROXY_VSOCK_PROXY_CONFIG=" + allowlist,
			}, tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if tt.wantCalls >= 0 && tt.imds.calls.Load() != tt.wantCalls {
				t.Errorf("IMDS got %d requests, want %d", tt.imds.calls.Load(), tt.wantCalls)
			}
			if tt.imds.withoutTTL.Load() != 0 {
				t.Error("the token request lacked X-aws-ec2-metadata-token-ttl-seconds")
			}
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("succeeded; stderr:\n%s", stderr.String())
				}
				if !strings.Contains(stderr.String(), tt.wantErr) || !strings.Contains(stderr.String(), "vsock-proxy-kms: error: ") {
					t.Errorf("stderr:\n%s\nwant it to contain %q", stderr.String(), tt.wantErr)
				}
				if _, err := os.Stat(argsFile); err == nil {
					t.Error("vsock-proxy was started anyway")
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; stderr:\n%s", err, stderr.String())
			}
			data, err := os.ReadFile(argsFile)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			want := make([]string, len(tt.wantArgs))
			for i, a := range tt.wantArgs {
				want[i] = strings.ReplaceAll(a, "ALLOWLIST", allowlist)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("vsock-proxy arguments (-want +got):\n%s", diff)
			}
		})
	}
}
