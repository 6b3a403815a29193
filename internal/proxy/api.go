package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/policy"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// Steps of an attested request, as named in metrics, logs and
// KMSInternalException messages.
const (
	stepAttestation = "attestation"
	// stepUpstreamWait is the wait for one of the --upstream-conns
	// connections to KMS, before anything is sent.
	stepUpstreamWait = "upstream_wait"
	stepUpstream     = "upstream"
	stepEnvelope     = "envelope"
)

// steps lists the steps in the order logs show them.
var steps = [...]string{stepAttestation, stepUpstreamWait, stepUpstream, stepEnvelope}

// request is the state of one KMS API request.
type request struct {
	id       string
	listener string
	op       string
	rules    *policy.Rules
	keyID    string
	// requested and present record the request's key members (in
	// keyMembers order) for checkAnswer.
	requested [3]string
	present   [3]bool
	steps     [len(steps)]time.Duration // by the index of its name in steps
	// cache is "hit" or "miss" for a Decrypt on a listener with a decrypt
	// cache, "" otherwise.
	cache string
}

func (rq *request) step(name string, d time.Duration) {
	for i, s := range steps {
		if s == name {
			rq.steps[i] += d
			return
		}
	}
}

// opHandler serves one KMS operation: decode body, check policy, call KMS,
// write the answer.
type opHandler func(s *Server, ctx context.Context, w http.ResponseWriter, rq *request, body []byte) error

// operations maps every KMS operation kmsproxyd serves to its handler.
var operations = map[string]opHandler{
	"Decrypt": attested[kms.DecryptInput, kms.DecryptOutput]{
		call:      (*kms.Client).Decrypt,
		recipient: func(in *kms.DecryptInput) **types.RecipientInfo { return &in.Recipient },
		envelope:  func(out *kms.DecryptOutput) *[]byte { return &out.CiphertextForRecipient },
		plaintext: func(out *kms.DecryptOutput) *[]byte { return &out.Plaintext },
	}.serve,
	"GenerateDataKey": attested[kms.GenerateDataKeyInput, kms.GenerateDataKeyOutput]{
		call:      (*kms.Client).GenerateDataKey,
		recipient: func(in *kms.GenerateDataKeyInput) **types.RecipientInfo { return &in.Recipient },
		envelope:  func(out *kms.GenerateDataKeyOutput) *[]byte { return &out.CiphertextForRecipient },
		plaintext: func(out *kms.GenerateDataKeyOutput) *[]byte { return &out.Plaintext },
	}.serve,
	"GenerateDataKeyPair": attested[kms.GenerateDataKeyPairInput, kms.GenerateDataKeyPairOutput]{
		call:      (*kms.Client).GenerateDataKeyPair,
		recipient: func(in *kms.GenerateDataKeyPairInput) **types.RecipientInfo { return &in.Recipient },
		envelope:  func(out *kms.GenerateDataKeyPairOutput) *[]byte { return &out.CiphertextForRecipient },
		plaintext: func(out *kms.GenerateDataKeyPairOutput) *[]byte { return &out.PrivateKeyPlaintext },
	}.serve,
	"GenerateRandom": attested[kms.GenerateRandomInput, kms.GenerateRandomOutput]{
		call:      (*kms.Client).GenerateRandom,
		recipient: func(in *kms.GenerateRandomInput) **types.RecipientInfo { return &in.Recipient },
		envelope:  func(out *kms.GenerateRandomOutput) *[]byte { return &out.CiphertextForRecipient },
		plaintext: func(out *kms.GenerateRandomOutput) *[]byte { return &out.Plaintext },
	}.serve,
	"DeriveSharedSecret": attested[kms.DeriveSharedSecretInput, kms.DeriveSharedSecretOutput]{
		call:      (*kms.Client).DeriveSharedSecret,
		recipient: func(in *kms.DeriveSharedSecretInput) **types.RecipientInfo { return &in.Recipient },
		envelope:  func(out *kms.DeriveSharedSecretOutput) *[]byte { return &out.CiphertextForRecipient },
		plaintext: func(out *kms.DeriveSharedSecretOutput) *[]byte { return &out.SharedSecret },
	}.serve,

	"Encrypt":                             passThrough((*kms.Client).Encrypt),
	"GenerateDataKeyWithoutPlaintext":     passThrough((*kms.Client).GenerateDataKeyWithoutPlaintext),
	"GenerateDataKeyPairWithoutPlaintext": passThrough((*kms.Client).GenerateDataKeyPairWithoutPlaintext),
	"ReEncrypt":                           passThrough((*kms.Client).ReEncrypt),
	"DescribeKey":                         passThrough((*kms.Client).DescribeKey),
	"GetPublicKey":                        passThrough((*kms.Client).GetPublicKey),
	"Sign":                                passThrough((*kms.Client).Sign),
	"Verify":                              passThrough((*kms.Client).Verify),
	"GenerateMac":                         passThrough((*kms.Client).GenerateMac),
	"VerifyMac":                           passThrough((*kms.Client).VerifyMac),
}

