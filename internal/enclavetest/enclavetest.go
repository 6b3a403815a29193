// Package enclavetest runs the whole kmsproxy flow inside one test process:
// devkms (TLS on loopback, SigV4 verified), the NSM simulator, and
// kmsproxyd's proxy core with its parent listener on a unix socket (the
// stand-in for vsock) and its local listener on loopback TCP. Tests of the
// client package, of kmsproxyctl and of kmsproxyd itself use it to exercise
// the real attested path without AWS or Nitro hardware.
//
// It is a test helper: nothing in a production binary imports it.
package enclavetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/proxy"
	"github.com/enclavekit/kmsproxy/internal/recipient"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// Principals and access keys of the simulated account.
const (
	Account        = "111122223333"
	Region         = "us-east-1"
	RoleARN        = "arn:aws:iam::" + Account + ":role/enclave"
	SessionARN     = "arn:aws:sts::" + Account + ":assumed-role/enclave/i-0123456789abcdef0"
	OperatorARN    = "arn:aws:iam::" + Account + ":user/operator"
	RoleAccessKey  = "ASIAENCLAVEROLE00001"
	RoleSecretKey  = "enclave-role-secret-key-for-tests-only0"
	RoleToken      = "enclave-role-session-token-for-tests-only"
	OperatorKey    = "AKIAOPERATOR00000001"
	OperatorSecret = "operator-secret-key-for-tests-only00000"
)

// Options configures Start. The zero value is a kmsproxyd with the built-in
// policy, credentials from the (test) environment, documents reused for 5
// minutes and no rotation.
type Options struct {
	// Policy is kmsproxyd's listener policy; nil is the built-in default.
	Policy *policy.Policy
	// PCRs are the simulated enclave's measurements; nil is MeasuredPCRs().
	PCRs map[int][]byte
	// KeyPolicyPCRs are the measurements the key policy requires; nil is
	// PCRs. Different values simulate an enclave the key does not trust.
	KeyPolicyPCRs map[int][]byte
	// PushCredentials starts kmsproxyd with --credentials push and nothing
	// pushed yet; otherwise it has the enclave role's credentials.
	PushCredentials bool
	AttestationTTL  time.Duration // default 5m; negative means 0 (fresh per request)
	KeyRotation     time.Duration // default none
	RequestTimeout  time.Duration // default 10s
	MaxInflight     int           // default 256
	UpstreamConns   int           // default 4
	// Attester wraps the simulator (fault injection); nil keeps it as is.
	Attester func(attestation.Attester) attestation.Attester
	// DevKMS adds devkms options.
	DevKMS []devkmstest.Option
	// LogLevel for kmsproxyd's logs, which are kept in Env.Logs.
	LogLevel slog.Level
	// LogTee also receives kmsproxyd's log lines, after Env.Logs.
	LogTee io.Writer
}

