package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// The attacker's account: the parent instance's owner, or whoever took the
// parent over, has an AWS account of its own, with keys under the names
// the enclave's apps use.
const attackerAccount = "444455556666"

var (
	// attackerRole is what the parent pushes into kmsproxyd.
	attackerRole = awsCreds{"ASIAE2EATTACKERROLE1", "e2e-attacker-role-secret-access-key-0000", "e2e-attacker-role-session-token-for-tests-only"}
	// attackerOperator reads the attacker's own keys directly.
	attackerOperator = awsCreds{"AKIAE2EATTACKEROPER1", "e2e-attacker-operator-secret-key-000000", ""}
)

// pinnedPolicy lets both listeners do everything but pins the enclave
// owner's account and region: the one line that takes the choice of
// account away from the parent.
const pinnedPolicy = `kms:
  accounts: ["` + account + `"]
  regions: [` + region + `]
listeners:
  parent:
    operations: ["*"]
    plaintext: true
    credentials_push: true
    control: ["*"]
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
`

// unpinnedPolicy is the same without kms: what every policy was before
// accounts could be pinned.
const unpinnedPolicy = `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    credentials_push: true
    control: ["*"]
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
`

// attacker is a devkms standing for the attacker's account: the same TLS CA
// as the owner's (both are "KMS"), another --account-id, and keys with the
// owner's key id and alias (real KMS never repeats a key id, so this is
// worse than the attacker can do).
type attacker struct {
	devkms *process
	port   int
}

