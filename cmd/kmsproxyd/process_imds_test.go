package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

// The parent instance's role as devkms's IMDS serves it, and an operator
// who encrypts.
const (
	parentRole = "arn:aws:iam::111122223333:role/enclave-parent"
	imdsRegion = "eu-west-2" // not devkms's default: kmsproxyd must learn it
)

var operator = devkms.Credential{AccessKeyID: "AKIAOPERATOR00000001", SecretAccessKey: "operator-secret",
	Principal: "arn:aws:iam::111122223333:user/operator"}

// roleKeyPolicy lets the operator encrypt and the parent's role decrypt,
// only with an attestation document (Recipient).
const roleKeyPolicy = `{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/operator"},"Action":"kms:Encrypt","Resource":"*"},
 {"Effect":"Allow","Principal":{"AWS":"` + parentRole + `"},"Action":"kms:Decrypt","Resource":"*",
  "Condition":{"Null":{"kms:RecipientAttestation:ImageSha384":"false"}}}]}`

// offsetClock is devkms's clock: the real time plus an offset the test
// moves forward.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// SetAtLeast moves the clock to t, or leaves it where it is when it is
// already later (it never goes back).
func (c *offsetClock) SetAtLeast(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if off := time.Until(t); off > c.offset {
		c.offset = off
	}
}

// startIMDSDaemon runs kmsproxyd with the simulated NSM, credentials from
// devkms's IMDS (--credentials imds --imds-dial) and no --region.
func startIMDSDaemon(t *testing.T, kmsd *devkmstest.Instance, caDir string) *daemon {
	t.Helper()
	sock, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	d := &daemon{out: &syncBuffer{}, done: make(chan struct{}), parent: filepath.Join(sock, "parent.sock")}
	d.cmd = exec.Command(simBinary(t),
		"--nsm", "sim", "--sim-ca", caDir,
		"--credentials", "imds", "--imds-dial", "tcp://"+kmsd.IMDSAddr,
		"--kms-endpoint", kmsd.URL, "--kms-dial", "tcp://"+kmsd.Addr, "--kms-ca", kmsd.CAFile,
		"--listen-parent", "unix://"+d.parent, "--listen-local", "tcp://127.0.0.1:0")
	// No AWS_* variable of this machine's may reach it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "KMSPROXY_") {
			d.cmd.Env = append(d.cmd.Env, kv)
		}
	}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.done
	})
	return d
}

// readyz is what the test reads of kmsproxyd's /readyz.
type readyz struct {
	Ready       bool `json:"ready"`
	Credentials struct {
		Mode    string    `json:"mode"`
		Ready   bool      `json:"ready"`
		Expires time.Time `json:"expires"`
	} `json:"credentials"`
}

// readReadyz GETs /readyz on the parent listener.
func (d *daemon) readReadyz(t *testing.T) readyz {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.parent)
		}}}
	resp, err := hc.Get("http://kmsproxyd/readyz")
	if err != nil {
		t.Fatalf("readyz: %v\n%s", err, d.out.String())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var r readyz
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("readyz %s: %v", b, err)
	}
	return r
}

// roleDocument reads the role's credential document from devkms's IMDS as
// an IMDSv2 client does.
type roleDocument struct {
	AccessKeyId, SecretAccessKey, Token string
	Expiration                          time.Time
}

func fetchRoleDocument(t *testing.T, kmsd *devkmstest.Instance) roleDocument {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest(http.MethodPut, kmsd.IMDSURL+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	req, _ = http.NewRequest(http.MethodGet, kmsd.IMDSURL+"/latest/meta-data/iam/security-credentials/enclave-parent", nil)
	req.Header.Set("X-aws-ec2-metadata-token", string(tok))
	if resp, err = hc.Do(req); err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc roleDocument
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.AccessKeyId == "" {
		t.Fatalf("credential document: %v (status %d)", err, resp.StatusCode)
	}
	return doc
}

// encryptedSecret is a ciphertext of plaintext under a key with
// roleKeyPolicy, encrypted by the operator.
func encryptedSecret(t *testing.T, kmsd *devkmstest.Instance, plaintext string) []byte {
	t.Helper()
	key := kmsd.CreateKey(t, roleKeyPolicy)
	out, err := kmsd.ClientFor(t, operator.AccessKeyID).Encrypt(context.Background(), &kms.EncryptInput{KeyId: &key, Plaintext: []byte(plaintext)})
	if err != nil {
		t.Fatalf("Encrypt as the operator: %v", err)
	}
	return out.CiphertextBlob
}

// decryptThrough decrypts blob through kmsproxyd's parent listener.
func decryptThrough(t *testing.T, d *daemon, blob []byte, want string) {
	t.Helper()
	ctx := context.Background()
	c, err := client.New(ctx, "unix://"+d.parent)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: blob})
	if err != nil || string(out.Plaintext) != want {
		t.Fatalf("Decrypt through kmsproxyd: %v\n%s", err, d.out.String())
	}
}