// Env is a running enclave flow.
type Env struct {
	DevKMS *devkmstest.Instance
	CA     *nsmsim.CA
	CADir  string // the CA saved as `kmsproxyctl dev ca` writes it
	PCRs   map[int][]byte
	// KeyID is a symmetric key whose policy lets the enclave role decrypt
	// only with an attestation matching KeyPolicyPCRs; KeyARN its ARN.
	KeyID, KeyARN string
	// ParentAddr and LocalAddr are kmsproxyd's listeners in transport
	// syntax (unix:///... and tcp://127.0.0.1:PORT).
	ParentAddr, LocalAddr string
	Server                *proxy.Server
	Recipient             *recipient.Manager
	Upstream              *upstream.Client
	Push                  *credentials.Push // nil unless PushCredentials
	// Logs holds kmsproxyd's JSON log lines.
	Logs *SyncBuffer

	keyPolicyPCRs map[int][]byte
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// MeasuredPCRs returns non-zero simulated measurements of a "release"
// enclave image: PCR0 (image), PCR1 (kernel), PCR2 (application).
func MeasuredPCRs() map[int][]byte {
	return PCRsFor("kmsproxy enclavetest image")
}

// PCRsFor derives PCR0-2 from a label (nsmsim.ImagePCRs), so tests can
// make "another image".
func PCRsFor(label string) map[int][]byte { return nsmsim.ImagePCRs(label) }

// Start runs devkms, the simulator and kmsproxyd, and stops them when the
// test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.PCRs == nil {
		opts.PCRs = MeasuredPCRs()
	}
	if opts.KeyPolicyPCRs == nil {
		opts.KeyPolicyPCRs = opts.PCRs
	}
	if opts.AttestationTTL == 0 {
		opts.AttestationTTL = 5 * time.Minute
	} else if opts.AttestationTTL < 0 {
		opts.AttestationTTL = 0
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.MaxInflight == 0 {
		opts.MaxInflight = 256
	}
	if opts.UpstreamConns == 0 {
		opts.UpstreamConns = 4
	}
	ca := simCA(t)
	caDir := t.TempDir()
	if err := ca.Save(caDir); err != nil {
		t.Fatalf("enclavetest: save simulator CA: %v", err)
	}
	devOpts := append([]devkmstest.Option{
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithCredentials(
			devkms.Credential{AccessKeyID: OperatorKey, SecretAccessKey: OperatorSecret, Principal: OperatorARN},
			devkms.Credential{AccessKeyID: RoleAccessKey, SecretAccessKey: RoleSecretKey, SessionToken: RoleToken, Principal: SessionARN},
		),
	}, opts.DevKMS...)
	kmsd := devkmstest.Start(t, devOpts...)

	e := &Env{DevKMS: kmsd, CA: ca, CADir: caDir, PCRs: opts.PCRs, keyPolicyPCRs: opts.KeyPolicyPCRs, Logs: &SyncBuffer{}}
	e.KeyID = e.CreateKey(t, devkms.SeedKey{Aliases: []string{"alias/app-data"}})
	e.KeyARN = kmsd.KeyARN(e.KeyID)

	sim, err := nsmsim.New(ca, nsmsim.Options{PCRs: opts.PCRs})
	if err != nil {
		t.Fatalf("enclavetest: simulator: %v", err)
	}
	var attester attestation.Attester = sim
	if opts.Attester != nil {
		attester = opts.Attester(sim)
	}

	var logOut io.Writer = e.Logs
	if opts.LogTee != nil {
		logOut = io.MultiWriter(e.Logs, opts.LogTee)
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: opts.LogLevel}))
	var creds credentials.Provider
	if opts.PushCredentials {
		e.Push = credentials.NewPush(time.Now)
		creds = e.Push
	} else {
		env, err := credentials.NewEnv(envMap{
			"AWS_ACCESS_KEY_ID":     RoleAccessKey,
			"AWS_SECRET_ACCESS_KEY": RoleSecretKey,
			"AWS_SESSION_TOKEN":     RoleToken,
		}.get)
		if err != nil {
			t.Fatalf("enclavetest: credentials: %v", err)
		}
		creds = env
	}

	dial, err := transport.Parse("tcp://" + kmsd.Addr)
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.New(upstream.Config{
		Region:         Region,
		Endpoint:       kmsd.URL,
		Dial:           dial,
		ExtraRootsPEM:  kmsd.CAPEM,
		MaxConns:       opts.UpstreamConns,
		RequestTimeout: opts.RequestTimeout,
		Credentials:    creds,
	})
	if err != nil {
		t.Fatalf("enclavetest: upstream: %v", err)
	}
	t.Cleanup(up.Close)
	e.Upstream = up

	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := recipient.New(ctx, recipient.Config{
		Attester:       attester,
		Bits:           2048,
		Rotation:       opts.KeyRotation,
		AttestationTTL: opts.AttestationTTL,
	})
	if err != nil {
		cancel()
		t.Fatalf("enclavetest: recipient: %v", err)
	}
	e.Recipient = mgr
	pol := opts.Policy
	if pol == nil {
		pol = policy.Default()
	}
	srv, err := proxy.New(proxy.Config{
		Policy:         pol,
		Recipient:      mgr,
		Upstream:       up,
		Credentials:    creds,
		Push:           e.Push,
		Attester:       attester,
		MaxInflight:    opts.MaxInflight,
		RequestTimeout: opts.RequestTimeout,
		Logger:         log,
		Version:        "enclavetest",
		Settings:       map[string]any{"region": Region, "kms-endpoint": kmsd.URL},
	})
	if err != nil {
		cancel()
		t.Fatalf("enclavetest: proxy: %v", err)
	}
	e.Server = srv

	sockDir, err := os.MkdirTemp("", "kmsproxy-") // short: unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	parentLn, err := net.Listen("unix", filepath.Join(sockDir, "parent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	localLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.ParentAddr = "unix://" + parentLn.Addr().String()
	e.LocalAddr = "tcp://" + localLn.Addr().String()
	servers := []*http.Server{
		srv.HTTPServer(policy.ListenerParent, log),
		srv.HTTPServer(policy.ListenerLocal, log),
	}
	var wg sync.WaitGroup
	for i, ln := range []net.Listener{srv.LimitListener(policy.ListenerParent, parentLn), srv.LimitListener(policy.ListenerLocal, localLn)} {
		wg.Go(func() { _ = servers[i].Serve(ln) })
	}
	wg.Go(func() { mgr.Run(ctx) })
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
		cancel()
		mgr.Close()
		wg.Wait()
		os.RemoveAll(sockDir)
	})
	return e
}

type envMap map[string]string

func (m envMap) get(k string) string { return m[k] }

var (
	caOnce sync.Once
	caVal  *nsmsim.CA
	caErr  error
)

// simCA is one simulator CA per test binary: making P-384 CAs is cheap,
// but sharing it keeps the tests' documents comparable.
func simCA(t testing.TB) *nsmsim.CA {
	t.Helper()
	caOnce.Do(func() { caVal, caErr = nsmsim.NewCA() })
	if caErr != nil {
		t.Fatalf("enclavetest: simulator CA: %v", caErr)
	}
	return caVal
}

