// Package upstream is the AWS KMS client kmsproxyd uses: aws-sdk-go-v2's
// KMS client over an HTTP transport built for an enclave.
//
// An enclave has no network and no CA files. Every upstream connection goes
// to one dial address (the parent's vsock-proxy, --kms-dial) while the URL
// keeps naming the real endpoint, so TLS is verified against the endpoint's
// name and SigV4 signs its host; TLS starts and ends inside the enclave and
// the parent relays bytes it cannot read. Roots are embedded (Mozilla's, via
// golang.org/x/crypto/x509roots/fallback) plus any --kms-ca. Connections are
// few (--upstream-conns, matching the vsock-proxy's workers) and kept alive;
// the SDK's standard retryer retries throttling and 5xx with back-off, all
// within --request-timeout. ToKMSError turns whatever went wrong into the
// KMS-shaped error the caller should see.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go/middleware"

	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// Defaults for the zero values of Config.
const (
	// DefaultMaxConns is --upstream-conns' default: the vsock-proxy on the
	// parent runs 4 workers by default, one per connection.
	DefaultMaxConns = 4
	// DefaultRequestTimeout is --request-timeout's default.
	DefaultRequestTimeout = 10 * time.Second
)

// writeBufferSize is the upstream connections' write buffer (see New).
const writeBufferSize = 16 << 10

// Timeouts of one upstream connection. The request's context bounds every
// request as a whole; these bound the parts of a connection's life that run
// detached from any one request (net/http keeps dialing for the next request
// when the one that asked gives up).
const (
	// connectTimeout bounds reaching the dial address. Through the
	// vsock-proxy this is a local connection; direct, it is a TCP connect
	// to KMS. (The SDK's default, awshttp.DefaultDialConnectTimeout, is
	// 30s, sized for arbitrary networks.)
	connectTimeout = 10 * time.Second
	// tlsHandshakeTimeout is the SDK's default
	// (awshttp.DefaultHTTPTransportTLSHandleshakeTimeout).
	tlsHandshakeTimeout = 10 * time.Second
	// idleConnTimeout is the SDK's default
	// (awshttp.DefaultHTTPTransportIdleConnTimeout): an idle connection is
	// closed after 90s, well past the gap between requests of a busy enclave.
	idleConnTimeout = 90 * time.Second
	// responseHeaderTimeout is a safety net for one attempt (raised to the
	// request timeout when that is longer); normally the request timeout
	// ends a request first.
	responseHeaderTimeout = 30 * time.Second
)

// Config configures New.
type Config struct {
	// Region is the AWS region (required).
	Region string
	// Endpoint is the URL the client uses: the TLS server name and the
	// SigV4 host. Empty means DefaultEndpoint(Region). Must be https.
	Endpoint string
	// Dial is where every upstream connection really goes (--kms-dial).
	// With Direct, leave it zero: connections go to the endpoint's host.
	Dial   transport.Addr
	Direct bool
	// ExtraRootsPEM is added to the embedded roots (--kms-ca).
	ExtraRootsPEM []byte
	// MaxConns caps upstream connections (--upstream-conns, default 4).
	MaxConns int
	// RequestTimeout bounds a whole request, SDK retries included
	// (--request-timeout, default 10s). The caller's context bounds it too.
	RequestTimeout time.Duration
	// Credentials sign the requests (required).
	Credentials aws.CredentialsProvider
	// MaxAttempts is the SDK's attempts per request, first included
	// (default retry.DefaultMaxAttempts, 3).
	MaxAttempts int
}

// DefaultEndpoint returns the KMS endpoint of a region as the SDK resolves
// it: https://kms.<region>.amazonaws.com in the aws partition, .amazonaws.com.cn
// in China, and so on.
func DefaultEndpoint(region string) (string, error) {
	ep, err := kms.NewDefaultEndpointResolverV2().ResolveEndpoint(context.Background(), kms.EndpointParameters{Region: aws.String(region)})
	if err != nil {
		return "", fmt.Errorf("upstream: failed to resolve the KMS endpoint of region %q: %w", region, err)
	}
	return ep.URI.String(), nil
}