// TestDaemonIMDSCredentials: kmsproxyd in its default credentials mode
// (imds) against devkms's IMDS, without --region: it learns the region and
// the instance role's credentials from IMDS, /readyz shows their expiry,
// and an attested Decrypt that only the role may do succeeds.
func TestDaemonIMDSCredentials(t *testing.T) {
	ca, caDir := simCADir(t)
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()), devkmstest.WithIMDS(),
		devkmstest.WithCredentials(operator),
		devkmstest.WithConfig(func(c *devkms.Config) { c.Region = imdsRegion }))
	blob := encryptedSecret(t, kmsd, "from the role")
	doc := fetchRoleDocument(t, kmsd)

	d := startIMDSDaemon(t, kmsd, caDir)
	d.waitReady(t)
	rd := d.readReadyz(t)
	if rd.Credentials.Mode != "imds" || !rd.Credentials.Ready || !rd.Credentials.Expires.Equal(doc.Expiration) {
		t.Errorf("/readyz credentials %+v, want mode imds, ready, expiring at IMDS's Expiration %s", rd.Credentials, doc.Expiration)
	}
	decryptThrough(t, d, blob, "from the role")

	// The operator cannot decrypt, with or without kmsproxyd's help: the
	// key policy gives Decrypt to the role only.
	_, err := kmsd.ClientFor(t, operator.AccessKeyID).Decrypt(context.Background(), &kms.DecryptInput{CiphertextBlob: blob})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "AccessDeniedException" {
		t.Fatalf("Decrypt as the operator: %v, want AccessDeniedException", err)
	}
	logs := d.out.String()
	if !strings.Contains(logs, imdsRegion) {
		t.Errorf("kmsproxyd's log does not name the region it learnt from IMDS:\n%s", logs)
	}
	for _, secret := range []string{doc.SecretAccessKey, doc.Token, "from the role"} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret appears in kmsproxyd's log")
		}
	}
}

// TestDaemonIMDSCredentialsRotate: with the shortest credential lifetime
// (2m, the next set served one minute ahead), kmsproxyd picks up the next
// set before the current one expires, and keeps decrypting after devkms's
// clock passes the first set's Expiration, which devkms then refuses
// (ExpiredTokenException). devkms's clock is moved forward; kmsproxyd
// re-reads IMDS every 30 seconds near expiry, so the test waits for one such
// poll (bounded).
func TestDaemonIMDSCredentialsRotate(t *testing.T) {
	ca, caDir := simCADir(t)
	clock := &offsetClock{}
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()), devkmstest.WithIMDS(),
		devkmstest.WithCredentials(operator),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.Region = imdsRegion
			c.Now = clock.Now
			c.IMDSCredentialLifetime = devkms.MinIMDSCredentialLifetime
		}))
	blob := encryptedSecret(t, kmsd, "across a rotation")
	first := fetchRoleDocument(t, kmsd)

	d := startIMDSDaemon(t, kmsd, caDir)
	d.waitReady(t)
	if rd := d.readReadyz(t); !rd.Credentials.Expires.Equal(first.Expiration) {
		t.Fatalf("/readyz credentials expire %s, want the first set's %s", rd.Credentials.Expires, first.Expiration)
	}
	decryptThrough(t, d, blob, "across a rotation")

	// devkms's clock to one minute before the first set expires: IMDS
	// serves the second set from now on.
	clock.SetAtLeast(first.Expiration.Add(-time.Minute))
	second := fetchRoleDocument(t, kmsd)
	if second.AccessKeyId == first.AccessKeyId {
		t.Fatalf("IMDS still serves the first set one minute before it expires")
	}
	deadline := time.Now().Add(3 * time.Minute)
	for !d.readReadyz(t).Credentials.Expires.Equal(second.Expiration) {
		select {
		case <-d.done:
			t.Fatalf("kmsproxyd exited:\n%s", d.out.String())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kmsproxyd did not pick up the second set (expiring %s) within 3 minutes:\n%s", second.Expiration, d.out.String())
		}
	}
	decryptThrough(t, d, blob, "across a rotation")

	// devkms's clock past the first set's Expiration: it is refused, and
	// kmsproxyd, on the second set, goes on.
	clock.SetAtLeast(first.Expiration.Add(time.Second))
	stale := kmsd.ClientWith(t, devkms.Credential{AccessKeyID: first.AccessKeyId, SecretAccessKey: first.SecretAccessKey, SessionToken: first.Token})
	_, err := stale.Decrypt(context.Background(), &kms.DecryptInput{CiphertextBlob: blob})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ExpiredTokenException" || ae.ErrorMessage() != "The security token included in the request is expired" {
		t.Fatalf("a call with the first set after its Expiration: %v, want ExpiredTokenException", err)
	}
	decryptThrough(t, d, blob, "across a rotation")
	if rd := d.readReadyz(t); !rd.Ready || rd.Credentials.Expires.Before(second.Expiration) {
		t.Errorf("/readyz after the first set expired: %+v", rd)
	}
	logs := d.out.String()
	for _, secret := range []string{first.SecretAccessKey, first.Token, second.SecretAccessKey, second.Token} {
		if strings.Contains(logs, secret) {
			t.Errorf("a secret appears in kmsproxyd's log")
		}
	}
}
