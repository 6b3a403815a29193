package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

const (
	// enclaveEnv names the environment variable --enclave defaults to.
	enclaveEnv = "KMSPROXY_ENCLAVE"
	// defaultTimeout bounds one command's calls, SDK retries included.
	defaultTimeout = 30 * time.Second
)

// KMS request limits (AWS KMS API Reference, "Length Constraints" of each
// request parameter), checked before sending so the operator gets a clear
// error rather than a ValidationException.
const (
	// maxCiphertextBlob: Decrypt CiphertextBlob, "Minimum length of 1.
	// Maximum length of 6144."
	maxCiphertextBlob = 6144
	// maxPlaintext: Encrypt Plaintext, "Minimum length of 1. Maximum length
	// of 4096."
	maxPlaintext = 4096
	// maxNumberOfBytes: GenerateDataKey and GenerateRandom NumberOfBytes,
	// "Valid Range: Minimum value of 1. Maximum value of 1024."
	maxNumberOfBytes = 1024
	// maxKMSCAFile bounds a --kms-ca bundle (a few certificates; 1 MiB holds
	// a full system bundle).
	maxKMSCAFile = 1 << 20
)

// kmsTarget is where a KMS command sends its call: the enclave, or a KMS
// endpoint directly with the default credential chain.
type kmsTarget struct {
	enclave  string
	endpoint string
	caFile   string
	region   string
	profile  string
	timeout  time.Duration
}

func (t *kmsTarget) register(f *cmdFlags) {
	f.StringVar(&t.enclave, "enclave", "", "kmsproxyd `ADDR`: vsock://CID:PORT, tcp://HOST:PORT or unix:///path (default $"+enclaveEnv+")")
	f.StringVar(&t.endpoint, "kms-endpoint", "", "call the KMS at `URL` directly instead of the enclave, with the default AWS credential chain")
	f.StringVar(&t.caFile, "kms-ca", "", "extra trusted CA certificates for --kms-endpoint, PEM `FILE` (e.g. devkms's ca.pem)")
	f.StringVar(&t.region, "region", "", "AWS `REGION` for --kms-endpoint (default from AWS_REGION or the shared config)")
	f.StringVar(&t.profile, "profile", "", "shared config `PROFILE` for --kms-endpoint credentials")
	f.DurationVar(&t.timeout, "timeout", defaultTimeout, "give up after this `DURATION`, retries included")
}

// validate picks the target: --enclave, else --kms-endpoint, else
// $KMSPROXY_ENCLAVE.
func (t *kmsTarget) validate(f *cmdFlags, e *env) error {
	switch {
	case t.enclave != "" && t.endpoint != "":
		return f.usageError("give --enclave or --kms-endpoint, not both")
	case t.endpoint == "" && t.enclave == "":
		t.enclave = e.getenv(enclaveEnv)
		if t.enclave == "" {
			return f.usageError("missing --enclave (or %s), or --kms-endpoint", enclaveEnv)
		}
	}
	if t.enclave != "" {
		if err := checkEnclave(f, t.enclave); err != nil {
			return err
		}
	}
	if t.enclave != "" && (t.caFile != "" || t.region != "" || t.profile != "") {
		return f.usageError("--kms-ca, --region and --profile go with --kms-endpoint, not --enclave")
	}
	if t.endpoint != "" && !strings.HasPrefix(t.endpoint, "https://") && !strings.HasPrefix(t.endpoint, "http://") {
		return f.usageError("--kms-endpoint %q: want an http:// or https:// URL", t.endpoint)
	}
	if t.timeout <= 0 {
		return f.usageError("--timeout must be positive")
	}
	return nil
}

// checkEnclave checks an enclave address given to --enclave, as a usage
// error of f.
func checkEnclave(f *cmdFlags, s string) error {
	if err := enclaveAddrError(s); err != nil {
		return f.usageError("%v", err)
	}
	return nil
}

// enclaveAddrError says what is wrong with an --enclave address, if
// anything: it must parse and be dialable (a vsock address needs the
// enclave's CID).
func enclaveAddrError(s string) error {
	a, err := transport.Parse(s)
	if err != nil {
		return fmt.Errorf("--enclave: %w", err)
	}
	if a.Network == transport.VSOCK && a.CID == transport.AnyCID {
		return fmt.Errorf("--enclave %s has no CID: from the parent, dial vsock://<enclave CID>:<port> (nitro-cli describe-enclaves shows the CID)", s)
	}
	return nil
}