// DirectDial is the --kms-dial value that dials the endpoint's own host.
const DirectDial = "direct"

// ParseDial parses a --kms-dial value: an address in transport's syntax, or
// "direct".
func ParseDial(s string) (dial transport.Addr, direct bool, err error) {
	if s == DirectDial {
		return transport.Addr{}, true, nil
	}
	dial, err = transport.Parse(s)
	if err != nil {
		return transport.Addr{}, false, fmt.Errorf("upstream: --kms-dial: %w (or %q)", err, DirectDial)
	}
	return dial, false, nil
}

// Client is kmsproxyd's KMS client. Safe for concurrent use.
type Client struct {
	cfg        Config
	serverName string // the endpoint's host, for TLS
	through    string // the dial address, or "direct", for messages
	tlsConfig  *tls.Config

	kms       *kms.Client
	transport *http.Transport

	slots   chan struct{} // one token per open connection: a hard cap
	open    atomic.Int64
	maxSeen atomic.Int64

	offset atomic.Int64 // KMS's clock minus ours, ns; noOffset until seen

	// The workers that make the calls Do is given (see Do).
	jobs      chan *job
	workers   sync.WaitGroup
	closed    chan struct{}
	closeOnce sync.Once
}

const noOffset = math.MinInt64

// New validates cfg and returns a client, with its workers (see Do)
// started. It does not connect. Close stops the workers.
func New(cfg Config) (*Client, error) {
	cfg, u, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	roots, err := rootPool(cfg.ExtraRootsPEM)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:        cfg,
		serverName: u.Hostname(),
		through:    DirectDial,
		slots:      make(chan struct{}, cfg.MaxConns),
		jobs:       make(chan *job),
		closed:     make(chan struct{}),
	}
	if !cfg.Direct {
		c.through = cfg.Dial.String()
	}
	c.offset.Store(noOffset)
	c.tlsConfig = &tls.Config{
		RootCAs:    roots,
		ServerName: c.serverName,
		// AWS made TLS 1.2 the minimum for all its API endpoints (AWS
		// Security Blog, "TLS 1.2 to become the minimum TLS protocol level
		// for all AWS API endpoints", rollout completed 2023-12-31).
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		// Connections are few and long-lived, and requests are a few KiB:
		// full-size records from the first request on (crypto/tls starts
		// a connection with ~1 KiB records, meant for web page loads).
		DynamicRecordSizingDisabled: true,
	}
	c.transport = &http.Transport{
		Proxy:          nil, // never an environment proxy: the dial address is the route
		DialTLSContext: c.dialTLS,
		// HTTP/1.1 only. KMS speaks it, and with it each in-flight request
		// has its own connection: MaxConnsPerHost is then exactly the
		// number of parallel calls, matching the vsock-proxy's workers, and
		// one broken connection fails one request, not every request
		// multiplexed on an HTTP/2 connection.
		ForceAttemptHTTP2:     false,
		MaxConnsPerHost:       cfg.MaxConns,
		MaxIdleConnsPerHost:   cfg.MaxConns,
		MaxIdleConns:          cfg.MaxConns,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: max(responseHeaderTimeout, cfg.RequestTimeout),
		ExpectContinueTimeout: awshttp.DefaultHTTPTransportExpectContinueTimeout,
		// Room for a whole attested request, headers and body (see
		// sdkhttp.BufferBody), so that it leaves in one TLS record and one write:
		// a Decrypt with Recipient is 7 to 9 KiB (an attestation document
		// of ~4.5 KiB is ~6 KiB in base64, SigV4 headers ~1 KiB). With
		// net/http's default 4 KiB it would leave in pieces, the rest
		// through a copy buffer allocated for each request.
		WriteBufferSize: writeBufferSize,
	}
	c.kms = newKMS(cfg, &http.Client{Transport: &clockTransport{next: c.transport, c: c}})
	for range workersPerConn * cfg.MaxConns {
		c.workers.Go(c.work)
	}
	return c, nil
}

