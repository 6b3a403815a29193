package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"
	"github.com/google/go-tpm/tpm2"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// faultyTPM is a simulated NitroTPM (internal/nitrotpmsim, in the test
// process) served on a unix socket, one command per connection as go-tpm's
// socket transport sends them, whose answers a test can spoil: the TPM a
// real instance might have on a bad day, seen by a real kmsproxyd.
type faultyTPM struct {
	sim  *nitrotpmsim.Simulator
	path string

	mu    sync.Mutex
	fault *tpmFault
	// afterVendor: the NSM vendor command was answered and no NV_Read
	// has been since, so the next NV_Read carries the start of the NSM
	// response (the document).
	afterVendor bool
	applied     int
}

// tpmFault spoils the answer to one command: rsp is what the simulator
// answered, first says whether an NV_Read is the first after the vendor
// command. It returns what kmsproxyd receives, or nil to hang up without
// an answer.
type tpmFault struct {
	name string
	// want is what kmsproxyd's error must say.
	want   []string
	answer func(cc tpm2.TPMCC, rsp []byte, first bool) []byte
}

func startFaultyTPM(t testing.TB, ca *nsmsim.CA, pcrs map[int][]byte, path string) *faultyTPM {
	t.Helper()
	sim, err := nitrotpmsim.New(ca, nitrotpmsim.Options{PCRs: pcrs})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyTPM{sim: sim, path: path}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				f.serve(c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return f
}

// serve answers one framed command.
func (f *faultyTPM) serve(c net.Conn) {
	var hdr [10]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > nitrotpmsim.MaxCommandSize {
		return
	}
	cmd := make([]byte, size)
	copy(cmd, hdr[:])
	if _, err := io.ReadFull(c, cmd[10:]); err != nil {
		return
	}
	cc := tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
	rsp := f.sim.Execute(cmd)
	f.mu.Lock()
	first := cc == tpm2.TPMCCNVRead && f.afterVendor
	switch cc {
	case nitrotpm.CommandNSMRequest:
		f.afterVendor = true
	case tpm2.TPMCCNVRead:
		f.afterVendor = false
	}
	if f.fault != nil {
		if spoilt := f.fault.answer(cc, bytes.Clone(rsp), first); !bytes.Equal(spoilt, rsp) {
			f.applied++
			rsp = spoilt
		}
	}
	f.mu.Unlock()
	if rsp == nil {
		return // hang up
	}
	// One write: go-tpm's socket transport reads the answer with one read.
	_, _ = c.Write(rsp)
}

func (f *faultyTPM) set(fault *tpmFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault, f.applied = fault, 0
}

func (f *faultyTPM) timesApplied() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// waitEmpty waits until no NV index is defined in the TPM: an attestation
// defines one message buffer and removes it before it returns, whether it
// succeeded or not.
func (f *faultyTPM) waitEmpty() error {
	return poll(readyTimeout, func() error {
		if n := f.sim.Defined(); n != 0 {
			return fmt.Errorf("%d NV indices left defined in the TPM", n)
		}
		return nil
	})
}

// rspHeader frames a TPM response: tag, size, response code, body.
func rspHeader(tag tpm2.TPMST, rc tpm2.TPMRC, body []byte) []byte {
	return append(tpm2.Marshal(tpm2.TPMRspHeader{Tag: tag, Length: uint32(10 + len(body)), ResponseCode: rc}), body...)
}

// onVendor replaces the answer to the NSM vendor command.
func onVendor(rsp func(real []byte) []byte) func(tpm2.TPMCC, []byte, bool) []byte {
	return func(cc tpm2.TPMCC, real []byte, _ bool) []byte {
		if cc != nitrotpm.CommandNSMRequest {
			return real
		}
		return rsp(real)
	}
}

// onDocument changes the start of the NSM response, as the first NV_Read
// after the vendor command returns it, in place: an NV_Read answer with
// one password session is the header (10 bytes), the parameter size (4),
// the TPM2B size (2), the data, and the session (5).
func onDocument(change func(data []byte)) func(tpm2.TPMCC, []byte, bool) []byte {
	return func(cc tpm2.TPMCC, rsp []byte, first bool) []byte {
		if !first || len(rsp) < 16+5 || binary.BigEndian.Uint32(rsp[6:10]) != 0 {
			return rsp
		}
		change(rsp[16 : len(rsp)-5])
		return rsp
	}
}

// The bad days, each what the unit tests of internal/nitrotpm feed the
// client, here through a running kmsproxyd.
var tpmFaults = []tpmFault{
	// A response shorter than a TPM header ends inside go-tpm's read of the
	// header (tpmutil.RunCommandRaw), which is how a real device's short
	// read surfaces too: an I/O failure of the step, "unexpected EOF".
	{name: "short vendor response", want: []string{"nitrotpm: TPM device I/O failed", "NSM vendor command", "unexpected EOF"},
		answer: onVendor(func([]byte) []byte { return []byte{0x80, 0x01, 0, 0} })},
	{name: "oversized vendor response", want: []string{"nitrotpm: malformed response"},
		answer: onVendor(func(real []byte) []byte {
			return rspHeader(tpm2.TPMSTSessions, tpm2.TPMRCSuccess, make([]byte, 8192))
		})},
	{name: "malformed vendor response (bad tag)", want: []string{"nitrotpm: malformed response"},
		answer: onVendor(func([]byte) []byte { return rspHeader(0x00c1, tpm2.TPMRCSuccess, nil) })},
	{name: "TPM error code", want: []string{"nitrotpm: TPM refused a command", "TPM_RC_FAILURE"},
		answer: onVendor(func([]byte) []byte { return rspHeader(tpm2.TPMSTNoSessions, tpm2.TPMRCFailure, nil) })},
	{name: "garbage instead of the NSM response", want: []string{"nitrotpm: malformed response"},
		answer: onDocument(func(d []byte) {
			for i := range d {
				d[i] = 0xa5
			}
		})},
	{name: "a document with an enclave's module ID", want: []string{"nitrotpm: unusable document", "wrong module ID form"},
		answer: onDocument(func(d []byte) {
			if i := bytes.Index(d, []byte("-tpm0000")); i >= 0 {
				copy(d[i:], "-enc")
			}
		})},
	{name: "device hangs up", want: []string{"nitrotpm: TPM device I/O failed"},
		answer: func(cc tpm2.TPMCC, rsp []byte, _ bool) []byte {
			if cc == nitrotpm.CommandNSMRequest {
				return nil
			}
			return rsp
		}},
}

// readiness is kmsproxyd's /readyz, the parts the tests read.
type readiness struct {
	Ready     bool `json:"ready"`
	Recipient struct {
		KeyFingerprint   string `json:"key_fingerprint"`
		AttestationError string `json:"attestation_error"`
	} `json:"recipient"`
}

func readyz(addr string) (readiness, int, error) {
	hc, err := client.HTTPClient(addr)
	if err != nil {
		return readiness{}, 0, err
	}
	defer hc.CloseIdleConnections()
	hc.Timeout = 10 * time.Second
	resp, err := hc.Get(client.Endpoint + "/readyz")
	if err != nil {
		return readiness{}, 0, err
	}
	defer resp.Body.Close()
	var rd readiness
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&rd)
	return rd, resp.StatusCode, err
}

