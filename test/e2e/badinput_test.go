package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/proxy"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

const (
	// answerTimeout bounds waiting for kmsproxyd's answer to one bad
	// request; slow-header cases wait out proxy.ReadHeaderTimeout first.
	answerTimeout = 20 * time.Second
	// maxAnswer bounds what a case reads of an answer.
	maxAnswer = 1 << 20
)

// Which listener a door case knocks on.
const (
	parentDoor = "parent" // unix socket, the vsock stand-in
	localDoor  = "local"  // loopback TCP, for in-enclave apps
)

// answer is what kmsproxyd did with a bad request.
type answer struct {
	status  int
	errType string // __type of a KMS-shaped error body
	message string
	body    []byte
	closed  bool // the connection ended without an answer
}

func (a answer) String() string {
	if a.closed {
		return "connection closed without an answer"
	}
	return fmt.Sprintf("%d %s %q (body %.200q)", a.status, a.errType, a.message, a.body)
}

// doorCase is one bad input at one of kmsproxyd's doors.
type doorCase struct {
	name string
	door string // parentDoor (default) or localDoor
	// send writes the request on conn (a fresh connection).
	send func(t testing.TB, conn net.Conn)
	// want checks the answer.
	want func(a answer) error
}

// ---- building requests ----

type header struct{ name, value string }

// rawHTTP is an HTTP/1.1 request, written exactly as given: Content-Length
// is added from body unless headers set it or Transfer-Encoding.
func rawHTTP(method, path string, headers []header, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: kmsproxy.enclave\r\n", method, path)
	setLen := true
	for _, h := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.name, h.value)
		if strings.EqualFold(h.name, "Content-Length") || strings.EqualFold(h.name, "Transfer-Encoding") {
			setLen = false
		}
	}
	if setLen && (body != nil || method == http.MethodPost || method == http.MethodPut) {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// kmsHeaders are what an SDK sends with a KMS call.
func kmsHeaders(op string) []header {
	return []header{{"Content-Type", kmsapi.ContentType}, {"X-Amz-Target", kmsapi.TargetPrefix + op}}
}

func sendKMS(op, body string) func(testing.TB, net.Conn) {
	return sendRaw(rawHTTP(http.MethodPost, "/", kmsHeaders(op), []byte(body)))
}

func sendHTTP(method, path string, headers []header, body []byte) func(testing.TB, net.Conn) {
	return sendRaw(rawHTTP(method, path, headers, body))
}

func sendRaw(b []byte) func(testing.TB, net.Conn) {
	return func(t testing.TB, c net.Conn) {
		if _, err := c.Write(b); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("write: %v", err)
		}
		// A broken pipe is kmsproxyd refusing the rest of an oversized
		// request: its answer is already on the way.
	}
}

// halfClose sends b, then shuts the connection's write side: a client that
// stopped sending in the middle of its request.
func halfClose(b []byte) func(testing.TB, net.Conn) {
	return func(t testing.TB, c net.Conn) {
		sendRaw(b)(t, c)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			if err := cw.CloseWrite(); err != nil {
				t.Fatalf("CloseWrite: %v", err)
			}
		}
	}
}

// padded is a GenerateRandom body of exactly n bytes: JSON with trailing
// spaces.
func padded(n int) string {
	b := `{"NumberOfBytes":32}`
	return b + strings.Repeat(" ", n-len(b))
}

// pushBody is a credentials push body.
func pushBody(c awsCreds, exp time.Time) []byte {
	b, err := credentials.EncodePush(credentials.PushedCredentials{AccessKeyId: c.accessKeyID, SecretAccessKey: c.secret, SessionToken: c.token, Expiration: &exp})
	if err != nil {
		panic(err)
	}
	return b
}

func jsonCT() []header { return []header{{"Content-Type", "application/json"}} }

// ---- judging answers ----

// kmsError wants a KMS-shaped error of type typ with status and a message
// containing msg.
func kmsError(status int, typ, msg string) func(answer) error {
	return func(a answer) error {
		if a.closed || a.status != status || a.errType != typ || !strings.Contains(a.message, msg) {
			return fmt.Errorf("got %s; want %d %s with a message containing %q", a, status, typ, msg)
		}
		return nil
	}
}

// plainStatus wants net/http's own answer (not KMS-shaped: the request
// never reached kmsproxyd's handler) with this status.
func plainStatus(status int) func(answer) error {
	return func(a answer) error {
		if a.closed || a.status != status {
			return fmt.Errorf("got %s; want HTTP %d", a, status)
		}
		return nil
	}
}

// closedWithout wants the connection closed without an answer.
func closedWithout(a answer) error {
	if !a.closed {
		return fmt.Errorf("got %s; want the connection closed without an answer", a)
	}
	return nil
}

