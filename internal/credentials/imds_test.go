package credentials

import (
	"context"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/transport"
)

func newTestIMDS(t testing.TB, dial transport.Addr, timing RefreshTiming) *IMDS {
	t.Helper()
	p, err := NewIMDS(dial, WithRefreshTiming(timing))
	if err != nil {
		t.Fatalf("NewIMDS: %v", err)
	}
	return p
}

// startIMDS runs p's refresh loop until the test ends, and waits for the
// loop to return.
func startIMDS(t testing.TB, p *IMDS) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p.Start(ctx)
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Error("IMDS refresh loop did not stop within 10s of its context ending")
		}
	})
}

// aemmConfig overrides the mock's role credentials (whose default
// Expiration, 2020-04-02, is long past) and region.
const aemmConfig = `{
  "metadata": {
    "values": {
      "placement-region": "eu-west-3",
      "iam-security-credentials": {
        "Code": "Success",
        "LastUpdated": "2026-01-01T00:00:00Z",
        "Type": "AWS-HMAC",
        "AccessKeyId": "ASIAAEMMEXAMPLE12345",
        "SecretAccessKey": "aemmSecretAccessKeyEXAMPLEEXAMPLEEXAMPLE",
        "Token": "aemmSessionTokenEXAMPLE",
        "Expiration": "2099-01-01T00:00:00Z"
      }
    }
  }
}`

func TestIMDSAgainstAWSMock(t *testing.T) {
	ctx := context.Background()
	t.Run("defaults", func(t *testing.T) {
		addr := startAEMM(t, "")
		p := newTestIMDS(t, addr, RefreshTiming{})

		region, err := p.Region(ctx)
		if err != nil {
			t.Fatalf("Region: %v", err)
		}
		if region != "us-east-1" {
			t.Errorf("Region = %q, want the mock's default us-east-1", region)
		}

		got, err := p.Retrieve(ctx)
		if err != nil {
			t.Fatalf("Retrieve: %v", err)
		}
		// The mock's default document (pkg/config/defaults/aemm-metadata-default-values.json).
		want := aws.Credentials{
			AccessKeyID:     "12345678901",
			SecretAccessKey: "v/12345678901",
			SessionToken:    "TEST92test48TEST+y6RpoTEST92test48TEST/8oWVAiBqTEsT5Ky7ty2tEStxC1T==",
			Source:          "EC2RoleProvider",
			CanExpire:       true,
			Expires:         time.Date(2020, 4, 2, 0, 49, 51, 0, time.UTC),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Retrieve mismatch (-want +got):\n%s", diff)
		}
		// Its Expiration is in 2020: the credentials are handed out (KMS,
		// not this clock, decides) but the provider is not ready.
		st := p.Status()
		if st.Ready || !strings.Contains(st.LastError, "2020-04-02T00:49:51Z") || !strings.Contains(st.LastError, "clock") {
			t.Errorf("Status = %+v, want not ready with a LastError about the 2020 expiry and the clock", st)
		}
	})
	t.Run("configured", func(t *testing.T) {
		addr := startAEMM(t, aemmConfig)
		p := newTestIMDS(t, addr, RefreshTiming{})
		startIMDS(t, p)
		waitFor(t, 10*time.Second, "credentials from the mock", func() bool { return p.Status().Ready })

		got, err := p.Retrieve(ctx)
		if err != nil {
			t.Fatalf("Retrieve: %v", err)
		}
		if got.AccessKeyID != "ASIAAEMMEXAMPLE12345" || got.SecretAccessKey != "aemmSecretAccessKeyEXAMPLEEXAMPLEEXAMPLE" || got.SessionToken != "aemmSessionTokenEXAMPLE" {
			t.Errorf("Retrieve returned key %q, not the configured credentials", got.AccessKeyID)
		}
		st := p.Status()
		if want := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC); !st.Expires.Equal(want) || st.Mode != ModeIMDS || st.LastError != "" {
			t.Errorf("Status = %+v, want ready, expiring %s (the document's Expiration, not the SDK's one-hour cap)", st, want)
		}
		region, err := p.Region(ctx)
		if err != nil || region != "eu-west-3" {
			t.Errorf("Region = %q, %v; want eu-west-3", region, err)
		}
	})
}