// client returns the KMS client for the target.
func (t *kmsTarget) client(ctx context.Context) (*kms.Client, error) {
	if t.enclave != "" {
		return client.New(ctx, t.enclave)
	}
	var opts []func(*config.LoadOptions) error
	if t.region != "" {
		opts = append(opts, config.WithRegion(t.region))
	}
	if t.profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(t.profile))
	}
	if t.caFile != "" {
		pem, err := readFile("kms-ca", t.caFile, maxKMSCAFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, config.WithCustomCABundle(bytes.NewReader(pem)))
	}
	// A certificate that does not verify will not verify on a retry: fail
	// at once, with the hint, instead of after the SDK's three attempts.
	opts = append(opts, config.WithRetryer(func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(notTLSVerification)}, o.Retryables...)
		})
	}))
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to load the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, withHint(errors.New("no AWS region for --kms-endpoint"), "pass --region or set AWS_REGION")
	}
	return kms.NewFromConfig(cfg, func(o *kms.Options) { o.BaseEndpoint = aws.String(t.endpoint) }), nil
}

// notTLSVerification marks TLS certificate verification failures as not
// retryable and leaves every other error to the SDK's own rules.
func notTLSVerification(err error) aws.Ternary {
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// where names the target in messages.
func (t *kmsTarget) where() string {
	if t.enclave != "" {
		return "the enclave at " + t.enclave
	}
	return "KMS at " + t.endpoint
}

// callError turns an SDK error into kmsproxyctl's message: a KMS error as
// "<Exception>: <message>", a connection failure with where it went, each
// with the hint that fits its real cause.
func (t *kmsTarget) callError(op string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		msg := fmt.Errorf("%s: %s", apiErr.ErrorCode(), apiErr.ErrorMessage())
		if apiErr.ErrorMessage() == "" {
			msg = errors.New(apiErr.ErrorCode())
		}
		switch apiErr.ErrorCode() {
		case kmsapi.AccessDenied:
			if client.IsPolicyDenial(err) {
				return withHint(msg, "kmsproxyd's own policy refused %s, not KMS: the rule is named in (policy: ...); the policy file is part of the enclave image, so changing it means rebuilding the image (and new measurements in the key policy)", op)
			}
			if t.enclave != "" {
				return withHint(msg, "KMS refused %s (the key policy, an IAM policy or a grant); \"kmsproxyctl policy check\" shows which key policy condition fails for the measurements the enclave (or attested instance) reports (kmsproxyctl attest fetch)", op)
			}
			return withHint(msg, "a key policy bound to an enclave's (or an instance's NitroTPM) measurements refuses calls without attestation; \"kmsproxyctl policy check --unattested\" explains the decision")
		case "UnrecognizedClientException", "InvalidSignatureException", "MissingAuthenticationTokenException", kmsapi.ExpiredToken:
			return withHint(msg, "the AWS credentials were refused; check AWS_PROFILE, AWS_ACCESS_KEY_ID or the instance role")
		case "InvalidCiphertextException":
			// KMS answers InvalidCiphertextException, often with an empty
			// message, when the encryption context differs from the one
			// the ciphertext was made with: the context is authenticated
			// data, so KMS cannot tell it from a damaged ciphertext (AWS
			// KMS Developer Guide, "Encryption context": "If the
			// encryption context ... does not match, the decrypt request
			// fails"; InvalidCiphertextException in the Decrypt API
			// reference).
			return withHint(msg, "the usual cause is a missing or different encryption context: pass exactly the --encryption-context pairs the data was encrypted with; otherwise the ciphertext is damaged or not a KMS ciphertext")
		case kmsapi.Throttling:
			if strings.Contains(apiErr.ErrorMessage(), "--upstream-conns") {
				return withHint(msg, "kmsproxyd's connections to KMS were all busy: retry with backoff, or raise kmsproxyd's --upstream-conns with the vsock-proxy's workers")
			}
			return withHint(msg, "retry with backoff (the AWS SDKs do); KMS or kmsproxyd is at its request limit")
		case "IncorrectKeyException":
			return withHint(msg, "--key-id must name the key the ciphertext was encrypted under; leave it out for symmetric keys")
		case kmsapi.DependencyTimeout:
			if t.enclave != "" {
				return withHint(fmt.Errorf("KMS did not answer kmsproxyd in time (%s)", msg),
					"kmsproxyd reached no KMS answer within its --request-timeout, retries included; check the vsock-proxy on the parent (systemctl status the KMS vsock-proxy unit) and that the parent reaches kms.REGION.amazonaws.com:443")
			}
		}
		return msg
	}
	if t.enclave != "" {
		return enclaveCallError(t.where(), err)
	}
	return endpointCallError(t.endpoint, t.caFile != "", err)
}