// serveAPI answers POST / : one KMS JSON 1.1 request.
func (l *listenerHandler) serveAPI(w http.ResponseWriter, r *http.Request) {
	s := l.s
	start := time.Now()
	rq := &request{id: newRequestID(), listener: l.name, rules: l.rules}
	w.Header().Set("X-Amzn-RequestId", rq.id)

	err := l.handle(w, r, rq)
	outcome := "ok"
	if err != nil {
		ke := kmsapi.AsError(err, "internal error")
		outcome = outcomeOf(ke)
		kmsapi.WriteError(w, ke)
	}
	d := time.Since(start)
	op := rq.op
	if op == "" {
		op = "unknown"
	}
	s.metrics.requests.WithLabelValues(l.name, op, outcome).Inc()
	if rq.op != "" {
		s.metrics.duration.WithLabelValues(l.name, op).Observe(d.Seconds())
	}
	// The answer (with its Content-Length) leaves now, not when the
	// handler returns: the caller need not wait for the log line, whose
	// write to stderr can block (a console, a full pipe). The metrics
	// above are counted first, so that /metrics read after an answer
	// includes it.
	_ = http.NewResponseController(w).Flush()
	level := slog.LevelInfo
	if err != nil && outcome == kmsapi.KMSInternal {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("request_id", rq.id),
		slog.String("listener", l.name),
		slog.String("operation", op),
		slog.String("outcome", outcome),
		slog.Float64("duration_ms", ms(d)),
	}
	if rq.keyID != "" {
		attrs = append(attrs, slog.String("key_id", rq.keyID))
	}
	if rq.cache != "" {
		attrs = append(attrs, slog.String("cache", rq.cache))
	}
	if rq.steps != [len(steps)]time.Duration{} {
		group := make([]any, 0, len(steps))
		for i, name := range steps {
			group = append(group, slog.Float64(name, ms(rq.steps[i])))
		}
		attrs = append(attrs, slog.Group("steps_ms", group...))
	}
	if err != nil {
		// Our own errors and KMS's messages name keys and checks, never
		// plaintext or key material (kmsapi.AsError hides the rest).
		attrs = append(attrs, slog.String("error", kmsapi.AsError(err, "internal error").Message))
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// outcomePolicyDenied is the outcome of a request kmsproxyd's own policy
// refused, kept apart from KMS's AccessDeniedException in metrics and logs.
const outcomePolicyDenied = "policy_denied"

// outcomeOf is the outcome label of an error answer: the exception name, or
// outcomePolicyDenied for kmsproxyd's policy.
func outcomeOf(ke *kmsapi.Error) string {
	if kmsapi.IsPolicyDenial(ke) {
		return outcomePolicyDenied
	}
	return ke.Type
}

func (l *listenerHandler) handle(w http.ResponseWriter, r *http.Request, rq *request) error {
	s := l.s
	if err := kmsapi.CheckRequest(r); err != nil {
		return err
	}
	op, err := kmsapi.Operation(r)
	if err != nil {
		return err
	}
	h, ok := operations[op]
	if !ok {
		return kmsapi.Errorf(kmsapi.UnknownOperation, "kmsproxyd does not serve %s", op)
	}
	rq.op = op
	if err := l.rules.AllowOperation(op); err != nil {
		return kmsapi.PolicyDenied(err)
	}
	// The body is read before the request takes one of the listener's
	// in-flight slots: a caller that sends headers and then nothing holds a
	// connection (bounded by the listener's connection limit and the read
	// timeout), never a slot.
	r.Body = http.MaxBytesReader(w, r.Body, kmsapi.MaxRequestBody)
	body, err := readBody(r, kmsapi.MaxRequestBody)
	if err != nil {
		return err
	}
	// The body holds what the caller sent in the clear: Encrypt's
	// Plaintext, Sign's and GenerateMac's Message.
	defer clear(body[:cap(body)])
	select {
	case l.inflight <- struct{}{}:
		defer func() { <-l.inflight }()
	default:
		return kmsapi.Errorf(kmsapi.Throttling, "kmsproxyd is serving its maximum of %d concurrent requests on the %s listener; retry with backoff", cap(l.inflight), l.name)
	}
	gauge := s.metrics.inflight.WithLabelValues(l.name)
	gauge.Inc()
	defer gauge.Dec()

	ctx, cancel := s.withTimeout(r.Context())
	defer cancel()
	return h(s, ctx, w, rq, body)
}

// readBody reads a request body of at most max bytes (r.Body is already
// an http.MaxBytesReader) into one buffer, which the caller clears when the
// request ends. AWS SDKs send Content-Length, and then the buffer is made
// to size once; a chunked body grows it, and every outgrown buffer is
// cleared before it is dropped, so no partial copy of the body is left
// behind (io.ReadAll would leave each one to the garbage collector). A
// refused body is cleared before readBody returns, including the byte past
// the limit that http.MaxBytesReader reads to find it too long.
func readBody(r *http.Request, max int64) ([]byte, error) {
	size := int64(512)
	if r.ContentLength >= 0 {
		// One more byte than declared, so the read that finds the end
		// needs no bigger buffer.
		size = min(r.ContentLength, max) + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > max {
				clear(buf[:cap(buf)])
				return nil, kmsapi.Errorf(kmsapi.Validation, "Request body exceeds the %d-byte limit", max)
			}
			bigger := make([]byte, len(buf), min(2*int64(cap(buf)), max+1))
			copy(bigger, buf)
			clear(buf[:cap(buf)])
			buf = bigger
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			clear(buf[:cap(buf)])
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, kmsapi.Errorf(kmsapi.Validation, "Request body exceeds the %d-byte limit", max)
			}
			return nil, kmsapi.Errorf(kmsapi.Serialization, "failed to read request body")
		}
	}
	if int64(len(buf)) > max {
		clear(buf[:cap(buf)])
		return nil, kmsapi.Errorf(kmsapi.Validation, "Request body exceeds the %d-byte limit", max)
	}
	return buf, nil
}