// newKMS returns the SDK client for cfg (normalized) over hc.
func newKMS(cfg Config, hc *http.Client) *kms.Client {
	maxAttempts := cfg.MaxAttempts
	return kms.New(kms.Options{
		Region:       cfg.Region,
		BaseEndpoint: aws.String(cfg.Endpoint),
		Credentials:  credentialsAdapter{cfg.Credentials},
		HTTPClient:   hc,
		// The standard retryer: exponential back-off with jitter, retries
		// throttling errors, 5xx, and connection failures, with its retry
		// quota.
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			o.Retryables = append([]retry.IsErrorRetryable{retryConnectErrors}, o.Retryables...)
		}),
		APIOptions: []func(*middleware.Stack) error{
			func(s *middleware.Stack) error {
				return s.Initialize.Add(timeoutMiddleware{cfg.RequestTimeout}, middleware.Before)
			},
		},
	})
}

func (cfg Config) normalize() (Config, *url.URL, error) {
	if cfg.Region == "" {
		return cfg, nil, errors.New("upstream: no region: set --region, or let kmsproxyd read it from IMDS")
	}
	if cfg.Endpoint == "" {
		ep, err := DefaultEndpoint(cfg.Region)
		if err != nil {
			return cfg, nil, err
		}
		cfg.Endpoint = ep
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		return cfg, nil, fmt.Errorf("upstream: endpoint %q is not a URL: %w", cfg.Endpoint, err)
	}
	switch {
	case u.Scheme != "https":
		return cfg, nil, fmt.Errorf("upstream: endpoint %q must be https: TLS to KMS has to end inside the enclave", cfg.Endpoint)
	case u.Hostname() == "":
		return cfg, nil, fmt.Errorf("upstream: endpoint %q has no host", cfg.Endpoint)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return cfg, nil, fmt.Errorf("upstream: endpoint %q must be scheme://host[:port] only", cfg.Endpoint)
	}
	switch {
	case cfg.Direct && cfg.Dial.Network != "":
		return cfg, nil, fmt.Errorf("upstream: both a dial address (%s) and direct given", cfg.Dial)
	case !cfg.Direct && cfg.Dial.Network == "":
		return cfg, nil, errors.New("upstream: no dial address: set --kms-dial (default vsock://3:8000) or --kms-dial direct")
	case cfg.Dial.Network == transport.VSOCK && cfg.Dial.CID == transport.AnyCID:
		return cfg, nil, fmt.Errorf("upstream: dial address %s has no CID (the parent is vsock://3:PORT)", cfg.Dial)
	}
	if cfg.Credentials == nil {
		return cfg, nil, errors.New("upstream: no credentials provider")
	}
	if cfg.MaxConns < 0 || cfg.RequestTimeout < 0 || cfg.MaxAttempts < 0 {
		return cfg, nil, fmt.Errorf("upstream: negative setting (connections %d, timeout %s, attempts %d)", cfg.MaxConns, cfg.RequestTimeout, cfg.MaxAttempts)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = retry.DefaultMaxAttempts
	}
	cfg.Endpoint = strings.TrimSuffix(cfg.Endpoint, "/")
	return cfg, u, nil
}

// KMS returns the SDK client. Call it within WithTimeout's context and pass
// its errors through ToKMSError.
func (c *Client) KMS() *kms.Client { return c.kms }

// Endpoint returns the endpoint URL in use.
func (c *Client) Endpoint() string { return c.cfg.Endpoint }

// Region returns the region the client signs for, fixed when it was made.
func (c *Client) Region() string { return c.cfg.Region }

// Through returns where connections go: the dial address, or "direct".
func (c *Client) Through() string { return c.through }