func TestIMDSKeepsURLAndDialsAddress(t *testing.T) {
	for _, unix := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "unix"}[unix]
		t.Run(name, func(t *testing.T) {
			f := newFakeIMDS(t, unix)
			p := newTestIMDS(t, f.addr, RefreshTiming{})
			got, err := p.Retrieve(context.Background())
			if err != nil {
				t.Fatalf("Retrieve: %v", err)
			}
			if got.AccessKeyID != fakeAccessKeyID(1) || got.SecretAccessKey != fakeSecret(1) || got.SessionToken != fakeSessionToken(1) {
				t.Errorf("Retrieve returned key %q, want the first fake document", got.AccessKeyID)
			}
			f.mu.Lock()
			hosts := f.hosts
			f.mu.Unlock()
			if diff := cmp.Diff(map[string]bool{"169.254.169.254": true}, hosts); diff != "" {
				t.Errorf("Host headers seen by IMDS (-want +got):\n%s", diff)
			}
		})
	}
}

func TestIMDSRefreshesBeforeExpiry(t *testing.T) {
	f := newFakeIMDS(t, false)
	// Credentials live 40s (past the 30s ExpiryMargin); a 38s window
	// refreshes them about 2s after each fetch.
	f.set(func(f *fakeIMDS) { f.expiresIn = 40 * time.Second })
	p := newTestIMDS(t, f.addr, RefreshTiming{ExpiryWindow: 38 * time.Second, MinInterval: 100 * time.Millisecond})
	startIMDS(t, p)

	waitFor(t, 20*time.Second, "a second credential document", func() bool {
		docs, _, _ := f.snapshot()
		return docs >= 2
	})
	_, _, times := f.snapshot()
	firstExpiry := times[0].Add(40 * time.Second)
	if !times[1].Before(firstExpiry.Add(-ExpiryMargin)) {
		t.Errorf("second fetch at %s, not before the first credentials' expiry %s minus the margin", times[1], firstExpiry)
	}
	waitFor(t, 5*time.Second, "the refreshed credentials in use", func() bool {
		c, err := p.Retrieve(context.Background())
		return err == nil && c.AccessKeyID != fakeAccessKeyID(1)
	})

	// With fresh credentials in hand the request path does not touch
	// IMDS: a canceled context still gets credentials.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Retrieve(ctx); err != nil {
		t.Errorf("Retrieve with a canceled context after Start: %v (want credentials from memory)", err)
	}
	if st := p.Status(); !st.Ready || st.LastError != "" || st.Updated.IsZero() {
		t.Errorf("Status = %+v, want ready", st)
	}
}

func TestIMDSRefreshFailureKeepsValidCredentials(t *testing.T) {
	f := newFakeIMDS(t, false)
	f.set(func(f *fakeIMDS) { f.expiresIn = 40 * time.Second })
	p := newTestIMDS(t, f.addr, RefreshTiming{
		ExpiryWindow: 38 * time.Second, MinInterval: 100 * time.Millisecond,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	})
	startIMDS(t, p)
	waitFor(t, 10*time.Second, "first credentials", func() bool { return p.Status().Ready })
	f.set(func(f *fakeIMDS) { f.fail = true })

	waitFor(t, 20*time.Second, "a failed refresh to be reported", func() bool { return p.Status().LastError != "" })
	st := p.Status()
	if !st.Ready || !strings.Contains(st.LastError, "failed to get instance role credentials from IMDS through "+f.addr.String()) {
		t.Errorf("Status = %+v, want still ready (the first credentials are valid) with the refresh failure in LastError", st)
	}
	if _, failures, _ := f.snapshot(); failures == 0 {
		t.Error("IMDS saw no failing request")
	}
	c, err := p.Retrieve(context.Background())
	if err != nil || c.AccessKeyID != fakeAccessKeyID(1) {
		t.Errorf("Retrieve = %q, %v; want the first credentials while IMDS fails", c.AccessKeyID, err)
	}

	f.set(func(f *fakeIMDS) { f.fail = false })
	waitFor(t, 10*time.Second, "recovery with fresh credentials", func() bool {
		st := p.Status()
		c, err := p.Retrieve(context.Background())
		return st.Ready && st.LastError == "" && err == nil && c.AccessKeyID == fakeAccessKeyID(2)
	})
}