// decodeInput decodes a request body into in. encoding/json's Unmarshal
// reads the body in place; kmsapi.DecodeInput, whose json.Decoder copies
// the body into a buffer of its own that nobody clears, runs only for a
// body Unmarshal refuses, to name the problem as it always has (both accept
// exactly one JSON value with white space around it).
func decodeInput(body []byte, in any) error {
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, in) == nil {
		return nil
	}
	clearSecrets(in)
	reflect.ValueOf(in).Elem().SetZero()
	return kmsapi.DecodeInput(body, in)
}

// secretInputMembers are the request members that carry data in the clear
// (KMS API reference, each operation's Request Syntax): Plaintext
// (Encrypt) and Message (Sign, Verify, GenerateMac, VerifyMac). Every other
// member is an identifier, a ciphertext, a signature, a MAC, a public key
// or an attestation document.
var secretInputMembers = []string{"Plaintext", "Message"}

// clearSecrets zeroes the secretInputMembers of a decoded input (a pointer
// to a kms.<Operation>Input), once the call to KMS has returned.
func clearSecrets(in any) {
	v := reflect.ValueOf(in).Elem()
	for _, name := range secretInputMembers {
		if f := v.FieldByName(name); f.IsValid() && f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Uint8 {
			clear(f.Bytes())
		}
	}
}

