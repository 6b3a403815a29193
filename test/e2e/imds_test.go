package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// aemmConfig overrides the mock's role credentials (the default document's
// Expiration, 2020-04-02, is long past; see internal/credentials) and the
// region.
const aemmConfig = `{
  "metadata": {
    "values": {
      "placement-region": %q,
      "iam-security-credentials": {
        "Code": "Success",
        "LastUpdated": "2026-01-01T00:00:00Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIAE2EIMDSROLE00001",
        "SecretAccessKey": "e2e-imds-role-secret-access-key-00000000",
        "Token": "e2e-imds-role-session-token-for-tests-only",
        "Expiration": "2099-01-01T00:00:00Z"
      }
    }
  }
}`

// startIMDS runs ec2-metadata-mock (IMDSv2 required) behind a second socat,
// the stand-in for the vsock-proxy to 169.254.169.254:80, and takes the
// role credentials from what the mock serves.
func (s *stack) startIMDS(t testing.TB, socat string) {
	t.Helper()
	home := s.path("aemm-home") // no stray ~/aemm-config.json
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := s.path("aemm-config.json")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, aemmConfig, region), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	s.mock = start(t, s.scan, "ec2-metadata-mock", harness.CleanEnv("HOME="+home),
		s.bin.aemm, "--imdsv2", "-n", "127.0.0.1", "-p", strconv.Itoa(port), "-c", cfg)
	var served awsCreds
	if err := poll(readyTimeout, func() error {
		if s.mock.exited() {
			return errors.New("ec2-metadata-mock exited")
		}
		var err error
		served, err = imdsCredentials("http://" + addr)
		return err
	}); err != nil {
		t.Fatalf("ec2-metadata-mock did not serve credentials: %v\n%s", err, s.mock.log)
	}
	s.role = served
	s.imdsSock = s.path("imds.sock")
	s.imdsSocat = start(t, s.scan, "socat (imds)", harness.CleanEnv(),
		socat, socatLinger, "UNIX-LISTEN:"+s.imdsSock+",unlink-early,fork,max-children="+strconv.Itoa(defaultUpstreamConns), "TCP:"+addr)
	waitSocket(t, s.imdsSocat, s.imdsSock)
}

// imdsCredentials reads the role credentials an IMDSv2 endpoint serves,
// the way the SDK's ec2rolecreds does: token, role name, document.
func imdsCredentials(base string) (awsCreds, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodPut, base+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := hc.Do(req)
	if err != nil {
		return awsCreds{}, err
	}
	token, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return awsCreds{}, fmt.Errorf("IMDS token: %s", resp.Status)
	}
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set("X-aws-ec2-metadata-token", string(token))
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("IMDS %s: %s", path, resp.Status)
		}
		return b, nil
	}
	roles, err := get("/latest/meta-data/iam/security-credentials/")
	if err != nil {
		return awsCreds{}, err
	}
	roleName, _, _ := strings.Cut(strings.TrimSpace(string(roles)), "\n")
	doc, err := get("/latest/meta-data/iam/security-credentials/" + roleName)
	if err != nil {
		return awsCreds{}, err
	}
	var d struct{ AccessKeyId, SecretAccessKey, Token string }
	if err := json.Unmarshal(doc, &d); err != nil {
		return awsCreds{}, fmt.Errorf("IMDS credentials document: %w", err)
	}
	if d.AccessKeyId == "" || d.SecretAccessKey == "" {
		return awsCreds{}, errors.New("IMDS credentials document without keys")
	}
	return awsCreds{d.AccessKeyId, d.SecretAccessKey, d.Token}, nil
}
