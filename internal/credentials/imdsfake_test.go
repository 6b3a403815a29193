package credentials

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/internal/transport"
)

// fakeIMDS is a small IMDSv2 server for the cases AWS's mock cannot play:
// credentials that expire soon and rotate, failures, oversized answers. It
// checks what real IMDSv2 checks: a token from PUT /latest/api/token on
// every GET, and it records the Host header so tests can prove the URL kept
// naming 169.254.169.254 while the bytes went elsewhere.
type fakeIMDS struct {
	t    testing.TB
	addr transport.Addr

	mu        sync.Mutex
	docs      int         // credential documents served
	docTimes  []time.Time // when each was served
	failures  int         // credential requests answered with 500
	fail      bool        // answer credential requests with 500
	expiresIn time.Duration
	region    string
	pad       int  // extra bytes of whitespace in each credential document
	v1Only    bool // behave like IMDSv1: no token endpoint, no token checks
	hosts     map[string]bool
}

const fakeToken = "fake-imds-token"

// fakeAccessKeyID returns the access key ID of the n-th document (from 1).
func fakeAccessKeyID(n int) string { return fmt.Sprintf("ASIAFAKEIMDS%08d", n) }

// fakeSecret returns the secret access key of the n-th document.
func fakeSecret(n int) string { return fmt.Sprintf("fakeImdsSecret/%08d/SECRETVALUE", n) }

func fakeSessionToken(n int) string { return fmt.Sprintf("fakeImdsSessionToken%08dTOKENVALUE", n) }

// newFakeIMDS starts the fake on loopback TCP, or on a unix socket when
// unix is true.
func newFakeIMDS(t testing.TB, unix bool) *fakeIMDS {
	t.Helper()
	f := &fakeIMDS{t: t, expiresIn: 6 * time.Hour, region: "eu-central-1", hosts: map[string]bool{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	if unix {
		path := filepath.Join(t.TempDir(), "imds.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatalf("failed to listen on %s: %v", path, err)
		}
		srv.Listener.Close()
		srv.Listener = ln
		f.addr = transport.Addr{Network: transport.Unix, Path: path}
	} else {
		f.addr = transport.Addr{Network: transport.TCP, HostPort: srv.Listener.Addr().String()}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeIMDS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.hosts[r.Host] = true
	f.mu.Unlock()
	f.mu.Lock()
	v1Only := f.v1Only
	f.mu.Unlock()
	if r.URL.Path == "/latest/api/token" {
		if v1Only {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-aws-ec2-metadata-token-ttl-seconds", r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds"))
		fmt.Fprint(w, fakeToken)
		return
	}
	if !v1Only && r.Header.Get("X-aws-ec2-metadata-token") != fakeToken {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/latest/meta-data/iam/security-credentials/":
		fmt.Fprint(w, "enclave-role")
	case "/latest/meta-data/iam/security-credentials/enclave-role":
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.fail {
			f.failures++
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		f.docs++
		f.docTimes = append(f.docTimes, time.Now())
		n := f.docs
		doc, _ := json.MarshalIndent(map[string]string{
			"Code":            "Success",
			"LastUpdated":     time.Now().UTC().Format(time.RFC3339),
			"Type":            "AWS-HMAC",
			"AccessKeyId":     fakeAccessKeyID(n),
			"SecretAccessKey": fakeSecret(n),
			"Token":           fakeSessionToken(n),
			"Expiration":      time.Now().Add(f.expiresIn).UTC().Format(time.RFC3339),
		}, "", "  ")
		w.Write(doc)
		w.Write([]byte(strings.Repeat(" ", f.pad)))
	case "/latest/meta-data/placement/region":
		f.mu.Lock()
		defer f.mu.Unlock()
		fmt.Fprint(w, f.region)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeIMDS) set(fn func(f *fakeIMDS)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeIMDS) snapshot() (docs, failures int, times []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.docs, f.failures, append([]time.Time(nil), f.docTimes...)
}

// waitFor polls cond every 10ms until it holds or limit passes.
func waitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