// KeyPolicy is the key policy of the keys Env creates: the operator may
// administer and encrypt but not decrypt; the enclave role may use the
// attested operations only with an attestation document whose ImageSha384
// and PCR0-2 match, and the operations that return no plaintext freely.
func (e *Env) KeyPolicy() string {
	cond := map[string]string{
		"kms:RecipientAttestation:ImageSha384": hex.EncodeToString(e.keyPolicyPCRs[0]),
	}
	for i := 0; i < 3; i++ {
		cond[fmt.Sprintf("kms:RecipientAttestation:PCR%d", i)] = hex.EncodeToString(e.keyPolicyPCRs[i])
	}
	doc := map[string]any{
		"Version": "2012-10-17",
		"Statement": []any{
			map[string]any{
				"Sid":       "OperatorAdministersAndEncrypts",
				"Effect":    "Allow",
				"Principal": map[string]any{"AWS": OperatorARN},
				"Action": []string{"kms:Describe*", "kms:Get*", "kms:List*", "kms:Put*", "kms:Create*",
					"kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyPairWithoutPlaintext",
					"kms:Sign", "kms:Verify", "kms:GenerateMac", "kms:VerifyMac", "kms:ReEncrypt*"},
				"Resource": "*",
			},
			map[string]any{
				"Sid":       "EnclaveAttestedSecrets",
				"Effect":    "Allow",
				"Principal": map[string]any{"AWS": RoleARN},
				"Action": []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair",
					"kms:GenerateRandom", "kms:DeriveSharedSecret"},
				"Resource":  "*",
				"Condition": map[string]any{"StringEqualsIgnoreCase": cond},
			},
			map[string]any{
				"Sid":       "EnclaveNoPlaintext",
				"Effect":    "Allow",
				"Principal": map[string]any{"AWS": RoleARN},
				"Action": []string{"kms:Encrypt", "kms:DescribeKey", "kms:GetPublicKey",
					"kms:GenerateDataKeyWithoutPlaintext", "kms:GenerateDataKeyPairWithoutPlaintext",
					"kms:ReEncrypt*", "kms:Sign", "kms:Verify", "kms:GenerateMac", "kms:VerifyMac"},
				"Resource": "*",
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return string(b)
}

// CreateKey creates a key (symmetric unless k says otherwise) under
// KeyPolicy unless k carries its own policy.
func (e *Env) CreateKey(t testing.TB, k devkms.SeedKey) string {
	t.Helper()
	if k.Policy == "" && k.PolicyFile == "" {
		k.Policy = e.KeyPolicy()
	}
	return e.DevKMS.CreateKeyWith(t, k)
}

// Client returns an aws-sdk-go-v2 KMS client that talks to kmsproxyd's
// listener at addr (ParentAddr or LocalAddr), as a parent app would.
func (e *Env) Client(t testing.TB, addr string) *kms.Client {
	t.Helper()
	a, err := transport.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	return kms.New(kms.Options{
		Region:       Region,
		BaseEndpoint: aws.String("http://kmsproxy.enclave"),
		Credentials:  aws.AnonymousCredentials{},
		HTTPClient:   &http.Client{Transport: sdkhttp.BufferBodies(&http.Transport{DialContext: transport.DialFunc(a)}, 0)},
		Retryer:      aws.NopRetryer{},
	})
}

// HTTPClient returns a plain HTTP client for addr's control endpoints; use
// URLs like http://kmsproxy.enclave/readyz.
func (e *Env) HTTPClient(addr string) (*http.Client, error) {
	a, err := transport.Parse(addr)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: transport.DialFunc(a)}, Timeout: 30 * time.Second}, nil
}

// Operator returns a KMS client to devkms signing as the operator (who may
// encrypt but not decrypt).
func (e *Env) Operator(t testing.TB) *kms.Client {
	t.Helper()
	return e.DevKMS.ClientFor(t, OperatorKey)
}

// Role returns a KMS client to devkms signing as the enclave role without
// attestation (its attested operations are denied).
func (e *Env) Role(t testing.TB) *kms.Client {
	t.Helper()
	return e.DevKMS.ClientFor(t, RoleAccessKey)
}

// RoleCredentials are the enclave role's credentials, e.g. to push.
func RoleCredentials(expires time.Time) credentials.PushedCredentials {
	return credentials.PushedCredentials{
		AccessKeyId: RoleAccessKey, SecretAccessKey: RoleSecretKey, SessionToken: RoleToken, Expiration: &expires,
	}
}

// CheckLogsFree fails t when any of the secrets appears in kmsproxyd's logs
// (raw, base64 or hex).
func (e *Env) CheckLogsFree(t testing.TB, secrets ...[]byte) {
	t.Helper()
	logs := e.Logs.String()
	for _, s := range secrets {
		if len(s) < 8 {
			continue // too short to search for without false alarms
		}
		for _, form := range encodings(s) {
			if strings.Contains(logs, form) {
				t.Errorf("a secret appears in kmsproxyd's logs (as %q...)", form[:min(len(form), 8)])
			}
		}
	}
}

func encodings(s []byte) []string {
	return []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s)}
}