// WithTimeout bounds ctx by the request timeout, for a caller whose request
// has other steps besides the KMS call. KMS() calls are bounded by the
// request timeout in any case.
func (c *Client) WithTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	dl, _ := ctx.Deadline()
	return context.WithValue(ctx, budgetKey{}, budget{dl, c.cfg.RequestTimeout}), cancel
}

// budget remembers the deadline WithTimeout set and the timeout it came
// from, so that a timeout is reported as "within 10s" and not as the
// slightly smaller time left when the call started.
type budget struct {
	deadline time.Time
	timeout  time.Duration
}

type budgetKey struct{}

// Conns returns the number of upstream connections open now.
func (c *Client) Conns() int { return int(c.open.Load()) }

// MaxConnsSeen returns the most connections that were ever open at once.
func (c *Client) MaxConnsSeen() int { return int(c.maxSeen.Load()) }

// ClockOffset returns KMS's clock minus this one, from the Date header of
// the last response (resolution one second), and whether any was seen.
// SigV4 signatures are refused when the clocks differ by more than five
// minutes (IAM user guide, "AWS Signature Version 4 for API requests": "a
// request must reach AWS within five minutes of the time stamp in the
// request"), and attestation freshness depends on the clock too. The SDK
// corrects its own signing time for skew; this reports the skew so that
// operators see it.
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_aws-signing.html
func (c *Client) ClockOffset() (time.Duration, bool) {
	v := c.offset.Load()
	if v == noOffset {
		return 0, false
	}
	return time.Duration(v), true
}

// Close stops the workers of Do (each after the call it is making) and
// closes idle connections. In-flight requests finish on theirs; a later Do
// runs its call on the caller's goroutine.
func (c *Client) Close() {
	c.closeOnce.Do(func() { close(c.closed) })
	c.transport.CloseIdleConnections()
}

// workersPerConn is how many of Do's workers there are per upstream
// connection: one on the wire and one ready with its request, so that a
// connection never waits for the next request to be built. More would only
// queue inside net/http's transport, each holding a serialized request.
const workersPerConn = 2

// job is one call run by a worker.
type job struct {
	call     func(*kms.Client)
	done     chan struct{}
	panicked any // what call panicked with, re-raised on Do's goroutine
}

// run runs the call, catching a panic for Do to re-raise where the
// caller's recover can see it.
func (j *job) run(k *kms.Client) {
	defer func() {
		if v := recover(); v != nil {
			j.panicked = v
		}
		close(j.done)
	}()
	j.call(k)
}

// Do runs call, which makes one KMS() call, on one of the client's worker
// goroutines (2 per upstream connection, started by New) and returns when
// it has returned; a panic in call is raised again on the caller's
// goroutine. While all workers are busy, Do waits for one, or until ctx
// ends: then it returns a *WaitError without running call.
//
// Only --upstream-conns calls can be on the wire at once anyway. Waiting
// here, instead of inside net/http's transport, keeps the SDK's work for a
// request (middleware stack, serialized body with its attestation document,
// signature) from being done until a connection is about to be free, and
// keeps the SDK's deep call stacks on the workers: a request waiting for
// KMS costs a parked goroutine with a small stack, so many concurrent
// callers cost little memory.
func (c *Client) Do(ctx context.Context, call func(*kms.Client)) error {
	j := &job{call: call, done: make(chan struct{})}
	var start time.Time
	select {
	case c.jobs <- j:
	case <-c.closed:
		call(c.kms)
		return nil
	default:
		// Every worker is busy: wait, and say so if the wait is all there
		// is time for.
		start = time.Now()
		select {
		case c.jobs <- j:
		case <-c.closed:
			call(c.kms)
			return nil
		case <-ctx.Done():
			return &WaitError{Conns: c.cfg.MaxConns, Waited: time.Since(start), Err: ctx.Err()}
		}
	}
	<-j.done
	if j.panicked != nil {
		panic(j.panicked)
	}
	return nil
}

