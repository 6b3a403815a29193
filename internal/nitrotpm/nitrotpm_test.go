package nitrotpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// fixture is a simulated NitroTPM and a Device talking to it through a
// transport the test can tamper with.
type fixture struct {
	ca     *nsmsim.CA
	sim    *nitrotpmsim.Simulator
	faults *faulty
	dev    *nitrotpm.Device
}

func newFixture(t testing.TB, opts nitrotpmsim.Options) *fixture {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := nitrotpmsim.New(ca, opts)
	if err != nil {
		t.Fatal(err)
	}
	pipe := sim.Pipe()
	f := &fixture{ca: ca, sim: sim, faults: &faulty{inner: pipe}}
	f.dev = nitrotpm.New(f.faults, pipe)
	t.Cleanup(func() { f.dev.Close() })
	return f
}

// faulty passes commands to the simulator and lets a test change what
// the client receives.
type faulty struct {
	inner transport.TPM
	mu    sync.Mutex
	// rewrite, if set, sees every command and returns what the client
	// receives; send passes the command to the simulator (a rewrite that
	// does not call it answers in the TPM's place).
	rewrite rewriter
}

type rewriter func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error)

func (f *faulty) Send(cmd []byte) ([]byte, error) {
	f.mu.Lock()
	rw := f.rewrite
	f.mu.Unlock()
	send := func() ([]byte, error) { return f.inner.Send(cmd) }
	if rw == nil {
		return send()
	}
	return rw(tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])), cmd, send)
}

// after lets the simulator answer, then changes its response.
func after(change func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error)) rewriter {
	return func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error) {
		rsp, err := send()
		if err != nil {
			return nil, err
		}
		return change(cc, cmd, rsp)
	}
}

func (f *faulty) set(rw rewriter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rewrite = rw
}

func rsaSPKI(t testing.TB) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verify parses and verifies a document from the simulator.
func (f *fixture) verify(t testing.TB, b []byte) *attestation.Document {
	t.Helper()
	doc, err := attestation.Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if err := attestation.Verify(doc, f.ca.Roots(), doc.Timestamp); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return doc
}

func TestAttest(t *testing.T) {
	measured := map[int][]byte{4: bytes.Repeat([]byte{4}, 48), 7: bytes.Repeat([]byte{7}, 48), 12: bytes.Repeat([]byte{12}, 48)}
	f := newFixture(t, nitrotpmsim.Options{PCRs: measured})
	spki := rsaSPKI(t)
	tests := []struct {
		name string
		req  attestation.Request
	}{
		{name: "recipient key", req: attestation.Request{PublicKey: spki}},
		{name: "every field", req: attestation.Request{PublicKey: spki, UserData: []byte("user"), Nonce: []byte("nonce")}},
		{name: "nothing", req: attestation.Request{}},
		{name: "every field at the limit", req: attestation.Request{
			PublicKey: bytes.Repeat([]byte{1}, attestation.MaxPublicKeySize),
			UserData:  bytes.Repeat([]byte{2}, attestation.MaxUserDataSize),
			Nonce:     bytes.Repeat([]byte{3}, attestation.MaxNonceSize),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := f.dev.Attest(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			doc := f.verify(t, b)
			if doc.Kind != attestation.KindNitroTPM || doc.ModuleID != nsmsim.DefaultNitroTPMModuleID {
				t.Errorf("got a %v document from %s", doc.Kind, doc.ModuleID)
			}
			got := [][]byte{doc.PublicKey, doc.UserData, doc.Nonce}
			want := [][]byte{tt.req.PublicKey, tt.req.UserData, tt.req.Nonce}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("requested fields (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(nitrotpmsim.DefaultPCRs(measured), doc.NitroTPMPCRs); diff != "" {
				t.Errorf("nitrotpm_pcrs (-want +got):\n%s", diff)
			}
			if n := f.sim.Defined(); n != 0 {
				t.Errorf("%d NV indices left defined", n)
			}
		})
	}

	t.Run("past the limit", func(t *testing.T) {
		_, err := f.dev.Attest(context.Background(), attestation.Request{Nonce: make([]byte, attestation.MaxNonceSize+1)})
		if !errors.Is(err, attestation.ErrTooLarge) {
			t.Fatalf("Attest = %v, want attestation.ErrTooLarge", err)
		}
	})
	t.Run("context done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := f.dev.Attest(ctx, attestation.Request{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Attest = %v, want context.Canceled", err)
		}
	})
}