// enclaveError explains a failed control call to the enclave.
func enclaveError(enclave string, err error) error {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return fmt.Errorf("%s: %s", apiErr.ErrorCode(), apiErr.ErrorMessage())
	}
	return enclaveCallError("the enclave at "+enclave, err)
}

// enclaveCallError explains a call to kmsproxyd that got no answer.
func enclaveCallError(where string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return withHint(fmt.Errorf("no answer from %s in time", where), "raise --timeout, or check that kmsproxyd is serving (GET /healthz)")
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("interrupted while calling %s", where)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return withHint(fmt.Errorf("failed to reach %s: %v", where, opErr),
			"is kmsproxyd running and listening there? From the parent the address is vsock://<enclave CID>:<port> (nitro-cli describe-enclaves shows the CID)")
	}
	return fmt.Errorf("failed to call %s: %w", where, err)
}

// endpointCallError explains a call to a KMS endpoint (--kms-endpoint) that
// got no answer: the hints are about that URL and its TLS, never the enclave.
func endpointCallError(endpoint string, haveCA bool, err error) error {
	where := "KMS at " + endpoint
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return withHint(fmt.Errorf("no answer from %s in time", where), "raise --timeout, or check that the endpoint is reachable from here")
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted while calling %s", where)
	case errors.As(err, &hostErr):
		return withHint(fmt.Errorf("failed to verify the TLS certificate of %s: %v", where, hostErr),
			"--kms-endpoint must use a name the server's certificate holds (devkms's names localhost, 127.0.0.1 and ::1)")
	case errors.As(err, &unknownAuth), errors.As(err, &certErr):
		if haveCA {
			return withHint(fmt.Errorf("failed to verify the TLS certificate of %s: %v", where, err),
				"the --kms-ca file does not hold the CA that signed this server's certificate (devkms writes it as ca.pem in its --tls-self-signed folder)")
		}
		return withHint(fmt.Errorf("failed to verify the TLS certificate of %s: %v", where, err),
			"for devkms or another private CA, pass its CA certificate with --kms-ca (devkms writes ca.pem in its --tls-self-signed folder)")
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return withHint(fmt.Errorf("failed to reach %s: %v", where, opErr),
			"check the --kms-endpoint URL (scheme, host and port) and that the server is listening there")
	}
	return fmt.Errorf("failed to call %s: %w", where, err)
}

// outputFlags are the output choices every KMS command shares.
type outputFlags struct {
	output string
	json   bool
	raw    bool
}

func (o *outputFlags) register(f *cmdFlags, rawWhat string) {
	f.StringVar(&o.output, "output", "text", "output `FORMAT`: text (one NAME<TAB>VALUE line per field, blobs in base64) or json (the KMS response)")
	f.BoolVar(&o.json, "json", false, "same as --output json")
	f.BoolVar(&o.raw, "raw", false, "write only "+rawWhat+" to stdout, as raw bytes (binary-safe: redirect it to a file)")
}

func (o *outputFlags) validate(f *cmdFlags) error {
	if o.json {
		if o.output != "text" && o.output != "json" {
			return f.usageError("--json conflicts with --output %s", o.output)
		}
		o.output = "json"
	}
	if o.output != "text" && o.output != "json" {
		return f.usageError("--output %q: want text or json", o.output)
	}
	if o.raw && o.output == "json" {
		return f.usageError("--raw writes bytes, not JSON: drop --json/--output json")
	}
	return nil
}

// print writes a KMS output struct (a *kms.XxxOutput) in the chosen format.
// Members are printed in the order KMS's wire form has them.
func (o *outputFlags) print(w io.Writer, out any) error {
	b, err := kmsapi.EncodeOutput(out)
	if err != nil {
		return fmt.Errorf("failed to encode the answer: %w", err)
	}
	defer clear(b)
	if o.output == "json" {
		var ind bytes.Buffer
		if err := json.Indent(&ind, b, "", "  "); err != nil {
			return fmt.Errorf("failed to encode the answer: %w", err)
		}
		ind.WriteByte('\n')
		_, err := w.Write(ind.Bytes())
		clear(ind.Bytes())
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // {
		return fmt.Errorf("failed to encode the answer: %w", err)
	}
	var text bytes.Buffer
	defer func() { clear(text.Bytes()) }()
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			return fmt.Errorf("failed to encode the answer: %w", err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("failed to encode the answer: %w", err)
		}
		val := string(v)
		var s string
		if json.Unmarshal(v, &s) == nil {
			val = s
		}
		fmt.Fprintf(&text, "%s\t%s\n", name, val)
	}
	_, err = w.Write(text.Bytes())
	return err
}