func startAttacker(t *testing.T, s *stack) *attacker {
	t.Helper()
	a := &attacker{port: freePort(t)}
	seed := fmt.Sprintf(`keys:
  - id: %s
    description: the attacker's key, under the enclave app's alias
    aliases: [%s]
    policy: |
      {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}]}
`, keyID, alias)
	creds := fmt.Sprintf(`%s:
  secret_access_key: %q
  session_token: %q
  principal: arn:aws:sts::%s:assumed-role/attacker/i-0a77ac6e5
%s:
  secret_access_key: %q
  principal: arn:aws:iam::%s:user/attacker
`, attackerRole.accessKeyID, attackerRole.secret, attackerRole.token, attackerAccount,
		attackerOperator.accessKeyID, attackerOperator.secret, attackerAccount)
	for name, body := range map[string]string{"attacker-seed.yaml": seed, "attacker-credentials.yaml": creds} {
		if err := os.WriteFile(s.path(name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.scan.AddSecret("attacker role secret access key", []byte(attackerRole.secret))
	s.scan.AddSecret("attacker operator secret access key", []byte(attackerOperator.secret))
	a.devkms = start(t, s.scan, "devkms (attacker)", harness.CleanEnv(), s.bin.devkms,
		"--listen", fmt.Sprintf("tcp://127.0.0.1:%d", a.port),
		"--tls-self-signed", s.path("tls"), // the same CA as the owner's devkms
		"--trust-root", s.path("simca/root.pem"),
		"--credentials", s.path("attacker-credentials.yaml"),
		"--seed", s.path("attacker-seed.yaml"),
		"--region", region, "--account-id", attackerAccount,
		"--log-level", "debug")
	if err := poll(readyTimeout, func() error {
		if a.devkms.exited() {
			return errors.New("devkms (attacker) exited")
		}
		hc, err := s.devkmsHTTP()
		if err != nil {
			return err
		}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(fmt.Sprintf("https://localhost:%d/devkms/healthz", a.port))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	}); err != nil {
		t.Fatalf("the attacker's devkms did not start: %v\n%s", err, a.devkms.log)
	}
	return a
}

// kms is a client to the attacker's devkms directly, as its operator.
func (a *attacker) kms(t *testing.T, s *stack) *kms.Client {
	t.Helper()
	hc, err := s.devkmsHTTP()
	if err != nil {
		t.Fatal(err)
	}
	return kms.New(kms.Options{
		Region:       region,
		BaseEndpoint: aws.String(fmt.Sprintf("https://localhost:%d", a.port)),
		Credentials:  attackerOperator.provider(),
		HTTPClient:   hc,
		Retryer:      aws.NopRetryer{},
	})
}

// keyARN is the ARN of the attacker's key.
func (a *attacker) keyARN() string {
	return "arn:aws:kms:" + region + ":" + attackerAccount + ":key/" + keyID
}

// takeOver does what a hostile parent instance does: it points the
// vsock-proxy (socat here) at the attacker's KMS and pushes the attacker's
// credentials into kmsproxyd.
func (s *stack) takeOver(t *testing.T, a *attacker) {
	t.Helper()
	s.socat.stop()
	s.socatArgv = []string{s.socatArgv[0], socatLinger, "UNIX-LISTEN:" + s.kmsSock + ",unlink-early,fork,max-children=" + fmt.Sprint(defaultUpstreamConns),
		fmt.Sprintf("TCP:127.0.0.1:%d", a.port)}
	s.startSocat(t)
	s.ctl(t, attackerRole.env(), "credentials", "push", "--enclave", s.parentAddr)
}

// giveBack restores the honest parent: vsock-proxy to the owner's KMS, the
// owner's role credentials.
func (s *stack) giveBack(t *testing.T) {
	t.Helper()
	s.socat.stop()
	s.socatArgv = []string{s.socatArgv[0], socatLinger, "UNIX-LISTEN:" + s.kmsSock + ",unlink-early,fork,max-children=" + fmt.Sprint(defaultUpstreamConns),
		"TCP:" + s.relay.Addr().String()}
	s.startSocat(t)
	s.pushCredentials(t)
}

// accountCall is one call an enclave app makes, naming its key some way.
type accountCall struct {
	name string
	call func(ctx context.Context, c *kms.Client) (secret []byte, err error)
}

// accountCalls are GenerateDataKey, Encrypt, Decrypt, ReEncrypt and
// GenerateDataKeyPair naming key, with decrypt a ciphertext to Decrypt and
// ReEncrypt. Each returns what the app would store or use.
func accountCalls(key string, ciphertext []byte) []accountCall {
	return []accountCall{
		{"GenerateDataKey", func(ctx context.Context, c *kms.Client) ([]byte, error) {
			out, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(key), KeySpec: types.DataKeySpecAes256})
			if err != nil {
				return nil, err
			}
			return out.CiphertextBlob, nil
		}},
		{"Encrypt", func(ctx context.Context, c *kms.Client) ([]byte, error) {
			out, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(key), Plaintext: []byte("an enclave app's secret")})
			if err != nil {
				return nil, err
			}
			return out.CiphertextBlob, nil
		}},
		{"Decrypt", func(ctx context.Context, c *kms.Client) ([]byte, error) {
			out, err := c.Decrypt(ctx, &kms.DecryptInput{KeyId: aws.String(key), CiphertextBlob: ciphertext})
			if err != nil {
				return nil, err
			}
			return out.Plaintext, nil
		}},
		{"ReEncrypt", func(ctx context.Context, c *kms.Client) ([]byte, error) {
			out, err := c.ReEncrypt(ctx, &kms.ReEncryptInput{SourceKeyId: aws.String(key), DestinationKeyId: aws.String(key), CiphertextBlob: ciphertext})
			if err != nil {
				return nil, err
			}
			return out.CiphertextBlob, nil
		}},
		{"GenerateDataKeyPair", func(ctx context.Context, c *kms.Client) ([]byte, error) {
			out, err := c.GenerateDataKeyPair(ctx, &kms.GenerateDataKeyPairInput{KeyId: aws.String(key), KeyPairSpec: types.DataKeyPairSpecEccNistP256})
			if err != nil {
				return nil, err
			}
			return out.PrivateKeyCiphertextBlob, nil
		}},
	}
}