// keyMembers pairs each key member of a KMS request with the member of the
// answer that names the key KMS used for it.
var keyMembers = []struct{ request, answer string }{
	{"KeyId", "KeyId"},
	{"SourceKeyId", "SourceKeyId"}, // ReEncrypt
	{"DestinationKeyId", "KeyId"},  // ReEncrypt answers the destination as KeyId
}

// checkInput applies the listener's key and encryption-context rules to a
// decoded input, found by the KMS member names the SDK types share.
func checkInput(rq *request, in any) error {
	v := reflect.ValueOf(in).Elem()
	for i, m := range keyMembers {
		f := v.FieldByName(m.request)
		if !f.IsValid() {
			continue
		}
		id := ""
		if !f.IsNil() {
			id = f.Elem().String()
		}
		rq.requested[i] = id
		rq.present[i] = true
		if m.request == "KeyId" {
			rq.keyID = id
		}
		// An empty id passes only when keys are unrestricted: a listener
		// with key patterns must say which key it means.
		if err := rq.rules.AllowKey(id); err != nil {
			return kmsapi.PolicyDenied(err)
		}
	}
	for _, name := range []string{"EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext"} {
		f := v.FieldByName(name)
		if !f.IsValid() {
			continue
		}
		ec, _ := f.Interface().(map[string]string)
		if err := rq.rules.AllowEncryptionContext(ec); err != nil {
			return kmsapi.PolicyDenied(err)
		}
	}
	return nil
}

// answeredKeys returns, for each key the request named (or could have
// named), the requested identifier and the key ARN KMS answered with. Every
// operation but GenerateRandom names a key in its answer: KeyId (and for
// ReEncrypt SourceKeyId), or for DescribeKey KeyMetadata.Arn (KMS API
// reference, each operation's "Response Syntax").
func answeredKeys(rq *request, out any) (pairs [][2]string, err error) {
	if d, ok := out.(*kms.DescribeKeyOutput); ok {
		arn := ""
		if d.KeyMetadata != nil {
			arn = aws.ToString(d.KeyMetadata.Arn)
			// KMS answers the key's account twice; an answer whose two
			// disagree names no account kmsproxyd could check.
			if acct := aws.ToString(d.KeyMetadata.AWSAccountId); acct != "" && acct != policy.KeyARNAccount(arn) {
				arn = ""
			}
		}
		return [][2]string{{rq.requested[0], arn}}, nil
	}
	v := reflect.ValueOf(out).Elem()
	for i, m := range keyMembers {
		if !rq.present[i] {
			continue
		}
		answered := ""
		if f := v.FieldByName(m.answer); f.IsValid() && f.Kind() == reflect.Pointer && !f.IsNil() {
			answered = f.Elem().String()
		}
		if m.request == "KeyId" && rq.keyID == "" {
			rq.keyID = answered
		}
		pairs = append(pairs, [2]string{rq.requested[i], answered})
	}
	if len(pairs) == 0 {
		// Every operation that uses a key has a key member; one without
		// would escape the check, so it is refused.
		return nil, fmt.Errorf("no key member in %T", out)
	}
	return pairs, nil
}