// encryptionContextHelp is the usage of --encryption-context.
const encryptionContextHelp = "encryption context pair `KEY=VALUE` (repeatable); Decrypt needs the same pairs Encrypt was given"

func runDecrypt(ctx context.Context, e *env, args []string) error {
	f := newFlags("decrypt", "--ciphertext-blob fileb://FILE|B64 [flags]",
		`Decrypt a KMS ciphertext. Through the enclave (--enclave), kmsproxyd adds
its attestation and KMS answers only if the key policy admits the enclave's
measurements; the plaintext is decrypted inside the enclave and returned.
With --kms-endpoint the call goes to KMS directly with the default AWS
credentials and no attestation (a key bound to an enclave refuses it).

The plaintext is printed in base64 (text or json output); --raw writes only
the plaintext bytes to stdout and --plaintext-out writes them to a file
(mode 0600) and leaves them out of the printed answer.`,
		`  kmsproxyctl decrypt --enclave vsock://16:5000 --ciphertext-blob fileb://secret.enc --raw > secret.txt
  kmsproxyctl decrypt --ciphertext-blob "$(cat secret.b64)" --encryption-context tenant=acme --json
  kmsproxyctl decrypt --kms-endpoint https://kms.eu-west-1.amazonaws.com --region eu-west-1 --ciphertext-blob fileb://secret.enc`)
	var (
		target        kmsTarget
		out           outputFlags
		blob, keyID   string
		alg, plainOut string
		ec            contextFlag
	)
	target.register(f)
	out.register(f, "the plaintext")
	f.StringVar(&blob, "ciphertext-blob", "", "the ciphertext: fileb://`FILE` (raw bytes) or base64")
	f.StringVar(&keyID, "key-id", "", "`KEY` the ciphertext must be under: key ID, key ARN, alias name or alias ARN (required for asymmetric keys)")
	f.Var(&ec, "encryption-context", encryptionContextHelp)
	f.StringVar(&alg, "encryption-algorithm", "", "`ALGORITHM`: SYMMETRIC_DEFAULT (default), RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE")
	f.StringVar(&plainOut, "plaintext-out", "", "write the plaintext to `FILE` (mode 0600) instead of printing it")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if err := target.validate(f, e); err != nil {
		return err
	}
	if err := out.validate(f); err != nil {
		return err
	}
	if blob == "" {
		return f.usageError("missing --ciphertext-blob")
	}
	if out.raw && plainOut != "" {
		return f.usageError("--raw and --plaintext-out both take the plaintext: choose one")
	}
	ct, err := readBlobFlag("ciphertext-blob", blob, maxCiphertextBlob)
	if err != nil {
		return err
	}
	if len(ct) == 0 {
		return f.usageError("--ciphertext-blob is empty")
	}
	in := &kms.DecryptInput{CiphertextBlob: ct, EncryptionContext: ec}
	if keyID != "" {
		in.KeyId = aws.String(keyID)
	}
	if alg != "" {
		in.EncryptionAlgorithm = types.EncryptionAlgorithmSpec(alg)
	}
	ctx, cancel := context.WithTimeout(ctx, target.timeout)
	defer cancel()
	c, err := target.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.Decrypt(ctx, in)
	if err != nil {
		return target.callError("Decrypt", err)
	}
	defer clear(res.Plaintext)
	return emitSecret(e, &out, plainOut, &res.Plaintext, res)
}

// emitSecret writes a command's answer whose *plain field is secret: raw to
// stdout (--raw), to a 0600 file (--plaintext-out; then left out of the
// printed answer) or printed with the rest.
func emitSecret(e *env, out *outputFlags, plainOut string, plain *[]byte, res any) error {
	switch {
	case out.raw:
		_, err := e.stdout.Write(*plain)
		return err
	case plainOut != "":
		if err := writeSecretFile(plainOut, *plain); err != nil {
			return err
		}
		clear(*plain)
		*plain = nil
	}
	return out.print(e.stdout, res)
}