// TestAttestConcurrently: requests take turns on the one TPM; every one
// gets its own document and no message buffer is left behind.
func TestAttestConcurrently(t *testing.T) {
	f := newFixture(t, nitrotpmsim.Options{})
	const workers, each = 4, 3
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				nonce := []byte{byte(w), byte(i)}
				b, err := f.dev.Attest(context.Background(), attestation.Request{Nonce: nonce})
				if err == nil {
					var doc *attestation.Document
					if doc, err = attestation.Parse(b); err == nil && !bytes.Equal(doc.Nonce, nonce) {
						err = errors.New("a document carries another request's nonce")
					}
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := f.sim.Defined(); n != 0 {
		t.Errorf("%d NV indices left defined", n)
	}
}

// TestAttestOverUnixSocket: the simulator served on a unix socket, reached
// with go-tpm's transport for socket TPMs (one connection per command),
// as kmsproxyd does with --tpm-device unix://.
func TestAttestOverUnixSocket(t *testing.T) {
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := nitrotpmsim.New(ca, nitrotpmsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "tpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "tpm.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- sim.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	tpm, err := linuxudstpm.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	dev := nitrotpm.New(tpm, tpm)
	defer dev.Close()
	b, err := dev.Attest(context.Background(), attestation.Request{Nonce: []byte("socket")})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	doc, err := attestation.Parse(b)
	if err != nil || attestation.Verify(doc, ca.Roots(), doc.Timestamp) != nil || string(doc.Nonce) != "socket" {
		t.Fatalf("document over the socket: %v", err)
	}
}

// Helpers that build TPM responses the way a TPM frames them.

func header(tag tpm2.TPMST, rc tpm2.TPMRC, body []byte) []byte {
	return append(tpm2.Marshal(tpm2.TPMRspHeader{Tag: tag, Length: uint32(10 + len(body)), ResponseCode: rc}), body...)
}

func rcResponse(rc tpm2.TPMRC) []byte { return header(tpm2.TPMSTNoSessions, rc, nil) }

// sessionResponse frames params with one password authorization response.
func sessionResponse(params []byte) []byte {
	body := binary.BigEndian.AppendUint32(nil, uint32(len(params)))
	body = append(body, params...)
	body = append(body, tpm2.Marshal(tpm2.TPMSAuthResponse{
		Nonce: tpm2.TPM2BNonce{Buffer: []byte{}}, Attributes: tpm2.TPMASession{ContinueSession: true}, Authorization: tpm2.TPM2BData{Buffer: []byte{}},
	})...)
	return header(tpm2.TPMSTSessions, tpm2.TPMRCSuccess, body)
}

// onFirstRead rewrites the data of the first NV_Read after the vendor
// command (the start of the NSM response).
func onFirstRead(change func(data []byte) []byte) rewriter {
	var mu sync.Mutex
	done := false
	return after(func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if cc != tpm2.TPMCCNVRead || done || rsp[9] != 0 {
			return rsp, nil
		}
		done = true
		data := change(bytes.Clone(rsp[16 : len(rsp)-5]))
		return sessionResponse(tpm2.Marshal(tpm2.TPM2BMaxNVBuffer{Buffer: data})), nil
	})
}

// only answers commands of one code with rsp in the TPM's place.
func only(code tpm2.TPMCC, rsp []byte) rewriter {
	return func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error) {
		if cc == code {
			return rsp, nil
		}
		return send()
	}
}

// nsmResponse is an NSM response as it starts the message buffer,
// padded to a read chunk with what an erased buffer holds.
func nsmResponse(t testing.TB, v any, size int) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, bytes.Repeat([]byte{0xff}, size-len(b))...)
}

