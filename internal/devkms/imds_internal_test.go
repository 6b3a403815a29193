package devkms

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTemporaryAccessKeyID(t *testing.T) {
	// The decoder reads the published example as its authors did.
	if got, ok := accountFromAccessKeyID("ASIAY34FZKBOKMUTVV7A"); !ok || got != 609629065308 {
		t.Fatalf("accountFromAccessKeyID(ASIAY34FZKBOKMUTVV7A) = %d, %v; want 609629065308", got, ok)
	}
	idRE := regexp.MustCompile(`^ASIA[A-Z2-7]{16}$`)
	for _, account := range []uint64{0, 111122223333, 609629065308, 999999999999} {
		seen := map[string]bool{}
		for range 20 {
			id := newTemporaryAccessKeyID(account)
			if !idRE.MatchString(id) || !accessKeyIDPattern.MatchString(id) {
				t.Fatalf("key ID %q is not ASIA and 16 base32 characters", id)
			}
			if got, ok := accountFromAccessKeyID(id); !ok || got != account {
				t.Fatalf("key ID %s carries account %d (%v), want %d", id, got, ok, account)
			}
			seen[id] = true
		}
		if len(seen) != 20 {
			t.Fatalf("account %d: %d distinct key IDs in 20, want 20", account, len(seen))
		}
	}
}

func TestIMDSConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"unix", func(c *Config) { c.IMDS = "unix:///tmp/devkms-imds.sock" }, ""},
		{"vsock", func(c *Config) { c.IMDS = "vsock://:8002" }, "--imds: devkms serves IMDS on tcp:// or unix:// addresses, not vsock"},
		{"no scheme", func(c *Config) { c.IMDS = "127.0.0.1:4598" }, "--imds: address"},
		{"the --listen address", func(c *Config) { c.IMDS = DefaultListen }, "is also the --listen address"},
		{"both on free ports", func(c *Config) { c.IMDS, c.Listen = "tcp://127.0.0.1:0", "tcp://127.0.0.1:0" }, ""},
		{"role of 64 characters", func(c *Config) { c.IMDSRole = strings.Repeat("r", 64) }, ""},
		{"role of 65 characters", func(c *Config) { c.IMDSRole = strings.Repeat("r", 65) }, "--imds-role"},
		{"empty role", func(c *Config) { c.IMDSRole = "" }, "--imds-role"},
		{"role with a path", func(c *Config) { c.IMDSRole = "team/enclave-parent" }, "is not an IAM role name"},
		{"role with IAM's punctuation", func(c *Config) { c.IMDSRole = "a+b=c,d.e@f_g-h" }, ""},
		{"short instance ID", func(c *Config) { c.IMDSInstanceID = "i-0123abcd" }, ""},
		{"instance ID in capitals", func(c *Config) { c.IMDSInstanceID = "i-0123456789ABCDEF0" }, "--imds-instance-id"},
		{"instance ID without i-", func(c *Config) { c.IMDSInstanceID = "0123456789abcdef0" }, "--imds-instance-id"},
		{"lifetime at the minimum", func(c *Config) { c.IMDSCredentialLifetime = MinIMDSCredentialLifetime }, ""},
		{"lifetime under the minimum", func(c *Config) { c.IMDSCredentialLifetime = MinIMDSCredentialLifetime - time.Second }, "--imds-credential-lifetime 1m59s is outside 2m0s to 12h0m0s"},
		{"lifetime at the maximum", func(c *Config) { c.IMDSCredentialLifetime = MaxIMDSCredentialLifetime }, ""},
		{"lifetime over the maximum", func(c *Config) { c.IMDSCredentialLifetime = MaxIMDSCredentialLifetime + time.Second }, "--imds-credential-lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.IMDS = "tcp://127.0.0.1:4598"
			tt.edit(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
	// With IMDS off the --imds-* settings are not looked at.
	c := DefaultConfig()
	c.IMDSRole = ""
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() with IMDS off = %v", err)
	}
}

// startIMDSServer serves a devkms's IMDS on loopback and returns its
// address.
func startIMDSServer(t *testing.T, edit func(*Config)) string {
	t.Helper()
	cfg := DefaultConfig()
	cfg.IMDS = "tcp://127.0.0.1:0"
	cfg.Listen = "tcp://127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeIMDS(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeIMDS: %v", err)
		}
	})
	return l.Addr().String()
}

