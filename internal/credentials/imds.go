package credentials

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/kmsproxy/internal/transport"
)

// IMDSEndpoint is the URL the IMDS client uses. The bytes go to the
// --imds-dial address (a vsock-proxy to 169.254.169.254:80 on the parent);
// the URL keeps naming the real service, as the SDK expects.
const IMDSEndpoint = "http://169.254.169.254"

// DefaultIMDSDial is kmsproxyd's default --imds-dial: the parent's
// vsock-proxy for IMDS.
const DefaultIMDSDial = "vsock://3:8002"

// DefaultExpiryWindow is how long before expiry role credentials are
// refreshed. The EC2 user guide ("Retrieve security credentials from instance
// metadata"): "We make new credentials available at least five minutes before
// the expiration of the old credentials." Refreshing five minutes ahead is
// therefore the latest moment that still guarantees new credentials.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-metadata-security-credentials.html
const DefaultExpiryWindow = 5 * time.Minute

// RefreshTiming tunes the background refresh. Zero fields take the defaults.
type RefreshTiming struct {
	// ExpiryWindow: refresh this long before the credentials expire
	// (DefaultExpiryWindow).
	ExpiryWindow time.Duration
	// MinInterval: never schedule the next successful refresh sooner than
	// this, so credentials that IMDS has not rotated yet are polled, not
	// hammered (30s).
	MinInterval time.Duration
	// RetryMin and RetryMax bound the exponential back-off after a failed
	// refresh (1s and 1m).
	RetryMin, RetryMax time.Duration
}

func (t RefreshTiming) withDefaults() RefreshTiming {
	if t.ExpiryWindow <= 0 {
		t.ExpiryWindow = DefaultExpiryWindow
	}
	if t.MinInterval <= 0 {
		t.MinInterval = 30 * time.Second
	}
	if t.RetryMin <= 0 {
		t.RetryMin = time.Second
	}
	if t.RetryMax <= 0 {
		t.RetryMax = time.Minute
	}
	if t.RetryMax < t.RetryMin {
		t.RetryMax = t.RetryMin
	}
	return t
}

// IMDSOption configures NewIMDS.
type IMDSOption func(*imdsOptions)

type imdsOptions struct {
	endpoint string
	timing   RefreshTiming
}

// WithIMDSEndpoint replaces the URL the IMDS client uses (IMDSEndpoint).
// Only tests need it: the dial address already decides where bytes go.
func WithIMDSEndpoint(url string) IMDSOption {
	return func(o *imdsOptions) { o.endpoint = url }
}

// WithRefreshTiming tunes the background refresh.
func WithRefreshTiming(t RefreshTiming) IMDSOption {
	return func(o *imdsOptions) { o.timing = t }
}

// Timeouts of the HTTP client that reaches IMDS. The SDK's own IMDS client
// uses 250ms to connect and 500ms for response headers
// (feature/ec2/imds/api_client.go) so that it fails fast off EC2; the
// vsock-proxy hop adds a second connection on the parent, so both are
// doubled and rounded up.
const (
	imdsDialTimeout           = time.Second
	imdsResponseHeaderTimeout = time.Second
)

// maxIMDSAnswer bounds one IMDS answer (the role list, a role's credential
// document, the region). A credential document is a session token (typically
// under 4096 bytes, see MaxSessionToken) plus about 300 bytes of other
// members; MaxPushBody is the same bound for the same content.
const maxIMDSAnswer = MaxPushBody

// IMDS provides the parent instance's role credentials through IMDSv2
// (kmsproxyd --credentials imds). It uses the SDK's IMDS client and
// ec2rolecreds, wrapped in aws.CredentialsCache, over an HTTP client whose
// every connection goes to the dial address.
//
// After Start, a background loop fetches credentials at once and then
// refreshes them ExpiryWindow before they expire, so Retrieve answers from
// memory and a request never waits on IMDS while the credentials in hand are
// valid. Before Start, or when they have expired, Retrieve fetches through
// the cache (one fetch at a time, whoever asks). Safe for concurrent use.
type IMDS struct {
	dial      transport.Addr
	timing    RefreshTiming
	client    *imds.Client
	transport *http.Transport
	cache     *aws.CredentialsCache

	mu      sync.Mutex
	cur     *secret // the last credentials IMDS gave, with their real expiry
	updated time.Time
	lastErr string
	started bool
	done    chan struct{}
}

