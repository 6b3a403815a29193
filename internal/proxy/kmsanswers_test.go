package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/proxy"
	"github.com/enclavekit/kmsproxy/internal/recipient"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// kmsRequest is one request a stand-in KMS received.
type kmsRequest struct {
	op string
	in map[string]any
	// recipient is the public key of the Recipient's attestation
	// document, or nil when the request carries none (or one without a
	// document).
	recipient *rsa.PublicKey
	hasRcpt   bool
}

// standInKMS is a KMS endpoint that answers what the test tells it to,
// including what real KMS never answers: the secret in the clear to a
// request with a Recipient, or a key of another region. kmsproxyd talks to
// it as to KMS: TLS it verifies, SigV4-signed requests.
type standInKMS struct {
	answer func(rq kmsRequest) (int, map[string]any)

	mu   sync.Mutex
	seen []kmsRequest
}

func (k *standInKMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "TrentService.")
	body, _ := io.ReadAll(r.Body)
	rq := kmsRequest{op: op}
	_ = json.Unmarshal(body, &rq.in)
	if rc, ok := rq.in["Recipient"].(map[string]any); ok {
		rq.hasRcpt = true
		if s, ok := rc["AttestationDocument"].(string); ok && s != "" {
			b, _ := base64.StdEncoding.DecodeString(s)
			if doc, err := attestation.Parse(b); err == nil {
				if pub, err := x509.ParsePKIXPublicKey(doc.PublicKey); err == nil {
					rq.recipient, _ = pub.(*rsa.PublicKey)
				}
			}
		}
	}
	k.mu.Lock()
	k.seen = append(k.seen, rq)
	k.mu.Unlock()
	status, out := k.answer(rq)
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// calls returns the operations the stand-in was called with.
func (k *standInKMS) calls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var ops []string
	for _, rq := range k.seen {
		ops = append(ops, rq.op)
	}
	return ops
}

// envelope encrypts pt to the request's Recipient as KMS does.
func envelope(t testing.TB, rq kmsRequest, pt []byte) string {
	t.Helper()
	if rq.recipient == nil {
		t.Errorf("%s: no Recipient key to encrypt to", rq.op)
		return ""
	}
	env, err := cms.Encrypt(rand.Reader, rq.recipient, pt)
	if err != nil {
		t.Errorf("cms.Encrypt: %v", err)
	}
	return base64.StdEncoding.EncodeToString(env)
}

// standInEnclave is kmsproxyd's proxy core talking to a standInKMS.
type standInEnclave struct {
	srv   *proxy.Server
	kms   *standInKMS
	ca    *nsmsim.CA
	pcrs  map[int][]byte
	addrs map[string]string // listener → tcp://127.0.0.1:PORT
}

// startStandIn runs kmsproxyd's proxy core under pol, signing for
// enclavetest.Region, against a stand-in KMS answering with answer; both
// listeners are on loopback TCP.
func startStandIn(t *testing.T, pol *policy.Policy, answer func(rq kmsRequest) (int, map[string]any)) *standInEnclave {
	t.Helper()
	e := &standInEnclave{kms: &standInKMS{answer: answer}, pcrs: enclavetest.MeasuredPCRs(), addrs: map[string]string{}}
	ts := httptest.NewTLSServer(e.kms)
	t.Cleanup(ts.Close)
	var err error
	if e.ca, err = nsmsim.NewCA(); err != nil {
		t.Fatal(err)
	}
	sim, err := nsmsim.New(e.ca, nsmsim.Options{PCRs: e.pcrs})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.NewEnv(getenvMap{
		"AWS_ACCESS_KEY_ID": enclavetest.RoleAccessKey, "AWS_SECRET_ACCESS_KEY": enclavetest.RoleSecretKey, "AWS_SESSION_TOKEN": enclavetest.RoleToken,
	}.get)
	if err != nil {
		t.Fatal(err)
	}
	dial, err := transport.Parse("tcp://" + ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.New(upstream.Config{
		Region:         enclavetest.Region,
		Endpoint:       ts.URL,
		Dial:           dial,
		ExtraRootsPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}),
		MaxConns:       2,
		RequestTimeout: 10 * time.Second,
		Credentials:    creds,
		MaxAttempts:    1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := recipient.New(ctx, recipient.Config{Attester: sim, Bits: 2048, AttestationTTL: time.Minute})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	srv, err := proxy.New(proxy.Config{Policy: pol, Recipient: mgr, Upstream: up, Credentials: creds, Attester: sim,
		MaxInflight: 16, RequestTimeout: 10 * time.Second, Logger: log})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	e.srv = srv
	var wg sync.WaitGroup
	wg.Go(func() { mgr.Run(ctx) })
	var servers []*http.Server
	for _, name := range policy.Listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := srv.HTTPServer(name, log)
		servers = append(servers, hs)
		wg.Go(func() { _ = hs.Serve(srv.LimitListener(name, ln)) })
		e.addrs[name] = "tcp://" + ln.Addr().String()
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		for _, hs := range servers {
			_ = hs.Shutdown(sctx)
		}
		cancel()
		mgr.Close()
		wg.Wait()
	})
	return e
}