// TestBadResponses: whatever the TPM answers, the client returns a typed
// error naming the step, never panics, leaves no message buffer behind,
// and the device keeps working for the next request.
func TestBadResponses(t *testing.T) {
	spki := rsaSPKI(t)
	enclaveSim := func() []byte {
		ca, _ := nsmsim.NewCA()
		s, err := nsmsim.New(ca, nsmsim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := s.Attest(context.Background(), attestation.Request{PublicKey: spki})
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}()
	vendor := nitrotpm.CommandNSMRequest
	tests := []struct {
		name    string
		rewrite rewriter
		want    error
		check   func(t *testing.T, e *nitrotpm.Error)
	}{
		{name: "vendor response short", rewrite: only(vendor, []byte{0x80, 0x01, 0, 0}), want: nitrotpm.ErrResponse},
		{name: "vendor response empty", rewrite: only(vendor, []byte{}), want: nitrotpm.ErrResponse},
		{name: "vendor response oversized", rewrite: only(vendor, sessionResponse(make([]byte, 200))), want: nitrotpm.ErrResponse},
		{name: "vendor response past the size limit", rewrite: only(vendor, authResponse(65)), want: nitrotpm.ErrResponse},
		{name: "NSM response longer than the message buffer", rewrite: onFirstRead(func(d []byte) []byte {
			// {"Attestation": {"document": <10000 bytes>}}: the head
			// promises more than the 8192-byte buffer holds.
			head := []byte("\xa1kAttestation\xa1hdocumentY\x27\x10")
			return append(head, d[len(head):]...)
		}), want: nitrotpm.ErrResponse},
		{name: "vendor response at the size limit with parameters", rewrite: only(vendor, header(tpm2.TPMSTSessions, 0, append(binary.BigEndian.AppendUint32(nil, 1), make([]byte, 1+5)...))), want: nitrotpm.ErrResponse},
		{name: "vendor response size field lies", rewrite: after(func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error) {
			if cc != vendor {
				return rsp, nil
			}
			r := bytes.Clone(rsp)
			binary.BigEndian.PutUint32(r[2:6], uint32(len(r)+10))
			return r, nil
		}), want: nitrotpm.ErrResponse},
		{name: "vendor response trailing bytes", rewrite: after(func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error) {
			if cc != vendor {
				return rsp, nil
			}
			r := append(bytes.Clone(rsp), 0)
			binary.BigEndian.PutUint32(r[2:6], uint32(len(r)))
			return r, nil
		}), want: nitrotpm.ErrResponse},
		{name: "vendor response bad tag", rewrite: only(vendor, header(0x00c1, 0, nil)), want: nitrotpm.ErrResponse},
		{name: "vendor command unknown", rewrite: only(vendor, rcResponse(tpm2.TPMRCCommandCode)), want: nitrotpm.ErrTPM, check: func(t *testing.T, e *nitrotpm.Error) {
			if e.RC != tpm2.TPMRCCommandCode || !strings.Contains(e.Error(), "not a NitroTPM") {
				t.Errorf("error %v: want TPM_RC_COMMAND_CODE and a hint", e)
			}
		}},
		{name: "vendor command fails", rewrite: only(vendor, rcResponse(tpm2.TPMRCFailure)), want: nitrotpm.ErrTPM, check: func(t *testing.T, e *nitrotpm.Error) {
			if e.RC != tpm2.TPMRCFailure || !errors.Is(e, tpm2.TPMRCFailure) {
				t.Errorf("RC = %v, want TPM_RC_FAILURE", e.RC)
			}
		}},
		{name: "NV memory full", rewrite: only(tpm2.TPMCCNVDefineSpace, rcResponse(tpm2.TPMRCNVSpace)), want: nitrotpm.ErrTPM},
		{name: "owner authorization set", rewrite: only(tpm2.TPMCCNVDefineSpace, rcResponse(tpm2.TPMRCBadAuth|0x900)), want: nitrotpm.ErrTPM, check: func(t *testing.T, e *nitrotpm.Error) {
			if !strings.Contains(e.Error(), "owner") {
				t.Errorf("error %v does not explain the owner authorization", e)
			}
		}},
		{name: "NV buffer max too small", rewrite: after(func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error) {
			if cc != tpm2.TPMCCGetCapability || binary.BigEndian.Uint32(cmd[10:14]) != uint32(tpm2.TPMCapTPMProperties) {
				return rsp, nil
			}
			data := tpm2.TPMSCapabilityData{Capability: tpm2.TPMCapTPMProperties, Data: tpm2.NewTPMUCapabilities(tpm2.TPMCapTPMProperties,
				&tpm2.TPMLTaggedTPMProperty{TPMProperty: []tpm2.TPMSTaggedProperty{{Property: tpm2.TPMPTNVBufferMax, Value: 16}}})}
			return header(tpm2.TPMSTNoSessions, 0, append([]byte{0}, tpm2.Marshal(data)...)), nil
		}), want: nitrotpm.ErrResponse},
		{name: "NV read short", rewrite: onFirstRead(func(d []byte) []byte { return d[:len(d)-1] }), want: nitrotpm.ErrResponse},
		{name: "NV read garbage", rewrite: onFirstRead(func(d []byte) []byte { return bytes.Repeat([]byte{0xff}, len(d)) }), want: nitrotpm.ErrResponse},
		{name: "NV read error", rewrite: only(tpm2.TPMCCNVRead, rcResponse(tpm2.TPMRCNVUninitialized)), want: nitrotpm.ErrTPM},
		{name: "NSM error", rewrite: onFirstRead(func(d []byte) []byte { return nsmResponse(t, map[string]string{"Error": "InternalError"}, len(d)) }), want: nitrotpm.ErrNSM,
			check: func(t *testing.T, e *nitrotpm.Error) {
				if e.NSM != "InternalError" {
					t.Errorf("NSM = %q, want InternalError", e.NSM)
				}
			}},
		{name: "NSM response without a document", rewrite: onFirstRead(func(d []byte) []byte {
			return nsmResponse(t, map[string]map[string][]byte{"Attestation": {"document": {}}}, len(d))
		}), want: nitrotpm.ErrResponse},
		{name: "NSM response of another kind", rewrite: onFirstRead(func(d []byte) []byte { return nsmResponse(t, map[string]string{"DescribeNSM": "x"}, len(d)) }), want: nitrotpm.ErrResponse},
		{name: "document with an enclave module ID", rewrite: onFirstRead(func(d []byte) []byte {
			i := bytes.Index(d, []byte("-tpm0000"))
			if i < 0 {
				t.Fatal("no module ID in the first chunk")
			}
			copy(d[i:], "-enc")
			return d
		}), want: nitrotpm.ErrDocument, check: func(t *testing.T, e *nitrotpm.Error) {
			if !errors.Is(e, attestation.ErrModuleID) {
				t.Errorf("error %v does not wrap attestation.ErrModuleID", e)
			}
		}},
		{name: "an enclave's document", rewrite: func() rewriter {
			// The whole response replaced: serve it chunk by chunk.
			resp := nsmResponse(t, map[string]map[string][]byte{"Attestation": {"document": enclaveSim}}, nitrotpm.NVBufferSize)
			return after(func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error) {
				if cc != tpm2.TPMCCNVRead || rsp[9] != 0 {
					return rsp, nil
				}
				size, off := binary.BigEndian.Uint16(cmd[len(cmd)-4:]), binary.BigEndian.Uint16(cmd[len(cmd)-2:])
				return sessionResponse(tpm2.Marshal(tpm2.TPM2BMaxNVBuffer{Buffer: resp[off : off+size]})), nil
			})
		}(), want: nitrotpm.ErrDocument},
		{name: "vendor response missing", rewrite: only(vendor, nil), want: nitrotpm.ErrResponse},
		{name: "device I/O error", rewrite: func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error) {
			if cc == tpm2.TPMCCNVWrite {
				return nil, errors.New("input/output error")
			}
			return send()
		}, want: nitrotpm.ErrTransport},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nitrotpmsim.Options{})
			f.faults.set(tt.rewrite)
			doc, err := f.dev.Attest(context.Background(), attestation.Request{PublicKey: spki})
			if doc != nil {
				t.Errorf("Attest returned %d bytes with its error", len(doc))
			}
			var e *nitrotpm.Error
			if !errors.As(err, &e) || !errors.Is(err, tt.want) {
				t.Fatalf("Attest = %v (%T), want %v", err, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "nitrotpm: ") || !strings.Contains(err.Error(), "failed to ") {
				t.Errorf("error %q does not name the step", err)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
			if n := f.sim.Defined(); n != 0 {
				t.Errorf("%d NV indices left defined after the failure", n)
			}
			// Nothing is lost: the next request works.
			f.faults.set(nil)
			if _, err := f.dev.Attest(context.Background(), attestation.Request{PublicKey: spki}); err != nil {
				t.Fatalf("Attest after the failure: %v", err)
			}
		})
	}
}