// NewIMDS returns an IMDS provider whose connections all go to dial. It does
// not contact IMDS: Start or the first Retrieve does.
func NewIMDS(dial transport.Addr, opts ...IMDSOption) (*IMDS, error) {
	if dial.Network == "" {
		return nil, fmt.Errorf("credentials: no IMDS dial address (want --imds-dial, default %s)", DefaultIMDSDial)
	}
	o := imdsOptions{endpoint: IMDSEndpoint}
	for _, fn := range opts {
		fn(&o)
	}
	o.timing = o.timing.withDefaults()

	dialFn := transport.DialFunc(dial)
	tr := &http.Transport{
		Proxy: nil, // never an environment proxy: the dial address is the only route
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, imdsDialTimeout)
			defer cancel()
			return dialFn(ctx, network, addr)
		},
		ResponseHeaderTimeout: imdsResponseHeaderTimeout,
		// IMDS is asked a few times an hour; an idle connection would only
		// hold one of the vsock-proxy's few workers.
		DisableKeepAlives: true,
	}
	p := &IMDS{
		dial:      dial,
		timing:    o.timing,
		transport: tr,
		done:      make(chan struct{}),
	}
	p.client = imds.New(imds.Options{
		Endpoint:   o.endpoint,
		HTTPClient: &http.Client{Transport: tr},
		// Set explicitly so that AWS_EC2_METADATA_DISABLED and
		// AWS_EC2_METADATA_SERVICE_ENDPOINT in the environment cannot
		// change where credentials come from.
		ClientEnableState: imds.ClientEnabled,
		// IMDSv2 only: never fall back to unauthenticated IMDSv1.
		EnableFallback: aws.FalseTernary,
	})
	role := ec2rolecreds.New(func(eo *ec2rolecreds.Options) {
		eo.Client = boundedMetadata{p.client}
	})
	p.cache = aws.NewCredentialsCache(&fetcher{p: p, role: role}, func(co *aws.CredentialsCacheOptions) {
		co.ExpiryWindow = o.timing.ExpiryWindow
	})
	return p, nil
}

// Retrieve returns the role credentials: from memory while they are valid,
// otherwise fetched from IMDS now.
func (p *IMDS) Retrieve(ctx context.Context) (aws.Credentials, error) {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	if cur != nil && !expired(cur.expires, time.Now()) {
		return cur.credentials(ec2rolecreds.ProviderName), nil
	}
	c, err := p.cache.Retrieve(ctx)
	if err != nil {
		return aws.Credentials{Source: ec2rolecreds.ProviderName}, p.fetchError(err)
	}
	// Credentials that look expired are still returned, as the SDK does:
	// an enclave clock running ahead makes valid credentials look expired,
	// and KMS, not this clock, decides. Status reports the problem.
	return c, nil
}

func (p *IMDS) fetchError(err error) error {
	return fmt.Errorf("credentials: failed to get instance role credentials from IMDS through %s: %w", p.dial, err)
}

// Start fetches credentials now and keeps them fresh in a goroutine until
// ctx ends; Done is closed when that goroutine has returned. Calls after the
// first do nothing.
func (p *IMDS) Start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		return
	}
	p.started = true
	go p.refreshLoop(ctx)
}

// Done is closed when the loop started by Start has ended.
func (p *IMDS) Done() <-chan struct{} { return p.done }