type getenvMap map[string]string

func (m getenvMap) get(k string) string { return m[k] }

// client returns an SDK client of a listener that does not retry.
func (e *standInEnclave) client(t testing.TB, listener string) *kms.Client {
	t.Helper()
	c, err := client.New(context.Background(), e.addrs[listener], func(o *kms.Options) { o.Retryer = aws.NopRetryer{} })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// document returns an attestation document of the enclave's image for a
// key of the caller's own.
func (e *standInEnclave) document(t testing.TB) (*rsa.PrivateKey, []byte) {
	t.Helper()
	own, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&own.PublicKey)
	sim, err := nsmsim.New(e.ca, nsmsim.Options{PCRs: e.pcrs})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		t.Fatal(err)
	}
	return own, doc
}

// homeKey is a key of the account in the region kmsproxyd signs for.
const homeKey = "arn:aws:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":key/1234abcd-12ab-34cd-56ef-1234567890ab"

// passThroughPolicy lets the parent call everything but receive no
// plaintext.
const passThroughPolicy = `listeners:
  parent:
    operations: ["*"]
  local:
    operations: ["*"]
    plaintext: true
`

// TestCallerRecipientWithoutDocument is a parent on a listener that may
// not receive plaintext sending Decrypt with a Recipient that holds no
// attestation document, to a KMS that then treats the request as one
// without Recipient and answers in the clear (as KMS emulators such as
// local-kms do with every Recipient; what AWS KMS does with an empty one
// is not documented). kmsproxyd passed such a request through untouched,
// skipping the plaintext rule; it must refuse it with ValidationException
// before KMS is called.
func TestCallerRecipientWithoutDocument(t *testing.T) {
	secret := []byte("the enclave's database password")
	e := startStandIn(t, mustParsePolicy(t, passThroughPolicy), func(rq kmsRequest) (int, map[string]any) {
		return 200, map[string]any{"KeyId": homeKey, "Plaintext": secret, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
	})
	parent := e.client(t, policy.ListenerParent)
	for _, tt := range []struct {
		name string
		rcpt *types.RecipientInfo
	}{
		{"no AttestationDocument", &types.RecipientInfo{KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}},
		{"an empty Recipient", &types.RecipientInfo{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := parent.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: []byte("a ciphertext blob the parent holds"), Recipient: tt.rcpt})
			if err == nil {
				t.Fatalf("the parent, which may not receive plaintext, got %q", out.Plaintext)
			}
			wantCode(t, err, "ValidationException")
			if !strings.Contains(err.Error(), "Recipient has no AttestationDocument") {
				t.Errorf("error %q does not say what is missing", err)
			}
		})
	}
	if got := e.kms.calls(); len(got) != 0 {
		t.Errorf("KMS was called (%v); the request must be refused before", got)
	}
}