// okJSON wants 200 and a JSON body that check accepts.
func okJSON(check func(map[string]any) error) func(answer) error {
	return func(a answer) error {
		if a.closed || a.status != http.StatusOK {
			return fmt.Errorf("got %s; want 200", a)
		}
		var m map[string]any
		if err := json.Unmarshal(a.body, &m); err != nil {
			return fmt.Errorf("200 with a body that is not JSON: %v", err)
		}
		return check(m)
	}
}

// b64Field checks that member name is base64 of n bytes (n < 0: any).
func b64Field(name string, n int) func(map[string]any) error {
	return func(m map[string]any) error {
		s, _ := m[name].(string)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) == 0 || (n >= 0 && len(b) != n) {
			return fmt.Errorf("member %s: %d bytes (%v), want %d", name, len(b), err, n)
		}
		return nil
	}
}

// knock sends one case on a fresh connection to addr and reads the answer.
func knock(t testing.TB, addr string, send func(testing.TB, net.Conn)) answer {
	t.Helper()
	network, address := "unix", strings.TrimPrefix(addr, "unix://")
	if a, ok := strings.CutPrefix(addr, "tcp://"); ok {
		network, address = "tcp", a
	}
	c, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(answerTimeout))
	send(t, c)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer and no close within %s: kmsproxyd hangs on this input", answerTimeout)
		}
		return answer{closed: true}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	a := answer{status: resp.StatusCode, body: body}
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) == nil {
		a.errType, a.message = e.Type, e.Message
	}
	return a
}