// work runs jobs until Close. The workers are a fixed set, as many as
// Do's comment says, started by New: a parked goroutine costs a few KiB.
func (c *Client) work() {
	for {
		select {
		case j := <-c.jobs:
			j.run(c.kms)
		case <-c.closed:
			return
		}
	}
}

// clockTransport records the offset of KMS's clock from each response's
// Date header.
type clockTransport struct {
	next http.RoundTripper
	c    *Client
}

func (t *clockTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// An in-memory copy of the body: one TLS record and one write, and
	// the SDK closing its body cannot close the connection (sdkhttp).
	req, err := sdkhttp.BufferBody(req, writeBufferSize)
	if err != nil {
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	received := time.Now()
	if d := resp.Header.Get("Date"); d != "" {
		if at, err := http.ParseTime(d); err == nil {
			t.c.offset.Store(int64(at.Sub(received)))
		}
	}
	return resp, nil
}

// credentialsAdapter marks credential failures so ToKMSError can say that
// the credentials step failed.
type credentialsAdapter struct{ p aws.CredentialsProvider }

func (a credentialsAdapter) Retrieve(ctx context.Context) (aws.Credentials, error) {
	creds, err := a.p.Retrieve(ctx)
	if err != nil {
		return creds, &CredentialsError{Err: err}
	}
	return creds, nil
}

// timeoutMiddleware bounds every call by the request timeout, even one
// made without WithTimeout, and marks a call that failed because its
// deadline passed with how long it had, for ToKMSError's message.
type timeoutMiddleware struct{ timeout time.Duration }

func (timeoutMiddleware) ID() string { return "kmsproxyRequestTimeout" }

func (m timeoutMiddleware) HandleInitialize(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
	had := m.timeout
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > m.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.timeout)
		defer cancel()
	} else if b, ok := ctx.Value(budgetKey{}).(budget); ok && b.deadline.Equal(dl) {
		had = b.timeout
	} else {
		had = time.Until(dl)
	}
	out, md, err := next.HandleInitialize(ctx, in)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = &TimeoutError{After: had, Err: err}
	}
	return out, md, err
}

// dialTLS opens one upstream connection: a slot, the dial address (or the
// endpoint's host when direct), then TLS for the endpoint's name.
func (c *Client) dialTLS(ctx context.Context, network, hostport string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout+tlsHandshakeTimeout)
	defer cancel()
	// net/http already keeps to MaxConnsPerHost; the slots make the cap
	// exact while a closing connection is being torn down.
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &ConnectError{Step: StepConnect, Through: c.through, Err: fmt.Errorf("no free connection slot: %w", ctx.Err())}
	}
	raw, err := c.dialRaw(ctx, network, hostport)
	if err != nil {
		<-c.slots
		return nil, &ConnectError{Step: StepConnect, Through: c.through, Err: err}
	}
	conn := &countedConn{Conn: raw, c: c}
	n := c.open.Add(1)
	for {
		m := c.maxSeen.Load()
		if n <= m || c.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	tc := tls.Client(conn, c.tlsConfig)
	hctx, hcancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
	defer hcancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, &ConnectError{Step: StepTLS, Endpoint: c.serverName, Through: c.through, Err: err}
	}
	return tc, nil
}

func (c *Client) dialRaw(ctx context.Context, network, hostport string) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if c.cfg.Direct {
		d := net.Dialer{KeepAlive: awshttp.DefaultDialKeepAliveTimeout}
		return d.DialContext(dctx, network, hostport)
	}
	return transport.Dial(dctx, c.cfg.Dial)
}

// countedConn gives back its slot and its count once, on the first Close.
type countedConn struct {
	net.Conn
	c      *Client
	closed atomic.Bool
}

func (cc *countedConn) Close() error {
	err := cc.Conn.Close()
	if cc.closed.CompareAndSwap(false, true) {
		cc.c.open.Add(-1)
		<-cc.c.slots
	}
	return err
}
