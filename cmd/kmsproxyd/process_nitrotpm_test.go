package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// instancePCRs are the measurements of a made-up Attestable AMI, in the
// file nitro-tpm-pcr-compute would print for it.
func instancePCRs(t *testing.T) (map[int][]byte, string) {
	t.Helper()
	pcrs := map[int][]byte{}
	for _, i := range []int{4, 7, 12} {
		h := sha256.Sum256([]byte{byte(i)})
		pcrs[i] = append(h[:], h[:16]...)
	}
	b, err := nitrotpmsim.MarshalMeasurements(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "measurements.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return pcrs, path
}

// get fetches a control endpoint on the daemon's parent listener.
func (d *daemon) get(t *testing.T, path string, v any) {
	t.Helper()
	d.do(t, http.MethodGet, path, nil, v)
}

func (d *daemon) do(t *testing.T, method, path string, body []byte, v any) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.parent)
	}}}
	req, err := http.NewRequest(method, "http://kmsproxyd"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, b)
	}
}

type infoBody struct {
	Attestation    string            `json:"attestation"`
	PCRs           map[string]string `json:"pcrs"`
	KeyFingerprint string            `json:"key_fingerprint"`
}

// TestDaemonOnSimulatedInstance runs the real binary as on an attested
// instance: its NitroTPM is the simulator, served by this test on a unix
// socket that stands in for /dev/tpmrm0. kmsproxyd gets a NitroTPM
// document that carries its recipient key from it, sends it to KMS
// (devkms) as the Recipient, and opens the answer.
func TestDaemonOnSimulatedInstance(t *testing.T) {
	ca, _ := simCADir(t)
	pcrs, _ := instancePCRs(t)
	var (
		mu     sync.Mutex
		signed [][]byte
	)
	sim, err := nitrotpmsim.New(ca, nitrotpmsim.Options{PCRs: pcrs, Signed: func(doc []byte) {
		mu.Lock()
		defer mu.Unlock()
		signed = append(signed, doc)
	}})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "tpmrm0.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sim.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })

	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
	keyID := kmsd.CreateKey(t, "")
	enc, err := kmsd.Client(t).Encrypt(context.Background(), &kms.EncryptInput{KeyId: &keyID, Plaintext: []byte("instance secret")})
	if err != nil {
		t.Fatal(err)
	}

	d := startDaemonWith(t, kmsd, []string{"--attestation", "nitrotpm-sim", "--tpm-device", "unix://" + sock})
	d.waitReady(t)
	var info infoBody
	d.get(t, "/v1/info", &info)
	if info.Attestation != "NitroTPM" || info.PCRs["4"] != hex.EncodeToString(pcrs[4]) || len(info.PCRs) != attestation.NitroTPMPCRCount {
		t.Errorf("/v1/info = %+v, want the instance's 24 PCRs", info)
	}

	// The document the daemon got from the (simulated) NitroTPM carries
	// its recipient key.
	mu.Lock()
	docs := append([][]byte(nil), signed...)
	mu.Unlock()
	var found *attestation.Document
	for _, b := range docs {
		doc, err := attestation.Parse(b)
		if err != nil {
			t.Fatalf("the simulator signed an unparsable document: %v", err)
		}
		sum := sha256.Sum256(doc.PublicKey)
		if hex.EncodeToString(sum[:]) == info.KeyFingerprint {
			found = doc
		}
	}
	if found == nil {
		t.Fatalf("none of the %d documents the NitroTPM signed carries key %s", len(docs), info.KeyFingerprint)
	}
	if err := attestation.Verify(found, ca.Roots(), found.Timestamp); err != nil {
		t.Fatal(err)
	}
	if _, err := attestation.RecipientKey(found); err != nil || found.Kind != attestation.KindNitroTPM || !bytes.Equal(found.NitroTPMPCRs[12], pcrs[12]) {
		t.Fatalf("document: %v, kind %v", err, found.Kind)
	}

	// KMS (devkms) takes it as the Recipient; kmsproxyd opens the answer.
	c, err := client.New(context.Background(), "unix://"+d.parent)
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Decrypt(context.Background(), &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
	if err != nil || string(out.Plaintext) != "instance secret" {
		t.Fatalf("Decrypt through kmsproxyd on the instance: %v\n%s", err, d.out.String())
	}
	// A clean stop leaves no message buffer behind in the TPM's NV memory.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.exitCode(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, d.out.String())
	}
	if n := sim.Defined(); n != 0 {
		t.Errorf("%d NV indices left defined in the TPM", n)
	}
}

// TestDaemonInProcessNitroTPMSimulator: without --tpm-device, the
// nitrotpm-sim source runs the simulator inside kmsproxyd with the CA and
// the nitro-tpm-pcr-compute measurements given; a remote verifier's
// document is a NitroTPM one with those PCRs.
func TestDaemonInProcessNitroTPMSimulator(t *testing.T) {
	ca, caDir := simCADir(t)
	pcrs, pcrsFile := instancePCRs(t)
	kmsd := devkmstest.Start(t, devkmstest.WithTrustRoots(ca.RootCertificate()))
	d := startDaemonWith(t, kmsd, []string{"--attestation", "nitrotpm-sim", "--sim-ca", caDir, "--sim-pcrs", pcrsFile})
	d.waitReady(t)
	nonce := []byte("remote verifier")
	body, _ := json.Marshal(map[string][]byte{"nonce": nonce})
	var att struct{ Document string }
	d.do(t, http.MethodPost, "/v1/attestation", body, &att)
	raw, err := base64.StdEncoding.DecodeString(att.Document)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := attestation.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(doc, ca.Roots(), doc.Timestamp); err != nil {
		t.Fatal(err)
	}
	if doc.Kind != attestation.KindNitroTPM || doc.ModuleID != nsmsim.DefaultNitroTPMModuleID || !bytes.Equal(doc.Nonce, nonce) {
		t.Fatalf("document: %v from %s, nonce %q", doc.Kind, doc.ModuleID, doc.Nonce)
	}
	for i, v := range pcrs {
		if !bytes.Equal(doc.NitroTPMPCRs[i], v) {
			t.Errorf("PCR%d = %x, want the measured %x", i, doc.NitroTPMPCRs[i], v)
		}
	}
}