// TestBadInputKmsproxyd knocks on every door of a running kmsproxyd with
// bad input: the KMS API, HTTP itself, and the control endpoints. Each
// case gets its specific answer, and a good request succeeds after it.
func TestBadInputKmsproxyd(t *testing.T) {
	build(t) // before the watchdog starts
	sc := newScan(t)
	s := startStack(t, sc, stackOptions{credentials: "push", requestTimeout: 5 * time.Second})
	s.pushCredentials(t)
	sc.AddSecret("big-token role secret access key", []byte(bigTokenRole.secret))
	in, _ := s.missionInput(t)
	ct := base64.StdEncoding.EncodeToString(in.Ciphertext)
	garbage := make([]byte, 64)
	rand.Read(garbage)
	hour := time.Now().Add(time.Hour)
	pastLimit := strings.Repeat("T", credentials.MaxSessionToken+1)

	cases := []doorCase{
		// ---- the KMS API: JSON bodies ----
		{name: "malformed JSON", send: sendKMS("GenerateRandom", `{"NumberOfBytes":`),
			want: kmsError(400, "SerializationException", "Truncated JSON")},
		{name: "not JSON at all", send: sendKMS("GenerateRandom", `NumberOfBytes=32`),
			want: kmsError(400, "SerializationException", "Malformed JSON")},
		{name: "JSON array instead of object", send: sendKMS("GenerateRandom", `[32]`),
			want: kmsError(400, "SerializationException", "Invalid JSON value")},
		{name: "trailing data after the object", send: sendKMS("GenerateRandom", `{"NumberOfBytes":8} {"NumberOfBytes":9}`),
			want: kmsError(400, "SerializationException", "Unexpected data")},
		{name: "number as string", send: sendKMS("GenerateRandom", `{"NumberOfBytes":"32"}`),
			want: kmsError(400, "SerializationException", "NumberOfBytes")},
		{name: "number overflows int32", send: sendKMS("GenerateRandom", `{"NumberOfBytes":99999999999}`),
			want: kmsError(400, "SerializationException", "NumberOfBytes")},
		{name: "object instead of blob", send: sendKMS("Decrypt", `{"CiphertextBlob":{"a":1}}`),
			want: kmsError(400, "SerializationException", "CiphertextBlob")},
		{name: "bad base64 in a blob", send: sendKMS("Decrypt", `{"CiphertextBlob":"!!not base64!!"}`),
			want: kmsError(400, "SerializationException", "base64")},
		{name: "string instead of map", send: sendKMS("Decrypt", `{"CiphertextBlob":"`+ct+`","EncryptionContext":"tenant=acme"}`),
			want: kmsError(400, "SerializationException", "EncryptionContext")},
		{name: "nested 20000 deep", send: sendKMS("GenerateRandom", `{"NumberOfBytes":`+strings.Repeat("[", 20000)+`}`),
			want: kmsError(400, "SerializationException", "JSON")},
		{name: "body at the 64 KiB limit", send: sendKMS("GenerateRandom", padded(kmsapi.MaxRequestBody)),
			want: okJSON(b64Field("Plaintext", 32))},
		{name: "body one past the 64 KiB limit", send: sendKMS("GenerateRandom", padded(kmsapi.MaxRequestBody+1)),
			want: kmsError(400, "ValidationException", "65536")},
		{name: "body of 1 MiB", send: sendKMS("GenerateRandom", padded(1<<20)),
			want: kmsError(400, "ValidationException", "65536")},
		{name: "chunked body past the limit", send: sendRaw(chunked(kmsapi.MaxRequestBody + 1000)),
			want: kmsError(400, "ValidationException", "65536")},
		// ---- the KMS API: values KMS itself refuses, passed through ----
		{name: "NumberOfBytes 0", send: sendKMS("GenerateRandom", `{"NumberOfBytes":0}`),
			want: kmsError(400, "ValidationException", "numberOfBytes")},
		{name: "NumberOfBytes 1025", send: sendKMS("GenerateRandom", `{"NumberOfBytes":1025}`),
			want: kmsError(400, "ValidationException", "numberOfBytes")},
		{name: "ciphertext of random bytes", send: sendKMS("Decrypt", `{"CiphertextBlob":"`+base64.StdEncoding.EncodeToString(garbage)+`"}`),
			want: kmsError(400, "InvalidCiphertextException", "")},
		{name: "Decrypt without CiphertextBlob", send: sendKMS("Decrypt", `{}`),
			want: kmsError(400, "ValidationException", "iphertextBlob")},
		{name: "Decrypt with an empty body", send: sendKMS("Decrypt", ``),
			want: kmsError(400, "ValidationException", "iphertextBlob")},
		{name: "key that does not exist", send: sendKMS("GenerateDataKey", `{"KeyId":"alias/no-such-key","KeySpec":"AES_256"}`),
			want: kmsError(400, "NotFoundException", "alias/no-such-key")},
		{name: "wrong encryption context", send: sendKMS("Decrypt", `{"CiphertextBlob":"`+ct+`","EncryptionContext":{"tenant":"other"}}`),
			want: kmsError(400, "InvalidCiphertextException", "")},
		{name: "caller's own Recipient with a forged document", send: sendKMS("Decrypt", `{"CiphertextBlob":"`+ct+`","EncryptionContext":{"tenant":"acme"},"Recipient":{"AttestationDocument":"`+base64.StdEncoding.EncodeToString(garbage)+`","KeyEncryptionAlgorithm":"RSAES_OAEP_SHA_256"}}`),
			want: kmsError(400, "ValidationException", "ttestation")},
		// ---- the KMS API: operations and HTTP shape ----
		{name: "unknown operation", send: sendKMS("Frobnicate", `{}`),
			want: kmsError(400, "UnknownOperationException", "Frobnicate")},
		{name: "KMS operation kmsproxyd does not serve (CreateKey)", send: sendKMS("CreateKey", `{}`),
			want: kmsError(400, "UnknownOperationException", "CreateKey")},
		{name: "KMS operation kmsproxyd does not serve (ScheduleKeyDeletion)", send: sendKMS("ScheduleKeyDeletion", `{"KeyId":"`+keyID+`"}`),
			want: kmsError(400, "UnknownOperationException", "ScheduleKeyDeletion")},
		{name: "missing X-Amz-Target", send: sendHTTP("POST", "/", []header{{"Content-Type", kmsapi.ContentType}}, []byte(`{}`)),
			want: kmsError(400, "UnknownOperationException", "Unknown operation")},
		{name: "another service's target", send: sendHTTP("POST", "/", []header{{"Content-Type", kmsapi.ContentType}, {"X-Amz-Target", "DynamoDB_20120810.GetItem"}}, []byte(`{}`)),
			want: kmsError(400, "UnknownOperationException", "DynamoDB")},
		{name: "target with a path", send: sendKMS("../Decrypt", `{}`),
			want: kmsError(400, "UnknownOperationException", "Unknown operation")},
		{name: "empty operation", send: sendKMS("", `{}`),
			want: kmsError(400, "UnknownOperationException", "Unknown operation")},
		{name: "GET /", send: sendHTTP("GET", "/", kmsHeaders("Decrypt"), nil),
			want: kmsError(405, "UnknownOperationException", "POST")},
		{name: "PUT /", send: sendHTTP("PUT", "/", kmsHeaders("Decrypt"), []byte(`{}`)),
			want: kmsError(405, "UnknownOperationException", "POST")},
		{name: "wrong content type", send: sendHTTP("POST", "/", []header{{"Content-Type", "text/plain"}, {"X-Amz-Target", "TrentService.GenerateRandom"}}, []byte(`{"NumberOfBytes":8}`)),
			want: kmsError(400, "SerializationException", "Content-Type")},
		{name: "malformed content type", send: sendHTTP("POST", "/", []header{{"Content-Type", "application/x-amz-json-1.1; ="}, {"X-Amz-Target", "TrentService.GenerateRandom"}}, []byte(`{"NumberOfBytes":8}`)),
			want: kmsError(400, "SerializationException", "Content-Type")},
		// ---- HTTP itself ----
		{name: "truncated body (Content-Length 100, 10 sent, write side shut)",
			send: halfClose(rawHTTP("POST", "/", append(kmsHeaders("GenerateRandom"), header{"Content-Length", "100"}), []byte(`{"NumberOf`))),
			want: kmsError(400, "SerializationException", "request body")},
		{name: "truncated body, connection closed", send: func(t testing.TB, c net.Conn) {
			sendRaw(rawHTTP("POST", "/", append(kmsHeaders("GenerateRandom"), header{"Content-Length", "100"}), []byte(`{"NumberOf`)))(t, c)
			c.Close()
		}, want: closedWithout}, // closed by the client: what counts is that kmsproxyd keeps serving
		{name: "truncated headers, write side shut", send: halfClose([]byte("POST / HTTP/1.1\r\nHost: kmsproxy.enclave\r\nX-Amz-Tar")),
			want: plainStatus(400)},
		{name: "slow headers (slowloris)", send: slowHeaders, want: closedWithout},
		{name: "headers over 16 KiB", send: sendHTTP("POST", "/", append(kmsHeaders("GenerateRandom"), header{"X-Pad", strings.Repeat("p", proxy.MaxHeaderBytes+8<<10)}), []byte(`{"NumberOfBytes":8}`)),
			want: plainStatus(431)},
		{name: "garbage bytes", send: sendRaw([]byte("\x00\x01\x02\x03 this is not HTTP \xff\xfe\r\n\r\n")),
			want: plainStatus(400)},
		{name: "TLS ClientHello on the plain listener", send: sendRaw([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + strings.Repeat("\x00", 40) + "\r\n\r\n")),
			want: plainStatus(400)},
		{name: "HTTP/2 preface", send: sendRaw([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")),
			want: notServed},
		{name: "header line without a colon", send: sendRaw([]byte("POST / HTTP/1.1\r\nHost: kmsproxy.enclave\r\nX-Amz-Target TrentService.GenerateRandom\r\nContent-Length: 2\r\n\r\n{}")),
			want: plainStatus(400)},
		{name: "conflicting Content-Length headers", send: sendHTTP("POST", "/", append(kmsHeaders("GenerateRandom"), header{"Content-Length", "2"}, header{"Content-Length", "3"}), []byte(`{}`)),
			want: plainStatus(400)},
		{name: "unknown path", send: sendHTTP("GET", "/v2/keys", nil, nil),
			want: kmsError(404, "UnknownOperationException", "no such endpoint")},
		// ---- control endpoints ----
		{name: "attestation: malformed JSON", send: sendHTTP("POST", "/v1/attestation", jsonCT(), []byte(`{"nonce":`)),
			want: kmsError(400, "SerializationException", "malformed JSON")},
		{name: "attestation: unknown field", send: sendHTTP("POST", "/v1/attestation", jsonCT(), []byte(`{"nonce":"AAAA","public_key":"AAAA"}`)),
			want: kmsError(400, "SerializationException", "malformed JSON")},
		{name: "attestation: nonce not base64", send: sendHTTP("POST", "/v1/attestation", jsonCT(), []byte(`{"nonce":"***"}`)),
			want: kmsError(400, "SerializationException", "malformed JSON")},
		{name: "attestation: nonce at the 1024-byte limit", send: sendHTTP("POST", "/v1/attestation", jsonCT(), attestationBody(1024, 0)),
			want: okJSON(b64Field("document", -1))},
		{name: "attestation: nonce one past the limit", send: sendHTTP("POST", "/v1/attestation", jsonCT(), attestationBody(1025, 0)),
			want: kmsError(400, "ValidationException", "nonce")},
		{name: "attestation: user data one past the limit", send: sendHTTP("POST", "/v1/attestation", jsonCT(), attestationBody(0, 1025)),
			want: kmsError(400, "ValidationException", "user_data")},
		{name: "attestation: body over 16 KiB", send: sendHTTP("POST", "/v1/attestation", jsonCT(), []byte(`{"nonce":"`+strings.Repeat("A", 20<<10)+`"}`)),
			want: kmsError(400, "ValidationException", "16384")},
		{name: "attestation: GET", send: sendHTTP("GET", "/v1/attestation", nil, nil),
			want: kmsError(405, "UnknownOperationException", "")},
		{name: "credentials: malformed JSON", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), []byte(`{"AccessKeyId":`)),
			want: kmsError(400, "ValidationException", "malformed JSON")},
		{name: "credentials: IMDS member name Token", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), []byte(`{"AccessKeyId":"`+role.accessKeyID+`","SecretAccessKey":"`+role.secret+`","Token":"x"}`)),
			want: kmsError(400, "ValidationException", "SessionToken")},
		{name: "credentials: missing SecretAccessKey", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), []byte(`{"AccessKeyId":"`+role.accessKeyID+`","SessionToken":"x"}`)),
			want: kmsError(400, "ValidationException", "SecretAccessKey")},
		{name: "credentials: expired", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), pushBody(role, time.Now().Add(-time.Minute))),
			want: kmsError(400, "ValidationException", "Expiration")},
		{name: "credentials: long-term key with a session token", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), pushBody(awsCreds{"AKIAE2ELONGTERM00001", role.secret, "token"}, hour)),
			want: kmsError(400, "ValidationException", "SessionToken")},
		{name: "credentials: session token at the limit", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), pushBody(bigTokenRole, hour)),
			want: okJSON(func(m map[string]any) error {
				if m["ready"] != true {
					return fmt.Errorf("status %v, want ready", m)
				}
				return nil
			})},
		{name: "credentials: session token one past the limit", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), pushBody(awsCreds{role.accessKeyID, role.secret, pastLimit}, hour)),
			want: kmsError(400, "ValidationException", "SessionToken")},
		{name: "credentials: body of 1 MiB", send: sendHTTP("PUT", "/v1/credentials", jsonCT(), pushBody(awsCreds{role.accessKeyID, role.secret, strings.Repeat("T", 1<<20)}, hour)),
			want: kmsError(400, "ValidationException", "limit")},
		{name: "credentials: GET", send: sendHTTP("GET", "/v1/credentials", nil, nil),
			want: kmsError(405, "UnknownOperationException", "")},
		{name: "credentials: push on the local listener", door: localDoor, send: sendHTTP("PUT", "/v1/credentials", jsonCT(), pushBody(role, hour)),
			want: kmsError(403, "AccessDeniedException", "kmsproxyd policy: listener \"local\" may not push credentials")},
		{name: "metrics: POST", send: sendHTTP("POST", "/metrics", nil, []byte("x")),
			want: kmsError(405, "UnknownOperationException", "")},
		{name: "healthz: DELETE", send: sendHTTP("DELETE", "/healthz", nil, nil),
			want: kmsError(405, "UnknownOperationException", "")},
		{name: "local listener: unknown operation", door: localDoor, send: sendKMS("Frobnicate", `{}`),
			want: kmsError(400, "UnknownOperationException", "Frobnicate")},
		{name: "local listener: garbage bytes", door: localDoor, send: sendRaw([]byte("\x00\x01garbage\r\n\r\n")),
			want: plainStatus(400)},
	}

	doors := map[string]string{parentDoor: s.parentAddr, localDoor: s.localAddr}
	good := map[string]func(context.Context) error{}
	for name, addr := range doors {
		c, err := clientFor(addr)
		if err != nil {
			t.Fatal(err)
		}
		good[name] = func(ctx context.Context) error {
			out, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
			if err == nil && len(out.Plaintext) != 16 {
				err = fmt.Errorf("GenerateRandom answered %d bytes", len(out.Plaintext))
			}
			return err
		}
	}
	t.Logf("%d cases at kmsproxyd's doors", len(cases))
	t.Run("door", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				door := tc.door
				if door == "" {
					door = parentDoor
				}
				a := knock(t, doors[door], tc.send)
				if err := tc.want(a); err != nil {
					t.Error(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := good[door](ctx); err != nil {
					t.Errorf("kmsproxyd stopped serving after this input: %v", err)
				}
			})
		}
	})
	if s.kmsproxyd.exited() {
		t.Fatalf("kmsproxyd exited\n%s", s.kmsproxyd.log)
	}
	checkControlEndpoints(t, sc, s.parentAddr)
	hc, _ := client.HTTPClient(s.parentAddr)
	if n, err := metric(hc, "kmsproxy_handler_panics_total"); err != nil || n != 0 {
		t.Errorf("kmsproxy_handler_panics_total = %v (%v), want 0", n, err)
	}
}