// authResponse is the vendor command's response with one authorization
// response whose nonce and HMAC are n bytes each: n = 64 (SHA-512's size)
// is the largest a TPM sends.
func authResponse(n int) []byte {
	body := binary.BigEndian.AppendUint32(nil, 0)
	body = append(body, tpm2.Marshal(tpm2.TPMSAuthResponse{
		Nonce: tpm2.TPM2BNonce{Buffer: make([]byte, n)}, Attributes: tpm2.TPMASession{ContinueSession: true}, Authorization: tpm2.TPM2BData{Buffer: make([]byte, n)},
	})...)
	return header(tpm2.TPMSTSessions, tpm2.TPMRCSuccess, body)
}

// TestLimitsAccepted: the largest vendor response a TPM sends, and the
// smallest NV_BUFFER_MAX accepted, still give a document.
func TestLimitsAccepted(t *testing.T) {
	tests := []struct {
		name    string
		rewrite rewriter
	}{
		{name: "vendor response at the size limit", rewrite: func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error) {
			rsp, err := send()
			if err != nil || cc != nitrotpm.CommandNSMRequest {
				return rsp, err
			}
			return authResponse(64), nil
		}},
		{name: "NV_BUFFER_MAX of 64 bytes", rewrite: func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error) {
			if cc != tpm2.TPMCCGetCapability || binary.BigEndian.Uint32(cmd[10:14]) != uint32(tpm2.TPMCapTPMProperties) {
				return send()
			}
			data := tpm2.TPMSCapabilityData{Capability: tpm2.TPMCapTPMProperties, Data: tpm2.NewTPMUCapabilities(tpm2.TPMCapTPMProperties,
				&tpm2.TPMLTaggedTPMProperty{TPMProperty: []tpm2.TPMSTaggedProperty{{Property: tpm2.TPMPTNVBufferMax, Value: 64}}})}
			return header(tpm2.TPMSTNoSessions, 0, append([]byte{0}, tpm2.Marshal(data)...)), nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nitrotpmsim.Options{})
			f.faults.set(tt.rewrite)
			b, err := f.dev.Attest(context.Background(), attestation.Request{Nonce: []byte("n")})
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			f.verify(t, b)
		})
	}
}