// TestParentChoosesTheAccount is the attack of a parent instance that
// leads kmsproxyd's credentials and its path to KMS to an account the
// attacker controls. Without kms.accounts in the policy, an enclave app's
// GenerateDataKey by alias gets a data key the attacker decrypts with its
// own credentials. With the owner's account pinned, every call by alias,
// bare key id or ARN, through both listeners, is refused, and nothing the
// attacker's KMS answered reaches a caller; with the honest parent back,
// the same calls work.
func TestParentChoosesTheAccount(t *testing.T) {
	build(t)
	ctx := context.Background()

	t.Run("unpinned", func(t *testing.T) {
		sc := newScan(t)
		s := startStack(t, sc, stackOptions{credentials: "push", policy: unpinnedPolicy})
		s.pushCredentials(t)
		a := startAttacker(t, s)
		s.takeOver(t, a)
		local, err := clientFor(s.localAddr)
		if err != nil {
			t.Fatal(err)
		}
		// The enclave app makes a data key by alias and would store its
		// ciphertext; the attacker decrypts that ciphertext on its own.
		out, err := local.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String(alias), KeySpec: types.DataKeySpecAes256})
		if err != nil {
			t.Fatalf("without a pinned account the attack should work, but GenerateDataKey failed: %v", err)
		}
		sc.AddSecret("data key the attacker got", out.Plaintext)
		if got := aws.ToString(out.KeyId); got != a.keyARN() {
			t.Fatalf("GenerateDataKey answered key %s, want the attacker's %s", got, a.keyARN())
		}
		dec, err := a.kms(t, s).Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob})
		if err != nil || string(dec.Plaintext) != string(out.Plaintext) {
			t.Fatalf("the attacker could not decrypt the app's data key on its own (%v): the attack did not reproduce", err)
		}
		t.Logf("unpinned: the enclave app's data key (by %s) is under %s, and the attacker decrypts it with its own credentials", alias, a.keyARN())
		if !strings.Contains(s.kmsproxyd.log.String(), "the policy pins no AWS account") {
			t.Error("kmsproxyd did not warn at start that no account is pinned")
		}
	})

	t.Run("pinned", func(t *testing.T) {
		sc := newScan(t)
		s := startStack(t, sc, stackOptions{credentials: "push", policy: pinnedPolicy})
		s.pushCredentials(t)
		a := startAttacker(t, s)
		// A ciphertext the attacker made under its own key, stored where
		// the app will Decrypt or ReEncrypt it.
		planted, err := a.kms(t, s).Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("the attacker's chosen configuration")})
		if err != nil {
			t.Fatal(err)
		}
		s.takeOver(t, a)

		ownerARN := s.keyARN()
		forms := []struct{ name, key string }{
			{"alias", alias},
			{"alias ARN", "arn:aws:kms:" + region + ":" + account + ":" + alias},
			{"bare key id", keyID},
			{"owner's key ARN", ownerARN},
			{"attacker's key ARN", a.keyARN()},
		}
		listeners := []struct{ name, addr string }{{"parent", s.parentAddr}, {"local", s.localAddr}}
		refused := 0
		for _, l := range listeners {
			c, err := clientFor(l.addr)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range forms {
				for _, ac := range accountCalls(f.key, planted.CiphertextBlob) {
					got, err := ac.call(ctx, c)
					if err == nil {
						t.Errorf("%s, %s by %s: answered %d bytes under the attacker's account, want a refusal", l.name, ac.name, f.name, len(got))
						continue
					}
					var ae smithy.APIError
					if !errors.As(err, &ae) {
						t.Errorf("%s, %s by %s: %v, want a KMS error", l.name, ac.name, f.name, err)
						continue
					}
					switch {
					case ae.ErrorCode() == "AccessDeniedException" && strings.Contains(ae.ErrorMessage(), "(policy: kms.accounts)"):
						refused++
						if strings.Contains(ae.ErrorMessage(), attackerAccount) {
							t.Errorf("%s, %s by %s: the refusal names the attacker's account: %s", l.name, ac.name, f.name, ae.ErrorMessage())
						}
					case f.name == "owner's key ARN" || f.name == "alias ARN":
						// The attacker's KMS has no key of the owner's
						// account: it answers an error of its own, with
						// nothing to refuse.
						t.Logf("%s, %s by %s: the attacker's KMS answered %s", l.name, ac.name, f.name, ae.ErrorCode())
					default:
						t.Errorf("%s, %s by %s: %s: %s, want AccessDeniedException naming kms.accounts", l.name, ac.name, f.name, ae.ErrorCode(), ae.ErrorMessage())
					}
				}
			}
		}
		// Every call that reached the attacker's KMS and was answered was
		// refused: kmsproxyd counted each.
		total := 0.0
		for _, l := range listeners {
			hc, err := client.HTTPClient(l.addr) // each listener shows its own series
			if err != nil {
				t.Fatal(err)
			}
			for _, ac := range accountCalls("", nil) {
				v, err := metric(hc, `kmsproxy_answers_refused_total{listener="`+l.name+`",operation="`+ac.name+`",rule="kms.accounts"}`)
				if err != nil {
					t.Errorf("%s %s: %v", l.name, ac.name, err)
				}
				total += v
			}
		}
		if int(total) != refused || refused < 2*5*3 {
			t.Errorf("kmsproxyd counted %v refused answers and the callers saw %d; want equal, at least %d", total, refused, 2*5*3)
		}
		t.Logf("pinned: %d answers from the attacker's account refused", refused)
		if log := s.kmsproxyd.log.String(); !strings.Contains(log, "KMS answer refused") || !strings.Contains(log, a.keyARN()) {
			t.Error("kmsproxyd did not log the refusals with the key the attacker's KMS answered with")
		}

		// The honest parent again: the same calls, against the owner's
		// devkms, work through both listeners.
		s.giveBack(t)
		owned, err := s.operatorKMS(t).Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("the owner's configuration")})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range listeners {
			c, err := clientFor(l.addr)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range forms {
				if f.name == "attacker's key ARN" {
					continue
				}
				for _, ac := range accountCalls(f.key, owned.CiphertextBlob) {
					got, err := ac.call(ctx, c)
					var ae smithy.APIError
					switch {
					case err == nil:
						sc.AddSecret("owner's "+ac.name+" answer", got)
					case (ac.name == "Encrypt" || ac.name == "ReEncrypt") && errors.As(err, &ae) &&
						ae.ErrorCode() == "AccessDeniedException" && strings.HasPrefix(ae.ErrorMessage(), "User: "):
						// The key policy `kmsproxyctl policy generate`
						// writes denies the role everything but the
						// attested operations: KMS's own refusal, which
						// kmsproxyd passes on.
					default:
						t.Errorf("honest parent: %s, %s by %s: %v", l.name, ac.name, f.name, err)
					}
				}
			}
		}
	})
}