// notServed wants anything but a success: an error status or a close.
func notServed(a answer) error {
	if !a.closed && a.status < 400 {
		return fmt.Errorf("got %s; want an error status or a close", a)
	}
	return nil
}

// chunked is a chunked GenerateRandom request whose body is n bytes.
func chunked(n int) []byte {
	var b bytes.Buffer
	b.Write(rawHTTP("POST", "/", append(kmsHeaders("GenerateRandom"), header{"Transfer-Encoding", "chunked"}), nil))
	body := padded(n)
	for len(body) > 0 {
		k := min(len(body), 8192)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", k, body[:k])
		body = body[k:]
	}
	b.WriteString("0\r\n\r\n")
	return b.Bytes()
}

func attestationBody(nonce, userData int) []byte {
	m := map[string][]byte{}
	if nonce > 0 {
		m["nonce"] = bytes.Repeat([]byte{'n'}, nonce)
	}
	if userData > 0 {
		m["user_data"] = bytes.Repeat([]byte{'u'}, userData)
	}
	b, _ := json.Marshal(m)
	return b
}

// slowHeaders sends a request line and part of a header, then one more
// byte every 700ms: kmsproxyd must drop the connection once
// proxy.ReadHeaderTimeout (5s) has passed since the request began, however
// steadily the bytes come. It returns when the server has closed the
// connection (or after ReadHeaderTimeout plus 5s).
func slowHeaders(t testing.TB, c net.Conn) {
	start := time.Now()
	if _, err := c.Write([]byte("POST / HTTP/1.1\r\nHost: kmsproxy.enclave\r\nX-Amz-Target: TrentService.Gen")); err != nil {
		t.Fatal(err)
	}
	rest := []byte("erateRandom\r\n")
	limit := proxy.ReadHeaderTimeout + 5*time.Second
	for i := 0; i < 100 && time.Since(start) < limit; i++ {
		time.Sleep(700 * time.Millisecond)
		if _, err := c.Write(rest[i%len(rest) : i%len(rest)+1]); err != nil {
			break // the server closed
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				break // EOF or reset: closed
			}
		}
	}
	took := time.Since(start)
	t.Logf("slow headers: connection closed by kmsproxyd after %s (ReadHeaderTimeout %s)", took.Round(100*time.Millisecond), proxy.ReadHeaderTimeout)
	if took < proxy.ReadHeaderTimeout-time.Second {
		t.Errorf("kmsproxyd dropped a client still sending headers after %s, before ReadHeaderTimeout %s", took, proxy.ReadHeaderTimeout)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
}