// remoteAttestation asks kmsproxyd for a fresh document for a remote
// verifier (POST /v1/attestation): the one request that always goes to the
// TPM, whatever the document in use. kmsproxyd rate-limits these per
// listener (a burst, then one every 500ms) with ThrottlingException; like
// any client, it backs off and retries, at most 40 times.
func remoteAttestation(addr string, nonce []byte) (int, []byte, error) {
	hc, err := client.HTTPClient(addr)
	if err != nil {
		return 0, nil, err
	}
	defer hc.CloseIdleConnections()
	hc.Timeout = 30 * time.Second
	body, _ := json.Marshal(map[string][]byte{"nonce": nonce})
	for range 40 {
		resp, err := hc.Post(client.Endpoint+"/v1/attestation", "application/json", bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil || !bytes.Contains(b, []byte(`"__type":"ThrottlingException"`)) {
			return resp.StatusCode, b, err
		}
		time.Sleep(250 * time.Millisecond)
	}
	return 0, nil, errors.New("POST /v1/attestation: throttled 40 times in a row")
}

// TestInstanceTPMFaults: a NitroTPM that answers badly (a short, oversized
// or malformed vendor response, a TPM error code, garbage instead of the
// NSM response, a document with an enclave's module ID, a device that
// hangs up) never takes kmsproxyd down or loses its state:
//
//   - while its document is valid, kmsproxyd keeps serving with it: every
//     fault fails the fresh document a remote verifier asks for, with a
//     KMS-shaped error naming the attestation step and a log line naming
//     the cause, while Decrypt goes on working and /readyz stays ready;
//     the TPM is left with no NV index defined, and the next attestation
//     works once the TPM does;
//   - when the document must be renewed and the TPM keeps failing,
//     /readyz says not ready and why, Decrypt fails naming the attestation
//     step, and once the TPM answers again kmsproxyd is ready with the same
//     recipient key, without a restart.
func TestInstanceTPMFaults(t *testing.T) {
	build(t) // before the watchdog starts
	sc := newScan(t)
	s := startInstanceWorld(t, sc)
	ca, err := nsmsim.LoadCA(s.path("simca"))
	if err != nil {
		t.Fatal(err)
	}
	secret, instanceBlob, _ := s.instanceCiphertexts(t)
	decrypt := func(c *kms.Client) ([]byte, error) {
		out, err := c.Decrypt(context.Background(), &kms.DecryptInput{CiphertextBlob: instanceBlob, EncryptionContext: map[string]string{"tenant": "acme"}})
		if err != nil {
			return nil, err
		}
		return out.Plaintext, nil
	}

	t.Run("kmsproxyd keeps serving with its document", func(t *testing.T) {
		tpm := startFaultyTPM(t, ca, amiPCRs(amiLabel), s.path("faulty.sock"))
		d := s.startInstanceKmsproxyd(t, "kmsproxyd-faults", "--attestation", "nitrotpm-sim", "--tpm-device", "unix://"+tpm.path)
		c, err := clientFor(d.parent)
		if err != nil {
			t.Fatal(err)
		}
		before, _, err := readyz(d.parent)
		if err != nil || !before.Ready {
			t.Fatalf("/readyz before the faults: %+v, %v", before, err)
		}
		for _, f := range tpmFaults {
			t.Run(f.name, func(t *testing.T) {
				tpm.set(&f)
				defer tpm.set(nil)
				logged := len(d.proc.log.String())
				code, body, err := remoteAttestation(d.parent, []byte("verifier nonce"))
				if err != nil {
					t.Fatal(err)
				}
				if code != http.StatusInternalServerError || !strings.Contains(string(body), `"__type":"KMSInternalException"`) || !strings.Contains(string(body), "attestation: ") {
					t.Fatalf("POST /v1/attestation with the fault: %d %s, want 500 KMSInternalException naming the attestation step", code, body)
				}
				if tpm.timesApplied() == 0 {
					t.Fatal("the fault never reached kmsproxyd")
				}
				// kmsproxyd's log says why (the line reaches the test
				// through kmsproxyd's stderr pipe, a moment later).
				var line string
				if err := poll(readyTimeout, func() error {
					for _, l := range strings.Split(d.proc.log.String()[logged:], "\n") {
						if strings.Contains(l, "attestation for a remote verifier failed") {
							line = l
							return nil
						}
					}
					return errors.New("kmsproxyd logged no failed attestation")
				}); err != nil {
					t.Fatal(err)
				}
				for _, w := range f.want {
					if !strings.Contains(line, w) {
						t.Errorf("kmsproxyd's log line %q does not say %q", line, w)
					}
				}
				// The recipient's document is untouched: Decrypt works
				// while the TPM is still failing, and kmsproxyd is ready.
				if got, err := decrypt(c); err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("Decrypt during the fault: %v", err)
				}
				if rd, code, err := readyz(d.parent); err != nil || code != http.StatusOK || !rd.Ready || rd.Recipient.KeyFingerprint != before.Recipient.KeyFingerprint {
					t.Fatalf("/readyz during the fault: %d %+v, %v", code, rd, err)
				}
				// Nothing stays in the TPM (kmsproxyd may be attesting its
				// next key in the background: wait for it), and the next
				// attestation works once the TPM does.
				tpm.set(nil)
				if err := tpm.waitEmpty(); err != nil {
					t.Error(err)
				}
				code, body, err = remoteAttestation(d.parent, []byte("after"))
				if err != nil || code != http.StatusOK {
					t.Fatalf("POST /v1/attestation after the fault: %d %s, %v", code, body, err)
				}
				var att struct{ Document string }
				if err := json.Unmarshal(body, &att); err != nil {
					t.Fatal(err)
				}
				raw, _ := base64.StdEncoding.DecodeString(att.Document)
				doc, err := attestation.Parse(raw)
				if err != nil || doc.Kind != attestation.KindNitroTPM || string(doc.Nonce) != "after" {
					t.Fatalf("the document after the fault: %v", err)
				}
			})
		}
		if d.proc.exited() {
			t.Fatalf("kmsproxyd exited:\n%s", d.proc.log)
		}
		if code := d.proc.stop(); code != 0 {
			t.Errorf("kmsproxyd exited with status %d after SIGTERM, want 0", code)
		}
	})

	t.Run("the document expires while the TPM fails", func(t *testing.T) {
		tpm := startFaultyTPM(t, ca, amiPCRs(amiLabel), s.path("failing.sock"))
		d := s.startInstanceKmsproxyd(t, "kmsproxyd-expiry", "--attestation", "nitrotpm-sim", "--tpm-device", "unix://"+tpm.path, "--attestation-ttl", "2s")
		c, err := clientFor(d.parent)
		if err != nil {
			t.Fatal(err)
		}
		before, _, err := readyz(d.parent)
		if err != nil || !before.Ready {
			t.Fatalf("/readyz before the fault: %+v, %v", before, err)
		}
		fault := tpmFaults[3] // TPM error code
		tpm.set(&fault)
		var rd readiness
		if err := poll(readyTimeout, func() error {
			var code int
			var err error
			rd, code, err = readyz(d.parent)
			if err != nil {
				return err
			}
			if code != http.StatusServiceUnavailable || rd.Ready {
				return fmt.Errorf("/readyz: %d %+v", code, rd)
			}
			return nil
		}); err != nil {
			t.Fatalf("kmsproxyd stays ready with a document it cannot renew: %v", err)
		}
		for _, w := range fault.want {
			if !strings.Contains(rd.Recipient.AttestationError, w) {
				t.Errorf("/readyz attestation_error %q does not say %q", rd.Recipient.AttestationError, w)
			}
		}
		_, err = decrypt(c)
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "KMSInternalException" || !strings.HasPrefix(ae.ErrorMessage(), "attestation: ") {
			t.Fatalf("Decrypt with an expired document and a failing TPM: %v, want KMSInternalException naming the attestation step", err)
		}

		tpm.set(nil)
		if err := poll(readyTimeout, func() error {
			rd, code, err := readyz(d.parent)
			if err != nil {
				return err
			}
			if code != http.StatusOK || !rd.Ready {
				return fmt.Errorf("/readyz: %d %+v", code, rd)
			}
			return nil
		}); err != nil {
			t.Fatalf("kmsproxyd did not recover once the TPM answered again: %v", err)
		}
		if got, err := decrypt(c); err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("Decrypt after the TPM recovered: %v", err)
		}
		after, _, err := readyz(d.parent)
		if err != nil || after.Recipient.KeyFingerprint != before.Recipient.KeyFingerprint {
			t.Errorf("recipient key after the fault %q, before %q (%v): the key must survive a TPM failure", after.Recipient.KeyFingerprint, before.Recipient.KeyFingerprint, err)
		}
		if err := tpm.waitEmpty(); err != nil {
			t.Error(err)
		}
		if code := d.proc.stop(); code != 0 {
			t.Errorf("kmsproxyd exited with status %d after SIGTERM, want 0", code)
		}
	})
}