// checkAnswer applies the policy's pinned accounts, regions and keys and
// the listener's key rules (policy.Rules.AllowAnsweredKey), then
// kmsproxyd's own region (policy.Home), to the keys KMS says it used,
// before anything of the answer reaches the caller. A refusal is logged
// with the key KMS answered with, for the operator, and counted; the
// caller's AccessDeniedException names only the rule (KMSInternalException
// naming the upstream step for a key outside the region: no policy line
// decides that).
func (s *Server) checkAnswer(rq *request, out any) error {
	if rq.op == "GenerateRandom" {
		return nil // no key: KMS answers random bytes only
	}
	pairs, err := answeredKeys(rq, out)
	if err != nil {
		s.log.Error("KMS answer refused: kmsproxyd cannot find the key in it", "request_id", rq.id, "operation", rq.op, "err", err)
		return kmsapi.Errorf(kmsapi.KMSInternal, "upstream: kmsproxyd cannot tell which key KMS used for %s", rq.op)
	}
	for _, p := range pairs {
		var refusal *kmsapi.Error
		rule := "region"
		if err := rq.rules.AllowAnsweredKey(p[0], p[1]); err != nil {
			rule = "policy"
			var d *policy.Denied
			if errors.As(err, &d) {
				rule = d.Rule
			}
			refusal = kmsapi.PolicyDenied(err)
		} else if !s.home.Contains(p[1]) {
			// Whatever the policy says: KMS uses only keys of the region
			// it is called in (see policy.Home), so an honest KMS never
			// answers so, and no policy line could fix it.
			refusal = kmsapi.Errorf(kmsapi.KMSInternal, "upstream: KMS answered %s with a key outside the region kmsproxyd signs for, %s (partition %s), "+
				"which KMS never does; nothing of the answer was returned", rq.op, s.home.Region, s.home.Partition)
		} else {
			continue
		}
		s.metrics.answersRefused.WithLabelValues(rq.listener, rq.op, rule).Inc()
		s.log.Warn("KMS answer refused: the key it names is not one the policy allows; nothing of the answer was returned",
			"request_id", rq.id, "listener", rq.listener, "operation", rq.op, "rule", rule,
			"requested_key", p[0], "answered_key", p[1])
		return refusal
	}
	return nil
}

// secretMembers names the answer member that carries each attested
// operation's secret (KMS API reference, each operation's Response Syntax).
var secretMembers = map[string]string{
	"Decrypt":             "Plaintext",
	"GenerateDataKey":     "Plaintext",
	"GenerateDataKeyPair": "PrivateKeyPlaintext",
	"GenerateRandom":      "Plaintext",
	"DeriveSharedSecret":  "SharedSecret",
}

// attested serves an operation that returns a secret: kmsproxyd attaches the
// enclave's Recipient and opens the envelope KMS answers with.
type attested[In, Out any] struct {
	call      func(*kms.Client, context.Context, *In, ...func(*kms.Options)) (*Out, error)
	recipient func(*In) **types.RecipientInfo
	envelope  func(*Out) *[]byte
	plaintext func(*Out) *[]byte
}