// kmsproxydStartCase is a configuration kmsproxyd must refuse to start
// with.
type kmsproxydStartCase struct {
	name     string
	args     []string          // appended to a valid command line (later flags win)
	env      []string          // KMSPROXY_ variables
	files    map[string]string // written to the test directory first
	wantCode int               // 2: flag or configuration error; 1: a file that does not parse
	wantMsg  string            // in stderr
}

// TestBadConfigKmsproxyd runs kmsproxyd with malformed flags, environment,
// policy and measurement files: it must refuse to start with exit status 2
// for a flag error and 1 for a bad file, naming the problem (and for the
// policy file, the line).
func TestBadConfigKmsproxyd(t *testing.T) {
	bin := build(t) // before the watchdog starts
	sc := newScan(t)
	sc.AddSecret("role secret access key", []byte(role.secret))
	sc.AddSecret("role session token", []byte(role.token))
	dir := shortTempDir(t)
	if _, err := run(t, sc, "kmsproxyctl dev ca", harness.CleanEnv(), nil, ctlTimeout, bin.kmsproxyctl, "dev", "ca", "--out", dir+"/simca"); err != nil {
		t.Fatal(err)
	}
	big := "listeners:\n  parent:\n    operations: [\"*\"]\n#" + strings.Repeat("x", 64<<10) + "\n"
	cases := []kmsproxydStartCase{
		{name: "unknown flag", args: []string{"--frobnicate"}, wantCode: 2, wantMsg: "frobnicate"},
		{name: "positional argument", args: []string{"extra"}, wantCode: 2, wantMsg: `unexpected argument "extra"`},
		{name: "unknown credentials source", args: []string{"--credentials", "vault"}, wantCode: 2, wantMsg: "--credentials"},
		{name: "key size KMS does not take", args: []string{"--key-bits", "1024"}, wantCode: 2, wantMsg: "--key-bits"},
		{name: "zero upstream connections", args: []string{"--upstream-conns", "0"}, wantCode: 2, wantMsg: "--upstream-conns"},
		{name: "negative request timeout", args: []string{"--request-timeout", "-1s"}, wantCode: 2, wantMsg: "--request-timeout"},
		{name: "key rotation too fast", args: []string{"--key-rotation", "10ms"}, wantCode: 2, wantMsg: "--key-rotation"},
		{name: "not a duration", args: []string{"--attestation-ttl", "soon"}, wantCode: 2, wantMsg: "attestation-ttl"},
		{name: "bad listen address", args: []string{"--listen-parent", "ftp://host:21"}, wantCode: 2, wantMsg: "--listen-parent"},
		{name: "vsock dial without CID", args: []string{"--kms-dial", "vsock://:8000"}, wantCode: 2, wantMsg: "--kms-dial"},
		{name: "missing --kms-ca file", args: []string{"--kms-ca", dir + "/no-such-ca.pem"}, wantCode: 2, wantMsg: "--kms-ca"},
		{name: "simulated NSM without its CA", args: []string{"--sim-ca", ""}, wantCode: 2, wantMsg: "--sim-ca"},
		{name: "unknown log level", args: []string{"--log-level", "loud"}, wantCode: 2, wantMsg: "--log-level"},
		{name: "bad value in the environment", env: []string{"KMSPROXY_MAX_INFLIGHT=lots"}, wantCode: 2, wantMsg: "KMSPROXY_MAX_INFLIGHT"},
		{name: "credentials from env without region", args: []string{"--region", ""}, wantCode: 2, wantMsg: "--region"},
		{name: "policy: YAML syntax error", files: map[string]string{"p.yaml": "listeners:\n  parent:\n    operations: [Decrypt\n  local: x\n"},
			args: []string{"--policy", dir + "/p.yaml"}, wantCode: 1, wantMsg: "p.yaml:"},
		{name: "policy: unknown operation", files: map[string]string{"p.yaml": "listeners:\n  parent:\n    operations: [Decrypt, Frobnicate]\n"},
			args: []string{"--policy", dir + "/p.yaml"}, wantCode: 1, wantMsg: "p.yaml:3:"},
		{name: "policy: unknown field", files: map[string]string{"p.yaml": "listeners:\n  parent:\n    operations: [Decrypt]\n    bogus: true\n"},
			args: []string{"--policy", dir + "/p.yaml"}, wantCode: 1, wantMsg: "p.yaml:4:"},
		{name: "policy: unknown listener", files: map[string]string{"p.yaml": "listeners:\n  parent:\n    operations: [Decrypt]\n    plaintext: true\n  sideways:\n    operations: [Decrypt]\n"},
			args: []string{"--policy", dir + "/p.yaml"}, wantCode: 1, wantMsg: "p.yaml:5:"},
		{name: "policy: wrong type", files: map[string]string{"p.yaml": "listeners:\n  parent:\n    plaintext: maybe\n"},
			args: []string{"--policy", dir + "/p.yaml"}, wantCode: 1, wantMsg: "p.yaml:3:"},
		{name: "policy: over the size limit", files: map[string]string{"p.yaml": big},
			args: []string{"--policy", dir + "/p.yaml"}, wantCode: 1, wantMsg: "65536"},
		{name: "policy: missing file", args: []string{"--policy", dir + "/none.yaml"}, wantCode: 1, wantMsg: "none.yaml"},
		{name: "measurements: not JSON", files: map[string]string{"m.json": "PCR0=00"},
			args: []string{"--sim-pcrs", dir + "/m.json"}, wantCode: 1, wantMsg: "m.json"},
		{name: "simulator CA: missing directory", args: []string{"--sim-ca", dir + "/no-ca"}, wantCode: 1, wantMsg: "no-ca"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for name, body := range tc.files {
				if err := os.WriteFile(dir+"/"+name, []byte(body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{bin.kmsproxyd, "--nsm", "sim", "--sim-ca", dir + "/simca", "--region", region,
				"--credentials", "env", "--kms-endpoint", "https://localhost:1", "--kms-dial", "unix://" + dir + "/no-kms.sock",
				"--listen-parent", "unix://" + dir + "/p.sock", "--listen-local", "", "--log-format", "text"}
			// The role's credentials are in the environment: a kmsproxyd
			// refusing to start must not print them either.
			env := harness.CleanEnv(append(role.env(), tc.env...)...)
			_, err := run(t, sc, "kmsproxyd ("+tc.name+")", env, nil, 30*time.Second, append(args, tc.args...)...)
			code := exitCode(err)
			var re *runError
			stderr := ""
			if errors.As(err, &re) {
				stderr = re.stderr
			}
			if code != tc.wantCode || !strings.Contains(stderr, tc.wantMsg) {
				t.Errorf("exit %d (%v); want %d with %q in:\n%s", code, err, tc.wantCode, tc.wantMsg, stderr)
			}
		})
	}
}

// TestBadInputDevKMS knocks on devkms's own doors: its fault-injection
// endpoint, unsigned and wrongly signed KMS calls, and bad start-up files.
func TestBadInputDevKMS(t *testing.T) {
	build(t) // before the watchdog starts
	sc := newScan(t)
	s := startStack(t, sc, stackOptions{})
	hc, err := s.devkmsHTTP()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("https://localhost:%d", s.kmsPort)
	op := s.operatorKMS(t)
	type devkmsCase struct {
		name, method, path string
		headers            []header
		body               string
		wantStatus         int
		wantText           string // in the body
	}
	cases := []devkmsCase{
		{"faults: malformed JSON", "PUT", "/devkms/faults", nil, `{"throttle_rate":`, 400, "unexpected end of JSON input"},
		{"faults: rate above 1", "PUT", "/devkms/faults", nil, `{"throttle_rate":2}`, 400, "throttle rate"},
		{"faults: negative error rate", "PUT", "/devkms/faults", nil, `{"error_rate":-0.5}`, 400, "error rate"},
		{"faults: unknown member", "PUT", "/devkms/faults", nil, `{"throtle_rate":0.5}`, 400, "throtle_rate"},
		{"faults: latency not a duration", "PUT", "/devkms/faults", nil, `{"latency":"forever"}`, 400, "latency"},
		{"faults: latency over the limit", "PUT", "/devkms/faults", nil, `{"latency":"2h"}`, 400, "latency"},
		{"faults: body over 4 KiB", "PUT", "/devkms/faults", nil, `{"latency":"` + strings.Repeat("1", 5000) + `ms"}`, 413, "4096"},
		{"faults: DELETE", "DELETE", "/devkms/faults", nil, "", 405, "GET or PUT"},
		{"unknown control endpoint", "GET", "/devkms/secrets", nil, "", 404, "unknown devkms control endpoint"},
		// AWS answers a request without any signature with 403
		// MissingAuthenticationTokenException "Missing Authentication Token".
		{"KMS call without a signature", "POST", "/", kmsHeaders("GenerateRandom"), `{"NumberOfBytes":8}`, 403, "MissingAuthenticationTokenException"},
		{"KMS call with a malformed Authorization", "POST", "/", append(kmsHeaders("GenerateRandom"), header{"Authorization", "AWS4-HMAC-SHA256 garbage"}), `{"NumberOfBytes":8}`, 400, "IncompleteSignature"},
		{"signed KMS call: malformed JSON", "POST", "/", kmsHeaders("GenerateRandom"), `{"NumberOfBytes":`, 400, "SerializationException"},
		{"signed KMS call: body past the 64 KiB limit", "POST", "/", kmsHeaders("GenerateRandom"), padded(kmsapi.MaxRequestBody + 1), 400, "ValidationException"},
		{"signed KMS call: unknown operation", "POST", "/", kmsHeaders("Frobnicate"), `{}`, 400, "UnknownOperationException"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			for _, h := range tc.headers {
				req.Header.Set(h.name, h.value)
			}
			if strings.HasPrefix(tc.name, "signed ") {
				sum := sha256.Sum256([]byte(tc.body))
				creds, _ := operator.provider().Retrieve(context.Background())
				if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "kms", region, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus || !strings.Contains(string(body), tc.wantText) {
				t.Errorf("%d %.300q; want %d with %q", resp.StatusCode, body, tc.wantStatus, tc.wantText)
			}
			if _, err := op.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}); err != nil {
				t.Errorf("devkms stopped serving after this input: %v", err)
			}
		})
	}
	t.Run("KMS call signed with a wrong secret", func(t *testing.T) {
		c := kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(base), HTTPClient: hc, Retryer: aws.NopRetryer{},
			Credentials: awsCreds{operator.accessKeyID, "not-the-operator-secret-access-key-00000", ""}.provider()})
		_, err := c.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		if err == nil || !strings.Contains(err.Error(), "InvalidSignatureException") {
			t.Errorf("GenerateRandom with a wrong secret: %v; want InvalidSignatureException", err)
		}
	})
	t.Run("KMS call signed with an unknown key", func(t *testing.T) {
		c := kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(base), HTTPClient: hc, Retryer: aws.NopRetryer{},
			Credentials: awsCreds{"AKIAE2EUNKNOWNKEY001", "an-unknown-secret-access-key-0000000000", ""}.provider()})
		_, err := c.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
		if err == nil || !strings.Contains(err.Error(), "UnrecognizedClientException") {
			t.Errorf("GenerateRandom with an unknown key: %v; want UnrecognizedClientException", err)
		}
	})

	// Start-up: bad files and flags.
	dir := shortTempDir(t)
	files := map[string]string{
		"bad-seed.yaml":  "keys:\n  - id: [not, a, string]\n",
		"bad-creds.yaml": "AKIAE2EOPERATOR00001: {secret_access_key: 1\n",
	}
	for name, body := range files {
		if err := os.WriteFile(dir+"/"+name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantMsg  string
	}{
		{"malformed seed", []string{"--seed", dir + "/bad-seed.yaml"}, 1, "bad-seed.yaml"},
		{"malformed credentials file", []string{"--credentials", dir + "/bad-creds.yaml"}, 1, "bad-creds.yaml"},
		{"throttle rate above 1", []string{"--fault-throttle-rate", "2"}, 2, "throttle rate"},
		{"unknown flag", []string{"--frobnicate"}, 2, "frobnicate"},
	} {
		t.Run("start: "+tc.name, func(t *testing.T) {
			args := append([]string{s.bin.devkms, "--listen", "unix://" + dir + "/d.sock"}, tc.args...)
			_, err := run(t, sc, "devkms ("+tc.name+")", harness.CleanEnv(), nil, 30*time.Second, args...)
			var re *runError
			stderr := ""
			if errors.As(err, &re) {
				stderr = re.stderr
			}
			if code := exitCode(err); code != tc.wantCode || !strings.Contains(stderr, tc.wantMsg) {
				t.Errorf("exit %d (%v); want %d with %q in:\n%s", code, err, tc.wantCode, tc.wantMsg, stderr)
			}
		})
	}
}
