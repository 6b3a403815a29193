package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/enclavekit/kmsproxy/test/internal/secretscan"
)

// The attested instance: an EC2 instance launched from an Attestable AMI,
// whose role signs kmsproxyd's calls and whose NitroTPM attests its boot.
const (
	instanceRoleARN    = "arn:aws:iam::" + account + ":role/kmsproxy-instance"
	instanceSessionARN = "arn:aws:sts::" + account + ":assumed-role/kmsproxy-instance/i-0e2e0e2e0e2e0e2e0"

	// instanceKeyID is bound by `policy generate --kind nitrotpm` to the
	// instance's NitroTPMPCR4 and PCR12; enclaveBoundKeyID by `policy
	// generate` to the release enclave image, for the same role.
	instanceKeyID     = "5a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
	instanceAlias     = "alias/instance-app"
	enclaveBoundKeyID = "6b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"

	// amiLabel names the simulated Attestable AMI; its PCRs derive from it.
	amiLabel = "kmsproxy e2e attestable AMI"
)

// instanceRole is the instance role's credentials, known to devkms.
var instanceRole = awsCreds{"ASIAE2EINSTANCEROLE1", "e2e-instance-role-secret-access-key-0000", "e2e-instance-role-session-token-for-tests"}

// amiPCRs returns made-up measurements of the Attestable AMI named label,
// as nitro-tpm-pcr-compute prints them: PCR4 (the Unified Kernel Image)
// and PCR7 (the Secure Boot policy), each the SHA-384 of label and the
// PCR's number, and PCR12 (what changed the command line from outside the
// image) all zeros, as the tool always prints it.
func amiPCRs(label string) map[int][]byte {
	pcrs := map[int][]byte{12: make([]byte, sha512.Size384)}
	for _, i := range []int{4, 7} {
		h := sha512.Sum384([]byte(fmt.Sprintf("%s/PCR%d", label, i)))
		pcrs[i] = h[:]
	}
	return pcrs
}