func runEncrypt(ctx context.Context, e *env, args []string) error {
	f := newFlags("encrypt", "--key-id KEY --plaintext fileb://FILE|B64 [flags]",
		`Encrypt up to 4096 bytes under a KMS key. Encrypt involves no secret in
the answer, so kmsproxyd passes it through to KMS when its policy allows it;
an operator usually encrypts directly with --kms-endpoint (or the AWS CLI)
and only the enclave can decrypt. The ciphertext is printed in base64;
--raw writes only its bytes to stdout and --ciphertext-out to a file.`,
		`  kmsproxyctl encrypt --kms-endpoint https://kms.eu-west-1.amazonaws.com --region eu-west-1 \
      --key-id alias/app --plaintext fileb://secret.txt --raw > secret.enc
  kmsproxyctl encrypt --enclave vsock://16:5000 --key-id alias/app --plaintext aGVsbG8= --encryption-context tenant=acme`)
	var (
		target         kmsTarget
		out            outputFlags
		plain, keyID   string
		alg, cipherOut string
		ec             contextFlag
	)
	target.register(f)
	out.register(f, "the ciphertext")
	f.StringVar(&keyID, "key-id", "", "`KEY`: key ID, key ARN, alias name or alias ARN")
	f.StringVar(&plain, "plaintext", "", "the plaintext: fileb://`FILE` (raw bytes) or base64")
	f.Var(&ec, "encryption-context", encryptionContextHelp)
	f.StringVar(&alg, "encryption-algorithm", "", "`ALGORITHM`: SYMMETRIC_DEFAULT (default), RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE")
	f.StringVar(&cipherOut, "ciphertext-out", "", "write the ciphertext bytes to `FILE` instead of printing them")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if err := target.validate(f, e); err != nil {
		return err
	}
	if err := out.validate(f); err != nil {
		return err
	}
	switch {
	case keyID == "":
		return f.usageError("missing --key-id")
	case plain == "":
		return f.usageError("missing --plaintext")
	case out.raw && cipherOut != "":
		return f.usageError("--raw and --ciphertext-out both take the ciphertext: choose one")
	}
	pt, err := readBlobFlag("plaintext", plain, maxPlaintext)
	if err != nil {
		return err
	}
	defer clear(pt)
	if len(pt) == 0 {
		return f.usageError("--plaintext is empty (KMS encrypts 1 to %d bytes)", maxPlaintext)
	}
	in := &kms.EncryptInput{KeyId: aws.String(keyID), Plaintext: pt, EncryptionContext: ec}
	if alg != "" {
		in.EncryptionAlgorithm = types.EncryptionAlgorithmSpec(alg)
	}
	ctx, cancel := context.WithTimeout(ctx, target.timeout)
	defer cancel()
	c, err := target.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.Encrypt(ctx, in)
	if err != nil {
		return target.callError("Encrypt", err)
	}
	switch {
	case out.raw:
		_, err := e.stdout.Write(res.CiphertextBlob)
		return err
	case cipherOut != "":
		if err := writeOutput(e, cipherOut, res.CiphertextBlob, 0o644); err != nil {
			return err
		}
		res.CiphertextBlob = nil
	}
	return out.print(e.stdout, res)
}