func (a attested[In, Out]) serve(s *Server, ctx context.Context, w http.ResponseWriter, rq *request, body []byte) error {
	in := new(In)
	defer clearSecrets(in)
	if err := decodeInput(body, in); err != nil {
		return err
	}
	if err := checkInput(rq, in); err != nil {
		return err
	}
	rcpt := a.recipient(in)
	if *rcpt != nil {
		// The caller attested itself: pass the request through untouched.
		// KMS answers a Recipient with CiphertextForRecipient only, so the
		// listener's plaintext rule has nothing to govern, provided the
		// Recipient really is one: a document KMS must verify, and an
		// answer without the secret in the clear.
		if len((*rcpt).AttestationDocument) == 0 {
			return kmsapi.Errorf(kmsapi.Validation, "Recipient has no AttestationDocument: a request that carries its own Recipient "+
				"must attest its caller, and kmsproxyd passes it to KMS as it is; omit Recipient to have kmsproxyd attest the enclave")
		}
		return s.relay(ctx, w, rq, func(c *kms.Client) (any, error) {
			out, err := a.call(c, ctx, in)
			if err != nil {
				return nil, err
			}
			if pt := a.plaintext(out); *pt != nil {
				clear(*pt)
				s.log.Error("KMS answer refused: it carries the secret in the clear although the request carried a Recipient; nothing of the answer was returned",
					"request_id", rq.id, "listener", rq.listener, "operation", rq.op, "member", secretMembers[rq.op])
				return nil, kmsapi.Errorf(kmsapi.KMSInternal, "upstream: KMS answered a %s that carries its own Recipient with %s in the clear, "+
					"where it encrypts the secret to the Recipient only; kmsproxyd returned nothing of the answer", rq.op, secretMembers[rq.op])
			}
			return out, s.checkAnswer(rq, out)
		})
	}
	if err := rq.rules.AllowPlaintext(rq.op); err != nil {
		return kmsapi.PolicyDenied(err)
	}
	ck, hit := s.fromCache(ctx, w, rq, in)
	if hit {
		return nil
	}

	t := time.Now()
	lease, err := s.cfg.Recipient.Acquire(ctx)
	d := time.Since(t)
	s.observe(rq, stepAttestation, d)
	if err != nil {
		if ctx.Err() != nil {
			return kmsapi.Errorf(kmsapi.DependencyTimeout, "attestation: no attestation document within the request timeout")
		}
		return kmsapi.Errorf(kmsapi.KMSInternal, "attestation: failed to obtain an attestation document from the NSM")
	}
	defer lease.Release()
	*rcpt = &types.RecipientInfo{
		AttestationDocument:    lease.Document(),
		KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
	}

	var out *Out
	if err := s.callKMS(ctx, rq, func(c *kms.Client) error {
		var err error
		out, err = a.call(c, ctx, in, ck.options()...)
		return err
	}); err != nil {
		ke := upstream.ToKMSError(err)
		s.noteAttested(rq, in, ke)
		return ke
	}
	s.noteAttested(rq, in, nil)
	if err := s.checkAnswer(rq, out); err != nil {
		return err
	}
	env := a.envelope(out)
	if len(*env) == 0 {
		return kmsapi.Errorf(kmsapi.KMSInternal, "envelope: KMS answered without CiphertextForRecipient")
	}

	t = time.Now()
	// At most GOMAXPROCS envelopes are opened at once: the RSA decryption
	// is pure CPU, so more would only slow each other down and keep more
	// requests half-done in memory; waiting callers are served in turn.
	select {
	case s.decrypts <- struct{}{}:
	case <-ctx.Done():
		return kmsapi.Errorf(kmsapi.KMSInternal, "envelope: no CPU was free to decrypt CiphertextForRecipient before the request's deadline")
	}
	pt, err := func() ([]byte, error) {
		defer func() { <-s.decrypts }() // also if Decrypt panics
		return lease.Decrypt(*env)
	}()
	d = time.Since(t)
	s.observe(rq, stepEnvelope, d)
	if err != nil {
		s.log.Warn("failed to open CiphertextForRecipient", "request_id", rq.id, "step", stepEnvelope, "err", err)
		return kmsapi.Errorf(kmsapi.KMSInternal, "envelope: failed to decrypt CiphertextForRecipient")
	}
	defer clear(pt)
	*env = nil
	*a.plaintext(out) = pt
	ck.write(w, out, len(pt))
	return nil
}