func TestIMDSUnreachable(t *testing.T) {
	addr := transport.Addr{Network: transport.TCP, HostPort: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	p := newTestIMDS(t, addr, RefreshTiming{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := p.Retrieve(ctx)
	if err == nil {
		t.Fatal("Retrieve succeeded with nothing listening")
	}
	if want := "credentials: failed to get instance role credentials from IMDS through " + addr.String(); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if st := p.Status(); st.Ready || st.LastError == "" {
		t.Errorf("Status = %+v, want not ready with the failure", st)
	}
	if _, err := p.Region(ctx); err == nil || !strings.Contains(err.Error(), "failed to get the region from IMDS through "+addr.String()) {
		t.Errorf("Region error = %v", err)
	}
}

func TestIMDSRequiresV2(t *testing.T) {
	// An IMDSv1-only server: it has no token endpoint and answers anyone.
	// The SDK would fall back to IMDSv1 by default; kmsproxyd must not.
	f := newFakeIMDS(t, false)
	f.set(func(f *fakeIMDS) { f.v1Only = true })
	p := newTestIMDS(t, f.addr, RefreshTiming{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := p.Retrieve(ctx)
	if err == nil {
		t.Fatal("Retrieve succeeded without an IMDSv2 token")
	}
	t.Logf("Retrieve from an IMDSv1-only server: %v", err)
	if !strings.Contains(err.Error(), "failed to get API token") {
		t.Errorf("error %q does not mention the failed token request", err)
	}
	if docs, _, _ := f.snapshot(); docs != 0 {
		t.Errorf("served %d credential documents without a token", docs)
	}
}

func TestIMDSAnswerLimit(t *testing.T) {
	tests := []struct {
		name    string
		atLimit bool
	}{
		{"at limit", true},
		{"past limit", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIMDS(t, false)
			// Measure the document, then pad it to the limit (or one past).
			f.set(func(f *fakeIMDS) { f.pad = 0 })
			probe := newTestIMDS(t, f.addr, RefreshTiming{})
			if _, err := probe.Retrieve(context.Background()); err != nil {
				t.Fatal(err)
			}
			size := fakeDocSize(t, f)
			pad := maxIMDSAnswer - size
			if !tt.atLimit {
				pad++
			}
			f.set(func(f *fakeIMDS) { f.pad = pad })
			p := newTestIMDS(t, f.addr, RefreshTiming{})
			_, err := p.Retrieve(context.Background())
			if tt.atLimit && err != nil {
				t.Errorf("Retrieve of a %d-byte document: %v", maxIMDSAnswer, err)
			}
			if !tt.atLimit && (err == nil || !strings.Contains(err.Error(), "exceeds the")) {
				t.Errorf("Retrieve of a %d-byte document: err = %v, want the size limit", maxIMDSAnswer+1, err)
			}
		})
	}
}

// fakeDocSize returns the size of the next credential document f will
// serve with no padding (all documents have the same size: the counters are
// zero-padded and the timestamps fixed-width).
func fakeDocSize(t testing.TB, f *fakeIMDS) int {
	t.Helper()
	out, err := boundedMetadata{newTestIMDS(t, f.addr, RefreshTiming{}).client}.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: "/iam/security-credentials/enclave-role"})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func TestIMDSRegionValidation(t *testing.T) {
	tests := []struct {
		name, region string
		wantErr      bool
	}{
		{"commercial", "us-east-1", false},
		{"gov", "us-gov-west-1", false},
		{"china", "cn-north-1", false},
		{"trailing newline", "ap-southeast-2\n", false},
		{"empty", "", true},
		{"html", "<html>", true},
		{"uppercase", "US-EAST-1", true},
		{"no hyphen", "useast1", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIMDS(t, false)
			f.set(func(f *fakeIMDS) { f.region = tt.region })
			p := newTestIMDS(t, f.addr, RefreshTiming{})
			got, err := p.Region(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Region = %q, %v; want error %v", got, err, tt.wantErr)
			}
			if !tt.wantErr && got != strings.TrimSpace(tt.region) {
				t.Errorf("Region = %q, want %q", got, strings.TrimSpace(tt.region))
			}
		})
	}
}

func TestIMDSStartTwiceAndStop(t *testing.T) {
	f := newFakeIMDS(t, false)
	p := newTestIMDS(t, f.addr, RefreshTiming{})
	ctx, cancel := context.WithCancel(context.Background())
	p.Start(ctx)
	p.Start(ctx) // no second loop
	waitFor(t, 10*time.Second, "credentials", func() bool { return p.Status().Ready })
	cancel()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("refresh loop still running 10s after its context ended")
	}
	if docs, _, _ := f.snapshot(); docs != 1 {
		t.Errorf("IMDS served %d documents, want 1 (one loop, one fetch)", docs)
	}
}

func TestNewIMDSNeedsAddress(t *testing.T) {
	if _, err := NewIMDS(transport.Addr{}); err == nil || !strings.Contains(err.Error(), "--imds-dial") {
		t.Errorf("NewIMDS(zero address) error = %v, want one naming --imds-dial", err)
	}
}