func (p *IMDS) refreshLoop(ctx context.Context) {
	defer close(p.done)
	defer p.transport.CloseIdleConnections()
	failures := 0
	for {
		c, err := p.cache.Retrieve(ctx)
		var wait time.Duration
		if err == nil && p.Status().Ready {
			failures = 0
			// c.Expires is the cache's refresh time: the expiry minus
			// the window, never sooner than MinInterval (fetcher.AdjustExpiresBy).
			wait = max(time.Until(c.Expires), p.timing.MinInterval)
			if !c.CanExpire {
				wait = time.Hour
			}
		} else {
			failures++
			wait = p.timing.RetryMin << min(failures-1, 16)
			wait = min(wait, p.timing.RetryMax)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Region returns the instance's region from IMDS (placement/region), for
// kmsproxyd when --region is absent.
func (p *IMDS) Region(ctx context.Context) (string, error) {
	out, err := boundedMetadata{p.client}.GetMetadata(ctx, &imds.GetMetadataInput{Path: "placement/region"})
	if err != nil {
		return "", fmt.Errorf("credentials: failed to get the region from IMDS through %s: %w", p.dial, err)
	}
	defer out.Content.Close()
	b, _ := io.ReadAll(out.Content) // boundedMetadata already read it into memory
	region := strings.TrimSpace(string(b))
	if !plausibleRegion(region) {
		return "", fmt.Errorf("credentials: IMDS answered %q for placement/region, which is not a region name", truncate(region, 64))
	}
	return region, nil
}

// plausibleRegion accepts names like us-east-1, eu-central-2, us-gov-west-1,
// cn-north-1: lowercase letters, digits and hyphens, starting with a letter.
func plausibleRegion(s string) bool {
	if len(s) < 3 || len(s) > 32 || s[0] < 'a' || s[0] > 'z' || !strings.Contains(s, "-") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Status reports whether valid role credentials are in hand.
func (p *IMDS) Status() Status {
	p.mu.Lock()
	cur, updated, lastErr := p.cur, p.updated, p.lastErr
	p.mu.Unlock()
	st := Status{Mode: ModeIMDS, Updated: updated, LastError: lastErr}
	switch {
	case cur == nil:
		if st.LastError == "" {
			st.LastError = "credentials: no credentials fetched from IMDS yet"
		}
	case expired(cur.expires, time.Now()):
		st.Expires = cur.expires
		msg := fmt.Sprintf("credentials: IMDS gave credentials that expire at %s, within %s of this enclave's clock (%s): is the clock right?", stamp(cur.expires), ExpiryMargin, stamp(time.Now()))
		if st.LastError == "" {
			st.LastError = msg
		} else {
			st.LastError = msg + "; " + st.LastError
		}
	default:
		st.Expires = cur.expires
		st.Ready = true
	}
	return st
}

// Format prints the provider without its secrets.
func (p *IMDS) Format(f fmt.State, _ rune) { io.WriteString(f, p.String()) }

// String describes the provider without its secrets.
func (p *IMDS) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return "credentials.IMDS{dial:" + p.dial.String() + " none}"
	}
	return "credentials.IMDS{dial:" + p.dial.String() + " " + p.cur.redacted() + "}"
}

// GoString describes the provider without its secrets.
func (p *IMDS) GoString() string { return p.String() }

// LogValue makes slog print the provider without its secrets.
func (p *IMDS) LogValue() slog.Value { return slog.StringValue(p.String()) }

// fetcher is the provider inside the cache: ec2rolecreds, plus bookkeeping
// of what IMDS answered, plus the cache strategies below.
type fetcher struct {
	p    *IMDS
	role *ec2rolecreds.Provider
}

var (
	_ aws.HandleFailRefreshCredentialsCacheStrategy = (*fetcher)(nil)
	_ aws.AdjustExpiresByCredentialsCacheStrategy   = (*fetcher)(nil)
)

func (f *fetcher) Retrieve(ctx context.Context) (aws.Credentials, error) {
	doc := &docExpiry{}
	c, err := f.role.Retrieve(context.WithValue(ctx, docExpiryKey{}, doc))
	now := time.Now()
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if err != nil {
		f.p.lastErr = f.p.fetchError(err).Error()
		return c, err
	}
	s := secret{accessKeyID: c.AccessKeyID, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken, expires: c.Expires}
	if !doc.at.IsZero() {
		// ec2rolecreds caps Expires at one hour from now so that the
		// SDK re-reads IMDS at least hourly; the document's own
		// Expiration is what KMS enforces.
		s.expires = doc.at
	}
	f.p.cur, f.p.updated, f.p.lastErr = &s, now, ""
	return c, nil
}

// HandleFailToRefresh keeps the cache from extending expired credentials, as
// ec2rolecreds would ("static stability"): IMDS.Retrieve already serves the
// previous credentials from memory while they are valid, and reports the
// failure once they are not.
func (f *fetcher) HandleFailToRefresh(_ context.Context, _ aws.Credentials, err error) (aws.Credentials, error) {
	return aws.Credentials{}, err
}

// AdjustExpiresBy moves the cache's refresh time ExpiryWindow before the
// expiry (dur is minus the window), but never sooner than MinInterval from
// now, and never past the expiry itself. Unlike ec2rolecreds' version it
// applies the window to short-lived credentials too.
func (f *fetcher) AdjustExpiresBy(c aws.Credentials, dur time.Duration) (aws.Credentials, error) {
	if !c.CanExpire {
		return c, nil
	}
	at := c.Expires.Add(dur)
	if soonest := time.Now().Add(f.p.timing.MinInterval); at.Before(soonest) {
		at = soonest
	}
	if at.After(c.Expires) {
		at = c.Expires
	}
	c.Expires = at
	return c, nil
}

// docExpiry carries a credential document's Expiration out of
// boundedMetadata.
type docExpiry struct{ at time.Time }

type docExpiryKey struct{}

// iamCredentialsPath is where ec2rolecreds reads the role list and, under
// it, each role's credential document.
const iamCredentialsPath = "/iam/security-credentials/"

// boundedMetadata reads every IMDS answer into memory with a size limit
// (ec2rolecreds decodes without one) and notes a credential document's
// Expiration for fetcher.
type boundedMetadata struct{ c *imds.Client }

func (b boundedMetadata) GetMetadata(ctx context.Context, in *imds.GetMetadataInput, opts ...func(*imds.Options)) (*imds.GetMetadataOutput, error) {
	out, err := b.c.GetMetadata(ctx, in, opts...)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(out.Content, maxIMDSAnswer+1))
	out.Content.Close()
	if err != nil {
		return nil, fmt.Errorf("failed to read IMDS answer for %s: %w", in.Path, err)
	}
	if len(body) > maxIMDSAnswer {
		return nil, fmt.Errorf("IMDS answer for %s exceeds the %d-byte limit", in.Path, maxIMDSAnswer)
	}
	if role, ok := strings.CutPrefix(in.Path, iamCredentialsPath); ok && role != "" {
		if d, ok := ctx.Value(docExpiryKey{}).(*docExpiry); ok {
			var doc struct{ Expiration time.Time }
			if json.Unmarshal(body, &doc) == nil {
				d.at = doc.Expiration
			}
		}
	}
	out.Content = io.NopCloser(bytes.NewReader(body))
	return out, nil
}