// TestStaleBuffers: a message buffer whose removal failed, or whose
// definition got no answer, is removed before the next request.
func TestStaleBuffers(t *testing.T) {
	tests := []struct {
		name    string
		rewrite rewriter
		wantErr bool
	}{
		{name: "undefine refused", rewrite: only(tpm2.TPMCCNVUndefineSpace, rcResponse(tpm2.TPMRCFailure))},
		{name: "define answer lost", rewrite: after(func(cc tpm2.TPMCC, cmd, rsp []byte) ([]byte, error) {
			if cc == tpm2.TPMCCNVDefineSpace {
				return []byte{0x80}, nil // defined, but the answer is garbled
			}
			return rsp, nil
		}), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nitrotpmsim.Options{})
			f.faults.set(tt.rewrite)
			_, err := f.dev.Attest(context.Background(), attestation.Request{})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Attest = %v, want error %v", err, tt.wantErr)
			}
			if n := f.sim.Defined(); n != 1 {
				t.Fatalf("%d NV indices defined, want the 1 left behind", n)
			}
			f.faults.set(nil)
			if _, err := f.dev.Attest(context.Background(), attestation.Request{}); err != nil {
				t.Fatal(err)
			}
			if n := f.sim.Defined(); n != 0 {
				t.Errorf("%d NV indices still defined", n)
			}
		})
	}
}

// TestDefineRace: another process takes the chosen NV index between the
// search and NV_DefineSpace; the client takes the next free one.
func TestDefineRace(t *testing.T) {
	f := newFixture(t, nitrotpmsim.Options{})
	raced := false
	f.faults.set(func(cc tpm2.TPMCC, cmd []byte, send func() ([]byte, error)) ([]byte, error) {
		if cc == tpm2.TPMCCNVDefineSpace && !raced {
			raced = true
			return rcResponse(tpm2.TPMRCNVDefined), nil
		}
		return send()
	})
	if _, err := f.dev.Attest(context.Background(), attestation.Request{}); err != nil || !raced {
		t.Fatalf("Attest = %v (raced %v)", err, raced)
	}
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "tpm0")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path string
	}{
		{name: "missing", path: filepath.Join(dir, "nope")},
		{name: "regular file", path: regular},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dev, err := nitrotpm.Open(tt.path)
			if dev != nil || !errors.Is(err, nitrotpm.ErrNoDevice) {
				t.Fatalf("Open(%s) = %v, want ErrNoDevice", tt.path, err)
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %q does not name the path", err)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	f := newFixture(t, nitrotpmsim.Options{})
	if err := f.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := f.dev.Attest(context.Background(), attestation.Request{}); !errors.Is(err, nitrotpm.ErrClosed) {
		t.Fatalf("Attest after Close = %v, want ErrClosed", err)
	}
}