// rawIMDS writes a raw HTTP/1.1 request and returns the status code.
func rawIMDS(t *testing.T, addr, request string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestIMDSRequestLimits: a body up to imdsMaxRequestBody is ignored, a
// bigger one is 400; a header block up to imdsMaxHeaderBytes is read, one
// past it (and net/http's 4096 bytes of slack) is 431.
func TestIMDSRequestLimits(t *testing.T) {
	addr := startIMDSServer(t, nil)
	put := func(body int) string {
		return fmt.Sprintf("PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			body, strings.Repeat("x", body))
	}
	// The header block counts from the request line to the blank line.
	get := func(total int) string {
		head := "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\nX-Pad: "
		pad := total - len(head) - len("\r\n\r\n")
		return head + strings.Repeat("p", pad) + "\r\n\r\n"
	}
	tests := []struct {
		name    string
		request string
		status  int
	}{
		{"body at the limit", put(imdsMaxRequestBody), 200},
		{"body past the limit", put(imdsMaxRequestBody + 1), 400},
		// No token: 401 shows the request was read and answered.
		{"headers at the limit", get(imdsMaxHeaderBytes), 401},
		{"headers past the limit", get(imdsMaxHeaderBytes + 4096 + 1), 431},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rawIMDS(t, addr, tt.request); got != tt.status {
				t.Fatalf("status %d, want %d", got, tt.status)
			}
		})
	}
}

// TestRoleCredentialsHistory: devkms remembers the last
// maxIMDSCredentialSets sets (so an expired one is answered
// ExpiredTokenException) and forgets older ones.
func TestRoleCredentialsHistory(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	r := newRoleCredentials("arn:aws:sts::111122223333:assumed-role/r/i-0123456789abcdef0", "111122223333",
		time.Hour, func() time.Time { return now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var ids []string
	for range maxIMDSCredentialSets + 1 {
		ids = append(ids, r.current().cred.AccessKeyID)
		now = now.Add(time.Hour)
	}
	if _, _, ok := r.lookup(ids[0]); ok {
		t.Errorf("the oldest of %d sets is still remembered", len(ids))
	}
	for i, id := range ids[1:] {
		if _, exp, ok := r.lookup(id); !ok || exp.IsZero() {
			t.Fatalf("set %d of %d forgotten", i+2, len(ids))
		}
	}
	if len(r.sets) != maxIMDSCredentialSets || len(r.byID) != maxIMDSCredentialSets {
		t.Fatalf("%d sets and %d IDs remembered, want %d", len(r.sets), len(r.byID), maxIMDSCredentialSets)
	}
}

// FuzzIMDSRequest: whatever the method, path, token and TTL, the IMDS
// answers one of its statuses without panicking, serves metadata only to a
// valid token and issues tokens only to a well-formed PUT.
func FuzzIMDSRequest(f *testing.F) {
	cfg := DefaultConfig()
	cfg.IMDS = "tcp://127.0.0.1:0"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := newIMDSService(cfg, func() time.Time { return now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	valid := m.newToken(now.Add(time.Minute))
	seeds := [][4]string{
		{"PUT", "/latest/api/token", "", "21600"},
		{"PUT", "/latest/api/token", "", "0"},
		{"PUT", "/2021-03-23/api/token", "", "60"},
		{"GET", "/latest/meta-data/iam/security-credentials/enclave-parent", valid, ""},
		{"GET", "/latest/meta-data/iam/security-credentials/", valid, ""},
		{"GET", "/latest/dynamic/instance-identity/document", valid, ""},
		{"HEAD", "/latest/meta-data/placement/region", valid, ""},
		{"GET", "/latest/meta-data/placement/region", "", ""},
		{"GET", "/latest/meta-data/placement/region", valid[:len(valid)-1] + "=", ""},
		{"GET", "/latest/../meta-data", valid, ""},
		{"DELETE", "/latest/meta-data/", valid, ""},
	}
	if len(seeds) == 0 {
		f.Fatal("no seeds")
	}
	for _, s := range seeds {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, method, path, token, ttl string) {
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Body: http.NoBody}
		if token != "" {
			r.Header.Set(imdsTokenHeader, token)
		}
		if ttl != "" {
			r.Header.Set(imdsTokenTTLHeader, ttl)
		}
		w := httptest.NewRecorder()
		m.ServeHTTP(w, r.WithContext(context.Background()))
		switch w.Code {
		case 200:
		case 400, 401, 403, 404, 405:
			return
		default:
			t.Fatalf("%s %q: status %d", method, path, w.Code)
		}
		if method == http.MethodPut {
			n, err := strconv.Atoi(strings.TrimSpace(ttl))
			if path != imdsTokenPath || err != nil || n < imdsMinTokenTTL || n > imdsMaxTokenTTL {
				t.Fatalf("a token for PUT %q with TTL %q", path, ttl)
			}
			return
		}
		if m.checkToken(token, now) != "" {
			t.Fatalf("%s %q served with an invalid token %q", method, path, token)
		}
	})
}