// startInstanceWorld writes the simulator CA, the AMI's measurements (what
// nitro-tpm-pcr-compute prints) and the release enclave image's (what
// nitro-cli prints), generates the key policies, and starts devkms (TLS,
// SigV4, the policies) with the instance's key and an enclave-bound key.
// The TPM and kmsproxyd are the caller's.
func startInstanceWorld(t testing.TB, sc *secretscan.Scanner) *stack {
	t.Helper()
	s := &stack{scan: sc, role: instanceRole, bin: build(t), dir: shortTempDir(t)}
	sc.AddSecret("operator secret access key", []byte(operator.secret))
	sc.AddSecret("instance role secret access key", []byte(instanceRole.secret))
	sc.AddSecret("instance role session token", []byte(instanceRole.token))
	s.ctl(t, nil, "dev", "ca", "--out", s.path("simca"))
	m, err := nitrotpmsim.MarshalMeasurements(amiPCRs(amiLabel))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path("instance-measurements.json"), m, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeMeasurements(s.path("release.json"), imageLabel); err != nil {
		t.Fatal(err)
	}
	// A standard boot of the AMI: PCR4 and PCR12.
	pol := s.ctl(t, nil, "policy", "generate", "--kind", "nitrotpm", "--measurements", s.path("instance-measurements.json"),
		"--pcrs", "4,12", "--role", instanceRoleARN, "--region", region)
	if err := os.WriteFile(s.path("instance-key-policy.json"), pol, 0o600); err != nil {
		t.Fatal(err)
	}
	pol = s.ctl(t, nil, "policy", "generate", "--measurements", s.path("release.json"), "--role", instanceRoleARN, "--region", region)
	if err := os.WriteFile(s.path("enclave-key-policy.json"), pol, 0o600); err != nil {
		t.Fatal(err)
	}
	seed := fmt.Sprintf(`keys:
  - id: %s
    description: e2e key of the attested instance
    policy_file: instance-key-policy.json
    aliases: [%s]
  - id: %s
    description: e2e key of the release enclave image
    policy_file: enclave-key-policy.json
`, instanceKeyID, instanceAlias, enclaveBoundKeyID)
	creds := fmt.Sprintf(`%s:
  secret_access_key: %q
  principal: %s
%s:
  secret_access_key: %q
  session_token: %q
  principal: %s
`, operator.accessKeyID, operator.secret, operatorARN, instanceRole.accessKeyID, instanceRole.secret, instanceRole.token, instanceSessionARN)
	for name, body := range map[string]string{"seed.yaml": seed, "credentials.yaml": creds} {
		if err := os.WriteFile(s.path(name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.startDevKMS(t)
	return s
}

// startTPM runs `kmsproxyctl dev tpm`, the simulated NitroTPM on a unix
// socket standing in for /dev/tpmrm0, with the AMI's measurements and
// extra arguments, and returns its socket.
func (s *stack) startTPM(t testing.TB, name string, extra ...string) string {
	t.Helper()
	sock := s.path(name + ".sock")
	p := start(t, s.scan, "kmsproxyctl dev tpm ("+name+")", harness.CleanEnv(), append([]string{s.bin.kmsproxyctl, "dev", "tpm",
		"--ca", s.path("simca"), "--measurements", s.path("instance-measurements.json"), "--listen", "unix://" + sock}, extra...)...)
	waitSocket(t, p, sock)
	return sock
}

// instanceDaemon is a kmsproxyd the test started.
type instanceDaemon struct {
	proc   *process
	parent string // unix:///.../NAME.sock
	local  string // tcp://127.0.0.1:PORT
}

// startInstanceKmsproxyd runs kmsproxyd as on an attested instance (no
// vsock: its apps reach it on a unix socket and loopback, it reaches KMS
// directly), with attestation flags such as --attestation nitrotpm-sim
// --tpm-device unix://PATH, and waits until it is ready.
func (s *stack) startInstanceKmsproxyd(t testing.TB, name string, attest ...string) *instanceDaemon {
	t.Helper()
	d := &instanceDaemon{
		parent: "unix://" + s.path(name+".sock"),
		local:  fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t)),
	}
	args := append([]string{s.bin.kmsproxyd}, attest...)
	args = append(args,
		"--region", region,
		"--kms-endpoint", fmt.Sprintf("https://localhost:%d", s.kmsPort),
		"--kms-dial", "direct",
		"--kms-ca", s.caFile,
		"--credentials", "env",
		"--listen-parent", d.parent,
		"--listen-local", d.local,
		"--log-format", "json", "--log-level", "debug")
	d.proc = start(t, s.scan, name, harness.CleanEnv(instanceRole.env()...), args...)
	waitHTTP(t, d.proc, d.parent, "/readyz")
	return d
}

// instanceCiphertexts encrypts a fresh secret under the instance's key and
// another under the enclave-bound key, as the operator, with the
// encryption context tenant=acme; it returns the secret and both
// ciphertexts, written to files too.
func (s *stack) instanceCiphertexts(t testing.TB) (secret, instanceBlob, enclaveBlob []byte) {
	t.Helper()
	secret = make([]byte, 40)
	rand.Read(secret)
	s.scan.AddSecret("instance plaintext", secret)
	op := s.operatorKMS(t)
	ec := map[string]string{"tenant": "acme"}
	for _, c := range []struct {
		key  string
		blob *[]byte
		file string
	}{{instanceAlias, &instanceBlob, "instance-secret.enc"}, {enclaveBoundKeyID, &enclaveBlob, "enclave-secret.enc"}} {
		out, err := op.Encrypt(context.Background(), &kms.EncryptInput{KeyId: aws.String(c.key), Plaintext: secret, EncryptionContext: ec})
		if err != nil {
			t.Fatalf("operator Encrypt under %s: %v", c.key, err)
		}
		*c.blob = out.CiphertextBlob
		if err := os.WriteFile(s.path(c.file), out.CiphertextBlob, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return secret, instanceBlob, enclaveBlob
}

// TestAttestedInstance is the attested instance path end to end, with real
// processes: the simulated NitroTPM (`kmsproxyctl dev tpm`, a unix socket
// standing in for /dev/tpmrm0), devkms (TLS, SigV4, the key policy
// `policy generate --kind nitrotpm` wrote for the AMI's PCR4 and PCR12) and
// kmsproxyd --attestation nitrotpm-sim --tpm-device unix://... . An app on
// the instance decrypts through kmsproxyd's loopback listener with the
// unmodified AWS CLI and boto3 (dummy credentials: kmsproxyd signs with
// the instance role's), and with aws-sdk-go-v2 over the unix socket. An
// instance that booted something else (another PCR4) is refused; an
// enclave's document is refused where the key policy names NitroTPM PCRs,
// even with the instance's values in its PCRs; and the instance's document
// is refused by an enclave-bound key. devkms logs the NitroTPM document
// under CloudTrail's field names. No secret reaches any log.
func TestAttestedInstance(t *testing.T) {
	build(t) // before the watchdog starts
	sc := newScan(t)
	s := startInstanceWorld(t, sc)
	sc.AddSecret("client secret access key", []byte(dummyClient.secret))
	tpm := s.startTPM(t, "tpmrm0")
	inst := s.startInstanceKmsproxyd(t, "kmsproxyd", "--attestation", "nitrotpm-sim", "--tpm-device", "unix://"+tpm)
	secret, instanceBlob, enclaveBlob := s.instanceCiphertexts(t)
	pcrs := amiPCRs(amiLabel)
	localURL := "http://" + strings.TrimPrefix(inst.local, "tcp://")
	ctx := context.Background()

	t.Run("kmsproxyd attests with the instance's NitroTPM", func(t *testing.T) {
		var info struct {
			Attestation string            `json:"attestation"`
			PCRs        map[string]string `json:"pcrs"`
		}
		getJSON(t, inst.parent, "/v1/info", &info)
		if info.Attestation != "NitroTPM" || info.PCRs["4"] != hex.EncodeToString(pcrs[4]) || info.PCRs["12"] != hex.EncodeToString(pcrs[12]) {
			t.Fatalf("/v1/info: attestation %q, PCR4 %.16s…, PCR12 %.16s…; want NitroTPM and the AMI's", info.Attestation, info.PCRs["4"], info.PCRs["12"])
		}
	})

	t.Run("aws-cli", func(t *testing.T) {
		awsBin := harness.RequireTool(t, "aws", "/usr/bin/aws")
		home := t.TempDir()
		cli := func(args ...string) []byte {
			t.Helper()
			env := harness.CleanEnv(append(dummyClient.env(), "AWS_REGION="+region, "AWS_DEFAULT_REGION="+region, "AWS_PAGER=", "HOME="+home)...)
			args = append(args, "--endpoint-url", localURL, "--cli-connect-timeout", "10", "--cli-read-timeout", "60")
			out, err := run(t, sc, "aws "+args[1], env, nil, awsTimeout, append([]string{awsBin}, args...)...)
			if err != nil {
				t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
			}
			return out
		}
		got := decodeB64(t, cli("kms", "decrypt", "--ciphertext-blob", "fileb://"+s.path("instance-secret.enc"), "--encryption-context", "tenant=acme",
			"--output", "text", "--query", "Plaintext"))
		if !bytes.Equal(got, secret) {
			t.Errorf("aws kms decrypt: %d bytes that are not the plaintext", len(got))
		}
		var dk struct{ Plaintext, CiphertextBlob, KeyId string }
		if err := json.Unmarshal(cli("kms", "generate-data-key", "--key-id", instanceAlias, "--key-spec", "AES_256",
			"--encryption-context", "tenant=acme", "--output", "json"), &dk); err != nil {
			t.Fatalf("aws kms generate-data-key output: %v", err)
		}
		key, blob := decodeB64(t, []byte(dk.Plaintext)), decodeB64(t, []byte(dk.CiphertextBlob))
		if len(key) != 32 || dk.KeyId != "arn:aws:kms:"+region+":"+account+":key/"+instanceKeyID {
			t.Fatalf("aws kms generate-data-key: %d-byte key of %q", len(key), dk.KeyId)
		}
		sc.AddSecret("aws cli instance data key", key)
		if err := os.WriteFile(s.path("dk.enc"), blob, 0o600); err != nil {
			t.Fatal(err)
		}
		back := decodeB64(t, cli("kms", "decrypt", "--ciphertext-blob", "fileb://"+s.path("dk.enc"), "--encryption-context", "tenant=acme",
			"--output", "text", "--query", "Plaintext"))
		if !bytes.Equal(back, key) {
			t.Error("the data key's CiphertextBlob does not decrypt to its Plaintext")
		}
	})

	t.Run("boto3", func(t *testing.T) {
		python := harness.RequireTool(t, "python3", "/usr/bin/python3")
		env := harness.CleanEnv(append(dummyClient.env(), "AWS_DEFAULT_REGION="+region, "HOME="+t.TempDir())...)
		if _, err := run(t, sc, "python3 -c import boto3", env, nil, awsTimeout, python, "-c", "import boto3"); err != nil {
			harness.MissingTool(t, "boto3 is not installed for %s (Debian: apt-get install python3-boto3): %v", python, err)
		}
		out, err := run(t, sc, "python3 boto3 app", env, nil, awsTimeout, python, "-c", boto3App, localURL, s.path("instance-secret.enc"), instanceAlias)
		if err != nil {
			t.Fatalf("the boto3 app: %v", err)
		}
		var res struct{ Plaintext, DataKey, DataKeyBack, KeyID string }
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("the boto3 app printed %q: %v", out, err)
		}
		dk := decodeB64(t, []byte(res.DataKey))
		sc.AddSecret("boto3 data key", dk)
		if got := decodeB64(t, []byte(res.Plaintext)); !bytes.Equal(got, secret) {
			t.Errorf("boto3 Decrypt: %d bytes that are not the plaintext", len(got))
		}
		if back := decodeB64(t, []byte(res.DataKeyBack)); len(dk) != 32 || !bytes.Equal(back, dk) {
			t.Errorf("boto3 GenerateDataKey: a %d-byte key that does not decrypt back", len(dk))
		}
	})

	t.Run("aws-sdk-go-v2 over the unix socket", func(t *testing.T) {
		c, err := clientFor(inst.parent)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: instanceBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		if err != nil || !bytes.Equal(out.Plaintext, secret) {
			t.Fatalf("Decrypt: %v", err)
		}
	})

	t.Run("devkms logs the NitroTPM document as CloudTrail does", func(t *testing.T) {
		log := s.devkms.log.String()
		for _, want := range []string{
			"recipient.attestationDocumentModuleId=" + nsmsim.DefaultNitroTPMModuleID,
			"recipient.attestationDocumentNitroTPMPCR4=" + base64.StdEncoding.EncodeToString(pcrs[4]),
			"recipient.attestationDocumentNitroTPMPCR12=" + base64.StdEncoding.EncodeToString(pcrs[12]),
		} {
			if !strings.Contains(log, want) {
				t.Errorf("devkms's log has no %q", want)
			}
		}
	})

	t.Run("the same role calling KMS directly is refused", func(t *testing.T) {
		role := kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(fmt.Sprintf("https://localhost:%d", s.kmsPort)),
			Credentials: instanceRole.provider(), HTTPClient: mustDevKMSHTTP(t, s), Retryer: aws.NopRetryer{}})
		before := len(s.denials())
		_, err := role.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: instanceBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		wantDenied(t, err, s, before, `Sid \"DenyEveryoneUnlessNitroTPMPCR4Matches\"`, "(the request has no value for it)")
	})

	t.Run("an instance that booted something else (another PCR4) is refused", func(t *testing.T) {
		other := sha512.Sum384([]byte("another boot manager"))
		tpm2 := s.startTPM(t, "tpm-other", "--pcr", "4="+hex.EncodeToString(other[:]))
		d := s.startInstanceKmsproxyd(t, "kmsproxyd-other-boot", "--attestation", "nitrotpm-sim", "--tpm-device", "unix://"+tpm2)
		c, err := clientFor(d.parent)
		if err != nil {
			t.Fatal(err)
		}
		before := len(s.denials())
		out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: instanceBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		if err == nil {
			t.Fatalf("Decrypt succeeded (%d bytes) on an instance with another PCR4", len(out.Plaintext))
		}
		wantDenied(t, err, s, before, `Sid \"DenyEveryoneUnlessNitroTPMPCR4Matches\"`,
			"(the request has value", hex.EncodeToString(other[:]),
			"recipient.attestationDocumentNitroTPMPCR4="+base64.StdEncoding.EncodeToString(other[:]))
	})

	t.Run("an enclave's document is refused where the key policy names NitroTPM PCRs", func(t *testing.T) {
		// The release image, whose PCR4 and PCR12 hold the instance's
		// values: an enclave's PCR<n>, never its NitroTPMPCR<n>.
		m := nsmsim.ImagePCRs(imageLabel)
		m[4], m[12] = pcrs[4], pcrs[12]
		b, err := nsmsim.MarshalMeasurements(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(s.path("enclave-with-instance-pcrs.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		d := s.startInstanceKmsproxyd(t, "kmsproxyd-enclave", "--attestation", "nsm-sim", "--sim-ca", s.path("simca"), "--sim-pcrs", s.path("enclave-with-instance-pcrs.json"))
		c, err := clientFor(d.parent)
		if err != nil {
			t.Fatal(err)
		}
		before := len(s.denials())
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: instanceBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		wantDenied(t, err, s, before, `Sid \"DenyEveryoneUnlessNitroTPMPCR4Matches\"`, "(the request has no value for it)",
			"recipient.attestationDocumentEnclavePCR4="+base64.StdEncoding.EncodeToString(pcrs[4]))
		// The enclave's own key admits it: only the kind differs.
		out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enclaveBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		if err != nil || !bytes.Equal(out.Plaintext, secret) {
			t.Fatalf("the enclave's Decrypt under its own key: %v", err)
		}
	})

	t.Run("the instance's document is refused where the key policy names an enclave image", func(t *testing.T) {
		c, err := clientFor(inst.parent)
		if err != nil {
			t.Fatal(err)
		}
		before := len(s.denials())
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enclaveBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		wantDenied(t, err, s, before, `Sid \"DenyEveryoneUnlessImageSha384Matches\"`, "(the request has no value for it)",
			"recipient.attestationDocumentNitroTPMPCR4="+base64.StdEncoding.EncodeToString(pcrs[4]))
	})

	checkControlEndpoints(t, sc, inst.parent)
	if code := inst.proc.stop(); code != 0 {
		t.Errorf("kmsproxyd exited with status %d after SIGTERM, want 0", code)
	}
}

// boto3App is an app written against boto3 as any Python app is, with
// kmsproxyd's loopback listener as its endpoint: it decrypts the file
// argv[2], generates a data key under argv[3] and decrypts it back, and
// prints the results (base64) as JSON for the test to check.
const boto3App = `
import base64, json, sys
import boto3
kms = boto3.client("kms", endpoint_url=sys.argv[1])
ec = {"tenant": "acme"}
with open(sys.argv[2], "rb") as f:
    blob = f.read()
plain = kms.decrypt(CiphertextBlob=blob, EncryptionContext=ec)["Plaintext"]
dk = kms.generate_data_key(KeyId=sys.argv[3], KeySpec="AES_256", EncryptionContext=ec)
back = kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=ec)["Plaintext"]
b64 = lambda b: base64.b64encode(b).decode()
print(json.dumps({"Plaintext": b64(plain), "DataKey": b64(dk["Plaintext"]), "DataKeyBack": b64(back), "KeyID": dk["KeyId"]}))
`

func decodeB64(t testing.TB, out []byte) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("%q is not base64", out)
	}
	return b
}

// denials returns devkms's log lines of refused requests, in order.
func (s *stack) denials() []string {
	var out []string
	for _, line := range strings.Split(s.devkms.log.String(), "\n") {
		if strings.Contains(line, "error=AccessDeniedException") {
			out = append(out, line)
		}
	}
	return out
}

// wantDenied fails t unless err is KMS's AccessDeniedException for an
// explicit deny, passed through kmsproxyd unchanged, and devkms's log line
// for the refusal (the one after the before-th) holds every part: the
// deciding statement and condition, the document's CloudTrail fields.
func wantDenied(t testing.TB, err error, s *stack, before int, parts ...string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDeniedException" || !strings.Contains(ae.ErrorMessage(), "with an explicit deny in a resource-based policy") {
		t.Fatalf("got %v, want KMS's AccessDeniedException (an explicit deny)", err)
	}
	// devkms writes the request's log line as the request ends.
	var line string
	if err := poll(readyTimeout, func() error {
		if d := s.denials(); len(d) > before {
			line = d[before]
			return nil
		}
		return errors.New("devkms has not logged the refusal")
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		if !strings.Contains(line, p) {
			t.Errorf("devkms's log line of the refusal lacks %q:\n%s", p, line)
		}
	}
}

// getJSON reads a control endpoint of the kmsproxyd at addr into v.
func getJSON(t testing.TB, addr, path string, v any) {
	t.Helper()
	hc, err := client.HTTPClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(client.Endpoint + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func mustDevKMSHTTP(t testing.TB, s *stack) *http.Client {
	t.Helper()
	hc, err := s.devkmsHTTP()
	if err != nil {
		t.Fatal(err)
	}
	return hc
}