// TestCallerRecipientAnswerInTheClear is an answer real KMS never gives: a
// request that carries its own Recipient, answered with the secret in the
// clear besides CiphertextForRecipient. kmsproxyd passes such requests
// through without applying the plaintext rule, because KMS encrypts the
// answer to the caller's key; an answer in the clear must therefore be
// refused whole, with KMSInternalException naming the upstream step.
func TestCallerRecipientAnswerInTheClear(t *testing.T) {
	secret := []byte("a secret KMS should have encrypted to the caller")
	e := startStandIn(t, mustParsePolicy(t, passThroughPolicy), func(rq kmsRequest) (int, map[string]any) {
		out := map[string]any{"KeyId": homeKey, "CiphertextForRecipient": envelope(t, rq, secret)}
		switch rq.op {
		case "GenerateDataKeyPair":
			out["PrivateKeyPlaintext"] = secret
		case "DeriveSharedSecret":
			out["SharedSecret"] = secret
		case "GenerateRandom":
			delete(out, "KeyId")
			out["Plaintext"] = secret
		default:
			out["Plaintext"] = secret
		}
		return 200, out
	})
	_, doc := e.document(t)
	rcpt := map[string]any{"AttestationDocument": doc, "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256"}
	for _, tt := range []struct {
		op, member string
		body       map[string]any
	}{
		{"Decrypt", "Plaintext", map[string]any{"CiphertextBlob": []byte("blob")}},
		{"GenerateDataKey", "Plaintext", map[string]any{"KeyId": homeKey, "KeySpec": "AES_256"}},
		{"GenerateDataKeyPair", "PrivateKeyPlaintext", map[string]any{"KeyId": homeKey, "KeyPairSpec": "ECC_NIST_P256"}},
		{"GenerateRandom", "Plaintext", map[string]any{"NumberOfBytes": 32}},
		{"DeriveSharedSecret", "SharedSecret", map[string]any{"KeyId": homeKey, "KeyAgreementAlgorithm": "ECDH", "PublicKey": []byte("peer")}},
	} {
		t.Run(tt.op, func(t *testing.T) {
			tt.body["Recipient"] = rcpt
			status, raw := standInPost(t, e.addrs[policy.ListenerParent], tt.op, tt.body)
			var m map[string]string
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("answer %s is not a KMS error: %v", raw, err)
			}
			want := "upstream: KMS answered a " + tt.op + " that carries its own Recipient with " + tt.member + " in the clear"
			if status != http.StatusInternalServerError || m["__type"] != "KMSInternalException" || !strings.HasPrefix(m["message"], want) || len(m) != 2 {
				t.Fatalf("got %d %s, want 500 KMSInternalException %q", status, raw, want)
			}
			for _, leak := range []string{base64.StdEncoding.EncodeToString(secret), "CiphertextForRecipient", "KeyId"} {
				if strings.Contains(string(raw), leak) {
					t.Errorf("the refusal carries %q", leak)
				}
			}
		})
	}
}