// httpWriteBuffer is the larger of net/http's two write buffers on a
// server connection: each response writes through a 2 KiB buffer into the
// connection's 4 KiB one (net/http server.go: bufferBeforeChunkingSize,
// and newBufioWriterSize(checkConnErrorWriter{c}, 4<<10)). A bufio.Writer
// hands a write longer than its free space straight to the writer below
// when it holds nothing, without copying it.
const httpWriteBuffer = 4 << 10

// writeSecret writes an answer carrying a secret from a buffer sized so it
// never grows, then clears the buffer. An answer longer than
// httpWriteBuffer is written after the headers have been flushed (writeOK),
// so both of net/http's buffers are empty and pass it to the connection
// without a copy; a shorter one is copied into them and stays there until
// a later answer overwrites it (docs/security.md, "What is zeroed, and
// what is not").
func writeSecret(w http.ResponseWriter, out any, secretLen int) {
	buf := make([]byte, 0, 2*secretLen+4096)
	b, err := kmsapi.AppendOutput(buf, out)
	if err != nil {
		clear(buf[:cap(buf)])
		kmsapi.WriteError(w, kmsapi.Errorf(kmsapi.KMSInternal, "failed to encode the answer"))
		return
	}
	writeAnswer(w, b)
	clear(b[:cap(b)])
}

// writeOK writes an encoded answer, whose headers are set, with status
// 200. One longer than httpWriteBuffer is written after the headers have
// been flushed, so that it reaches the connection from b itself.
func writeOK(w http.ResponseWriter, b []byte) {
	w.WriteHeader(http.StatusOK)
	if len(b) > httpWriteBuffer {
		_ = http.NewResponseController(w).Flush()
	}
	_, _ = w.Write(b)
}

// passThrough serves an operation that involves no plaintext: the request
// goes to KMS as it came and KMS's answer comes back as it was.
func passThrough[In, Out any](call func(*kms.Client, context.Context, *In, ...func(*kms.Options)) (*Out, error)) opHandler {
	return func(s *Server, ctx context.Context, w http.ResponseWriter, rq *request, body []byte) error {
		in := new(In)
		defer clearSecrets(in)
		if err := decodeInput(body, in); err != nil {
			return err
		}
		if err := checkInput(rq, in); err != nil {
			return err
		}
		return s.relay(ctx, w, rq, func(c *kms.Client) (any, error) {
			out, err := call(c, ctx, in)
			if err != nil {
				return nil, err
			}
			return out, s.checkAnswer(rq, out)
		})
	}
}

// callKMS runs call on one of the upstream connections and records its two
// steps: the wait for a connection (upstream_wait) and the call itself,
// SDK retries included (upstream).
func (s *Server) callKMS(ctx context.Context, rq *request, call func(*kms.Client) error) error {
	t := time.Now()
	var started time.Time
	var err error
	if werr := s.cfg.Upstream.Do(ctx, func(c *kms.Client) {
		started = time.Now()
		err = call(c)
	}); werr != nil {
		err = werr // a *upstream.WaitError: never sent
	}
	end := time.Now()
	if started.IsZero() {
		started = end
	}
	s.observe(rq, stepUpstreamWait, started.Sub(t))
	if end.After(started) {
		s.observe(rq, stepUpstream, end.Sub(started))
	}
	return err
}

// observe records one step of a request in its log line and the metrics.
func (s *Server) observe(rq *request, step string, d time.Duration) {
	rq.step(step, d)
	s.metrics.observeStep(rq.listener, step, d)
}

// relay calls KMS and writes its answer.
func (s *Server) relay(ctx context.Context, w http.ResponseWriter, rq *request, call func(*kms.Client) (any, error)) error {
	var out any
	err := s.callKMS(ctx, rq, func(c *kms.Client) error {
		var err error
		out, err = call(c)
		return err
	})
	if err != nil {
		var ke *kmsapi.Error
		if errors.As(err, &ke) {
			return ke
		}
		return upstream.ToKMSError(err)
	}
	kmsapi.WriteOutput(w, out)
	return nil
}