func runGenerateDataKey(ctx context.Context, e *env, args []string) error {
	f := newFlags("generate-data-key", "--key-id KEY [flags]",
		`Generate a data key under a KMS key through the enclave: KMS returns the
plaintext key encrypted to the enclave, kmsproxyd decrypts it inside and
answers with Plaintext and CiphertextBlob as KMS would. Without
--number-of-bytes the key spec is AES_256.

Keep the CiphertextBlob (--ciphertext-out) to decrypt the key later; the
plaintext key goes to --plaintext-out (mode 0600), to stdout with --raw
(then --ciphertext-out is required), or into the printed answer.`,
		`  kmsproxyctl generate-data-key --enclave vsock://16:5000 --key-id alias/app \
      --plaintext-out dk.bin --ciphertext-out dk.enc
  kmsproxyctl generate-data-key --key-id alias/app --number-of-bytes 64 --json`)
	var (
		target              kmsTarget
		out                 outputFlags
		keyID, spec         string
		plainOut, cipherOut string
		nbytes              int
		ec                  contextFlag
	)
	target.register(f)
	out.register(f, "the plaintext data key")
	f.StringVar(&keyID, "key-id", "", "symmetric `KEY`: key ID, key ARN, alias name or alias ARN")
	f.StringVar(&spec, "key-spec", "", "`SPEC`: AES_256 or AES_128 (default AES_256 unless --number-of-bytes)")
	f.IntVar(&nbytes, "number-of-bytes", 0, "data key length in `BYTES` (1 to 1024), instead of --key-spec")
	f.Var(&ec, "encryption-context", encryptionContextHelp)
	f.StringVar(&plainOut, "plaintext-out", "", "write the plaintext data key to `FILE` (mode 0600) instead of printing it")
	f.StringVar(&cipherOut, "ciphertext-out", "", "write the encrypted data key to `FILE` instead of printing it")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if err := target.validate(f, e); err != nil {
		return err
	}
	if err := out.validate(f); err != nil {
		return err
	}
	switch {
	case keyID == "":
		return f.usageError("missing --key-id")
	case spec != "" && f.isSet("number-of-bytes"):
		return f.usageError("give --key-spec or --number-of-bytes, not both")
	case f.isSet("number-of-bytes") && (nbytes < 1 || nbytes > maxNumberOfBytes):
		return f.usageError("--number-of-bytes %d: want 1 to %d", nbytes, maxNumberOfBytes)
	case out.raw && plainOut != "":
		return f.usageError("--raw and --plaintext-out both take the plaintext: choose one")
	case out.raw && cipherOut == "":
		return f.usageError("--raw prints only the plaintext key: add --ciphertext-out FILE to keep the encrypted key")
	}
	in := &kms.GenerateDataKeyInput{KeyId: aws.String(keyID), EncryptionContext: ec}
	switch {
	case nbytes > 0:
		in.NumberOfBytes = aws.Int32(int32(nbytes))
	case spec != "":
		in.KeySpec = types.DataKeySpec(spec)
	default:
		in.KeySpec = types.DataKeySpecAes256
	}
	ctx, cancel := context.WithTimeout(ctx, target.timeout)
	defer cancel()
	c, err := target.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.GenerateDataKey(ctx, in)
	if err != nil {
		return target.callError("GenerateDataKey", err)
	}
	defer clear(res.Plaintext)
	if cipherOut != "" {
		if err := writeOutput(e, cipherOut, res.CiphertextBlob, 0o644); err != nil {
			return err
		}
		res.CiphertextBlob = nil
	}
	return emitSecret(e, &out, plainOut, &res.Plaintext, res)
}

func runGenerateRandom(ctx context.Context, e *env, args []string) error {
	f := newFlags("generate-random", "--number-of-bytes N [flags]",
		`Generate random bytes with KMS through the enclave (KMS encrypts them to
the enclave; kmsproxyd decrypts them inside). Printed in base64; --raw
writes the bytes to stdout, --plaintext-out to a file (mode 0600).`,
		`  kmsproxyctl generate-random --enclave vsock://16:5000 --number-of-bytes 32
  kmsproxyctl generate-random --number-of-bytes 32 --raw | xxd`)
	var (
		target   kmsTarget
		out      outputFlags
		plainOut string
		nbytes   int
	)
	target.register(f)
	out.register(f, "the random bytes")
	f.IntVar(&nbytes, "number-of-bytes", 0, "how many `BYTES` (1 to 1024)")
	f.StringVar(&plainOut, "plaintext-out", "", "write the bytes to `FILE` (mode 0600) instead of printing them")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if err := target.validate(f, e); err != nil {
		return err
	}
	if err := out.validate(f); err != nil {
		return err
	}
	switch {
	case !f.isSet("number-of-bytes"):
		return f.usageError("missing --number-of-bytes")
	case nbytes < 1 || nbytes > maxNumberOfBytes:
		return f.usageError("--number-of-bytes %d: want 1 to %d", nbytes, maxNumberOfBytes)
	case out.raw && plainOut != "":
		return f.usageError("--raw and --plaintext-out both take the bytes: choose one")
	}
	ctx, cancel := context.WithTimeout(ctx, target.timeout)
	defer cancel()
	c, err := target.client(ctx)
	if err != nil {
		return err
	}
	res, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(int32(nbytes))})
	if err != nil {
		return target.callError("GenerateRandom", err)
	}
	defer clear(res.Plaintext)
	return emitSecret(e, &out, plainOut, &res.Plaintext, res)
}