// TestAnswerFromAnotherRegion is an answer real KMS never gives: a key ARN
// of another region or partition than the one kmsproxyd signs for (KMS
// uses only keys of the region it is called in, a multi-Region key as its
// replica there). Under a policy that pins nothing it was accepted; it must
// be refused whatever the policy says, for pass-through and attested
// operations alike, with KMSInternalException naming the upstream step (no
// policy line decides it), and nothing of the answer may leave.
func TestAnswerFromAnotherRegion(t *testing.T) {
	secret := []byte("a data key under a key kmsproxyd never asked for")
	var answerKey atomic.Value // the key ARN the stand-in answers with
	e := startStandIn(t, policy.Default(), func(rq kmsRequest) (int, map[string]any) {
		answerKey := answerKey.Load().(string)
		switch rq.op {
		case "Encrypt":
			return 200, map[string]any{"KeyId": answerKey, "CiphertextBlob": []byte("ciphertext"), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
		default: // GenerateDataKey
			return 200, map[string]any{"KeyId": answerKey, "CiphertextBlob": []byte("ciphertext"), "CiphertextForRecipient": envelope(t, rq, secret)}
		}
	})
	app := e.client(t, policy.ListenerLocal)
	for _, tt := range []struct {
		name, key string
		refused   bool
	}{
		{"the region kmsproxyd signs for", homeKey, false},
		{"the replica of a multi-Region key", "arn:aws:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":key/mrk-1234abcd12ab34cd56ef1234567890ab", false},
		{"another region", "arn:aws:kms:eu-west-1:" + enclavetest.Account + ":key/1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"another partition", "arn:aws-cn:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":key/1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"no key ARN", "alias/app-data", true},
	} {
		answerKey.Store(tt.key)
		t.Run(tt.name, func(t *testing.T) {
			enc, encErr := app.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String("alias/app-data"), Plaintext: []byte("x")})
			gdk, gdkErr := app.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-data"), KeySpec: types.DataKeySpecAes256})
			if !tt.refused {
				if encErr != nil || gdkErr != nil {
					t.Fatalf("Encrypt: %v; GenerateDataKey: %v", encErr, gdkErr)
				}
				if aws.ToString(enc.KeyId) != tt.key || string(gdk.Plaintext) != string(secret) {
					t.Fatalf("answers name %s and carry %q", aws.ToString(enc.KeyId), gdk.Plaintext)
				}
				return
			}
			for op, err := range map[string]error{"Encrypt": encErr, "GenerateDataKey": gdkErr} {
				if err == nil {
					t.Fatalf("%s answered with a key of %s", op, tt.key)
				}
				wantCode(t, err, "KMSInternalException")
				if msg := err.Error(); !strings.Contains(msg, "upstream: KMS answered "+op+" with a key outside the region kmsproxyd signs for, "+enclavetest.Region+" (partition aws)") ||
					strings.Contains(msg, tt.key) {
					t.Errorf("%s: refusal %q does not name the step and the region, or names the answered key", op, msg)
				}
			}
		})
	}
}

// standInPost sends one KMS request to a listener and returns the status
// and body.
func standInPost(t testing.TB, addr, op string, body map[string]any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	hc, err := client.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "http://kmsproxy.enclave/", strings.NewReader(string(b)))
	req.Header.Set("X-Amz-Target", "TrentService."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func mustParsePolicy(t testing.TB, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(text), "policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// recordingListener hands out connections that remember every slice
// written to them, by reference: what kmsproxyd passed to the connection
// without a copy is then still kmsproxyd's own buffer.
type recordingListener struct {
	net.Listener
	mu     sync.Mutex
	writes [][]byte
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, l: l}, nil
}

type recordingConn struct {
	net.Conn
	l *recordingListener
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.l.mu.Lock()
	c.l.writes = append(c.l.writes, p)
	c.l.mu.Unlock()
	return c.Conn.Write(p)
}

// TestLargeSecretAnswerSkipsHTTPBuffers: an answer carrying a secret that
// is longer than net/http's write buffers (a Decrypt of 4,096 bytes, the
// most KMS encrypts) reaches the connection straight from kmsproxyd's own
// buffer, which is cleared after the answer: no copy of it stays in
// net/http's pooled buffers. The same holds for the decrypt cache's miss
// (which stores the answer) and hit (which answers from memory). (Shorter
// answers are copied there: see docs/security.md.)
func TestLargeSecretAnswerSkipsHTTPBuffers(t *testing.T) {
	secret := bytes.Repeat([]byte("s"), 4096)
	for _, tt := range []struct {
		name  string
		pol   *policy.Policy
		calls int // to KMS, for two identical requests
	}{
		{"no cache", policy.Default(), 2},
		{"decrypt cache miss and hit", mustParsePolicy(t, "listeners:\n  local:\n    operations: [\"*\"]\n    plaintext: true\n"+
			"    decrypt_cache: {max_age: 5m, max_uses: 10, max_entries: 10}\n"), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := startStandIn(t, tt.pol, func(rq kmsRequest) (int, map[string]any) {
				return 200, map[string]any{"KeyId": homeKey, "CiphertextForRecipient": envelope(t, rq, secret), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			rl := &recordingListener{Listener: ln}
			hs := e.srv.HTTPServer(policy.ListenerLocal, slog.New(slog.DiscardHandler))
			go func() { _ = hs.Serve(rl) }()
			t.Cleanup(func() { _ = hs.Close() })

			// One keep-alive connection: the server reads the second
			// request only after the first one's handler has returned,
			// buffer cleared.
			hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
			t.Cleanup(hc.CloseIdleConnections)
			var answers [][]byte
			for range 2 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ln.Addr().String()+"/", strings.NewReader(`{"CiphertextBlob":"YmxvYg=="}`))
				req.Header.Set("X-Amz-Target", "TrentService.Decrypt")
				req.Header.Set("Content-Type", "application/x-amz-json-1.1")
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var out struct{ Plaintext []byte }
				if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || !bytes.Equal(out.Plaintext, secret) {
					t.Fatalf("Decrypt: %d, %d bytes", resp.StatusCode, len(b))
				}
				answers = append(answers, b)
			}
			if got := e.kms.calls(); len(got) != tt.calls {
				t.Errorf("KMS was called %d times, want %d", len(got), tt.calls)
			}
			rl.mu.Lock()
			defer rl.mu.Unlock()
			var whole [][]byte
			for _, w := range rl.writes {
				if len(w) == len(answers[0]) {
					whole = append(whole, w)
				}
			}
			if len(whole) != 2 {
				sizes := []int{}
				for _, w := range rl.writes {
					sizes = append(sizes, len(w))
				}
				t.Fatalf("writes of %v bytes; want each %d-byte answer written whole, not through net/http's buffers", sizes, len(answers[0]))
			}
			if !bytes.Equal(whole[0], make([]byte, len(whole[0]))) {
				t.Error("the first answer's buffer still holds it after the answer")
			}
		})
	}
}