// keysPolicy is pinnedPolicy with the owner's two keys pinned by ARN.
const keysPolicy = `kms:
  accounts: ["` + account + `"]
  regions: [` + region + `]
  keys:
    - "arn:aws:kms:` + region + `:` + account + `:key/` + keyID + `"
    - "arn:aws:kms:` + region + `:` + account + `:key/` + agreementKeyID + `"
listeners:
  parent:
    operations: ["*"]
    plaintext: true
    credentials_push: true
    control: ["*"]
  local:
    operations: ["*"]
    plaintext: true
    control: ["*"]
`

// TestParentPlantsUnderItsOwnKey is the attack kms.accounts does not stop:
// the parent, which holds the instance role's credentials, creates a key
// of its own in the pinned account, encrypts a plaintext it chose under
// it, and plants the ciphertext where an enclave app reads its input; the
// app decrypts it through the local listener without naming a key, as KMS
// allows. With only the account pinned, the app gets the parent's
// plaintext and kmsproxyd has warned at start that any key of the account
// is accepted; with the owner's keys pinned (kms.keys), the answer is
// refused, counted and logged, and the app's own ciphertexts still
// decrypt.
func TestParentPlantsUnderItsOwnKey(t *testing.T) {
	build(t)
	ctx := context.Background()
	chosen := []byte(`{"pay": "1000", "to": "the parent's owner"}`)
	plant := func(t *testing.T, s *stack) []byte {
		t.Helper()
		hc, err := s.devkmsHTTP()
		if err != nil {
			t.Fatal(err)
		}
		parent := kms.New(kms.Options{Region: region, BaseEndpoint: aws.String(fmt.Sprintf("https://localhost:%d", s.kmsPort)),
			Credentials: s.role.provider(), HTTPClient: hc, Retryer: aws.NopRetryer{}})
		own, err := parent.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(`{"Version": "2012-10-17", "Statement": [
		  {"Effect": "Allow", "Principal": {"AWS": "` + roleARN + `"}, "Action": "kms:*", "Resource": "*"}]}`)})
		if err != nil {
			t.Fatalf("the role creates a key of its own: %v", err)
		}
		out, err := parent.Encrypt(ctx, &kms.EncryptInput{KeyId: own.KeyMetadata.KeyId, Plaintext: chosen})
		if err != nil {
			t.Fatal(err)
		}
		return out.CiphertextBlob
	}

	t.Run("account pinned", func(t *testing.T) {
		s := startStack(t, newScan(t), stackOptions{credentials: "push", policy: pinnedPolicy})
		s.pushCredentials(t)
		planted := plant(t, s)
		local, err := clientFor(s.localAddr)
		if err != nil {
			t.Fatal(err)
		}
		out, err := local.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: planted})
		if err != nil || string(out.Plaintext) != string(chosen) {
			t.Fatalf("with only the account pinned the attack should work, but Decrypt gave %q, %v", out.Plaintext, err)
		}
		t.Logf("account pinned: the enclave app decrypted the parent's plaintext under %s", aws.ToString(out.KeyId))
		if !strings.Contains(s.kmsproxyd.log.String(), "the policy pins no key (kms.keys): any key of the pinned account") {
			t.Error("kmsproxyd did not warn at start that any key of the account is accepted")
		}
	})

	t.Run("keys pinned", func(t *testing.T) {
		s := startStack(t, newScan(t), stackOptions{credentials: "push", policy: keysPolicy})
		s.pushCredentials(t)
		planted := plant(t, s)
		owned, err := s.operatorKMS(t).Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(alias), Plaintext: []byte("the owner's configuration")})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []struct{ name, addr string }{{"parent", s.parentAddr}, {"local", s.localAddr}} {
			c, err := clientFor(l.addr)
			if err != nil {
				t.Fatal(err)
			}
			out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: planted})
			if err == nil {
				t.Fatalf("%s: the enclave app decrypted %q under %s, a key the parent created", l.name, out.Plaintext, aws.ToString(out.KeyId))
			}
			var ae smithy.APIError
			if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDeniedException" || !strings.Contains(ae.ErrorMessage(), "(policy: kms.keys)") {
				t.Fatalf("%s: Decrypt of the planted ciphertext: %v, want AccessDeniedException naming kms.keys", l.name, err)
			}
			hc, err := client.HTTPClient(l.addr)
			if err != nil {
				t.Fatal(err)
			}
			if v, err := metric(hc, `kmsproxy_answers_refused_total{listener="`+l.name+`",operation="Decrypt",rule="kms.keys"}`); err != nil || v != 1 {
				t.Errorf("%s: refused answers counted %v (%v), want 1", l.name, v, err)
			}
			got, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: owned.CiphertextBlob})
			if err != nil || string(got.Plaintext) != "the owner's configuration" {
				t.Errorf("%s: Decrypt under the pinned key: %v", l.name, err)
			}
		}
		if log := s.kmsproxyd.log.String(); strings.Contains(log, "the policy pins no key") || !strings.Contains(log, `"rule":"kms.keys"`) {
			t.Error("kmsproxyd warned about unpinned keys, or did not log the refusal naming kms.keys")
		}
	})
}

// TestParentChoosesTheRegion: under --credentials imds the region comes
// from IMDS, which the parent serves. With kms.regions pinned to another
// region, kmsproxyd refuses to start, naming both regions and the line.
func TestParentChoosesTheRegion(t *testing.T) {
	build(t)
	sc := newScan(t)
	s := startStack(t, sc, stackOptions{credentials: "imds"}) // IMDS says region (eu-west-3)
	pol := s.path("pinned-region.yaml")
	if err := os.WriteFile(pol, []byte("kms:\n  accounts: [\""+account+"\"]\n  regions: [eu-west-1]\nlisteners: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append(s.kmsproxydArgv(s.path("pinned.sock"), "", "unix://"+s.kmsSock, "imds"), "--policy", pol)
	out, err := run(t, sc, "kmsproxyd (region pinned elsewhere)", s.kmsproxydEnv(), nil, ctlTimeout, argv...)
	if code := exitCode(err); code != 1 {
		t.Fatalf("kmsproxyd exited with %d (%v), want 1; output %s", code, err, out)
	}
	want := pol + `:3:12: kms.regions: IMDS (placement/region, which the parent instance serves) names region "` + region + `", but the policy allows only "eu-west-1"`
	if !strings.Contains(err.Error(), want) {
		t.Errorf("kmsproxyd's error does not name both regions and the line:\n%v\nwant %s", err, want)
	}
}
