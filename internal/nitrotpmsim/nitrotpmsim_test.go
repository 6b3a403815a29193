package nitrotpmsim_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

func newSim(t testing.TB) *nitrotpmsim.Simulator {
	t.Helper()
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := nitrotpmsim.New(ca, nitrotpmsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return sim
}

// cmd frames a command: tag, size, code, then body.
func cmd(tag tpm2.TPMST, code tpm2.TPMCC, body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	return append(tpm2.Marshal(tpm2.TPMCmdHeader{Tag: tag, Length: uint32(10 + len(b)), CommandCode: code}), b...)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// pw is an authorization area with one password session.
func pw(auth []byte) []byte {
	s := tpm2.Marshal(tpm2.TPMSAuthCommand{Handle: tpm2.TPMRSPW, Nonce: tpm2.TPM2BNonce{Buffer: []byte{}},
		Attributes: tpm2.TPMASession{ContinueSession: true}, Authorization: tpm2.TPM2BData{Buffer: auth}})
	return append(u32(uint32(len(s))), s...)
}

const index = tpm2.TPMHandle(0x01000000)

func define(auth []byte, size uint16) []byte {
	pub := tpm2.New2B(tpm2.TPMSNVPublic{NVIndex: index, NameAlg: tpm2.TPMAlgSHA256,
		Attributes: tpm2.TPMANV{AuthRead: true, AuthWrite: true, NT: tpm2.TPMNTOrdinary}, DataSize: size})
	return cmd(tpm2.TPMSTSessions, tpm2.TPMCCNVDefineSpace, u32(uint32(tpm2.TPMRHOwner)), pw(nil),
		tpm2.Marshal(tpm2.TPM2BAuth{Buffer: auth}), tpm2.Marshal(pub))
}

func write(auth, data []byte, off uint16) []byte {
	return cmd(tpm2.TPMSTSessions, tpm2.TPMCCNVWrite, u32(uint32(index)), u32(uint32(index)), pw(auth),
		tpm2.Marshal(tpm2.TPM2BMaxNVBuffer{Buffer: data}), binary.BigEndian.AppendUint16(nil, off))
}

func read(auth []byte, size, off uint16) []byte {
	return cmd(tpm2.TPMSTSessions, tpm2.TPMCCNVRead, u32(uint32(index)), u32(uint32(index)), pw(auth),
		binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, size), off))
}

func rc(t testing.TB, rsp []byte) tpm2.TPMRC {
	t.Helper()
	if len(rsp) < 10 || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) {
		t.Fatalf("response %x is not framed", rsp)
	}
	return tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10]))
}

// TestCommands runs the simulated TPM's commands as a TPM would judge
// them: authorization, ranges and sizes.
func TestCommands(t *testing.T) {
	auth := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name  string
		setup [][]byte // run first, each must succeed
		cmd   []byte
		want  tpm2.TPMRC
	}{
		{name: "define", cmd: define(auth, 8192)},
		{name: "define again", setup: [][]byte{define(auth, 8192)}, cmd: define(auth, 8192), want: tpm2.TPMRCNVDefined},
		{name: "define too large", cmd: define(auth, 8193), want: tpm2.TPMRCSize | 0x240},
		{name: "define with a long authorization", cmd: define(make([]byte, 33), 16), want: tpm2.TPMRCSize | 0x140},
		{name: "define with the wrong owner authorization", cmd: cmd(tpm2.TPMSTSessions, tpm2.TPMCCNVDefineSpace, u32(uint32(tpm2.TPMRHOwner)), pw([]byte("x")),
			tpm2.Marshal(tpm2.TPM2BAuth{}), tpm2.Marshal(tpm2.New2B(tpm2.TPMSNVPublic{NVIndex: index, NameAlg: tpm2.TPMAlgSHA256,
				Attributes: tpm2.TPMANV{AuthRead: true, AuthWrite: true}, DataSize: 8}))), want: tpm2.TPMRCAuthFail | 0x900},
		{name: "define without sessions", cmd: cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCNVDefineSpace, u32(uint32(tpm2.TPMRHOwner))), want: tpm2.TPMRCAuthMissing},
		{name: "write", setup: [][]byte{define(auth, 16)}, cmd: write(auth, []byte("hello"), 0)},
		{name: "write with the wrong authorization", setup: [][]byte{define(auth, 16)}, cmd: write([]byte("wrong"), []byte("hello"), 0), want: tpm2.TPMRCAuthFail | 0x900},
		{name: "write past the end", setup: [][]byte{define(auth, 16)}, cmd: write(auth, []byte("hello"), 12), want: tpm2.TPMRCNVRange},
		{name: "write more than NV_BUFFER_MAX", setup: [][]byte{define(auth, 8192)}, cmd: write(auth, make([]byte, nitrotpmsim.NVBufferMax+1), 0), want: tpm2.TPMRCSize | 0x140},
		{name: "write to no index", cmd: write(auth, []byte("hello"), 0), want: tpm2.TPMRCHandle | 0x200},
		{name: "read before a write", setup: [][]byte{define(auth, 16)}, cmd: read(auth, 4, 0), want: tpm2.TPMRCNVUninitialized},
		{name: "read", setup: [][]byte{define(auth, 16), write(auth, []byte("hello"), 0)}, cmd: read(auth, 16, 0)},
		{name: "read with the wrong authorization", setup: [][]byte{define(auth, 16), write(auth, []byte("hello"), 0)}, cmd: read(nil, 4, 0), want: tpm2.TPMRCAuthFail | 0x900},
		{name: "read past the end", setup: [][]byte{define(auth, 16), write(auth, []byte("hello"), 0)}, cmd: read(auth, 4, 14), want: tpm2.TPMRCNVRange},
		{name: "unknown command", cmd: cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCStartup, []byte{0, 0}), want: tpm2.TPMRCCommandCode},
		{name: "size field lies", cmd: append(cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCGetCapability, u32(6), u32(0), u32(1)), 0), want: tpm2.TPMRCCommandSize},
		{name: "short header", cmd: []byte{0x80, 0x01, 0, 0, 0, 5}, want: tpm2.TPMRCCommandSize},
		{name: "command at the size limit", cmd: cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCGetCapability, u32(6), u32(0), u32(1), make([]byte, nitrotpmsim.MaxCommandSize-22)), want: tpm2.TPMRCSize},
		{name: "command past the size limit", cmd: cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCGetCapability, u32(6), u32(0), u32(1), make([]byte, nitrotpmsim.MaxCommandSize-21)), want: tpm2.TPMRCCommandSize},
		{name: "trailing parameter bytes", cmd: cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCGetCapability, u32(6), u32(0), u32(1), []byte{0}), want: tpm2.TPMRCSize},
		{name: "vendor command before a write", setup: [][]byte{define(auth, 16)}, cmd: cmd(tpm2.TPMSTSessions, 0x20000001, u32(uint32(index)), u32(uint32(index)), pw(auth)), want: tpm2.TPMRCNVUninitialized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			for i, c := range tt.setup {
				if got := rc(t, sim.Execute(c)); got != tpm2.TPMRCSuccess {
					t.Fatalf("setup %d: %v", i, got)
				}
			}
			if got := rc(t, sim.Execute(tt.cmd)); got != tt.want {
				t.Fatalf("response code %#x (%v), want %#x", uint32(got), got, uint32(tt.want))
			}
		})
	}
}

// TestVendorCommandAnswers: the NSM's error answers for requests it
// refuses, in the message buffer as the hypervisor writes them.
func TestVendorCommandAnswers(t *testing.T) {
	auth := []byte("a")
	vendor := cmd(tpm2.TPMSTSessions, 0x20000001, u32(uint32(index)), u32(uint32(index)), pw(auth))
	tests := []struct {
		name    string
		request []byte
		want    string // start of the response
	}{
		{name: "not CBOR", request: []byte("hello"), want: "\xa1eErroroInvalidArgument"},
		{name: "another request", request: []byte("\xa1kDescribeNSM\xa0"), want: "\xa1eErroroInvalidArgument"},
		{name: "nonce too large", request: append([]byte("\xa1kAttestation\xa1enonceY\x04\x01"), make([]byte, 1025)...), want: "\xa1eErrormInputTooLarge"},
		{name: "attestation", request: []byte("\xa1kAttestation\xa0"), want: "\xa1kAttestation\xa1hdocument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim := newSim(t)
			for off := 0; off < len(tt.request); off += nitrotpmsim.NVBufferMax {
				chunk := tt.request[off:min(off+nitrotpmsim.NVBufferMax, len(tt.request))]
				for i, c := range [][]byte{define(auth, 8192), write(auth, chunk, uint16(off))}[min(off, 1):] {
					if got := rc(t, sim.Execute(c)); got != tpm2.TPMRCSuccess {
						t.Fatalf("setup %d: %v", i, got)
					}
				}
			}
			if got := rc(t, sim.Execute(vendor)); got != tpm2.TPMRCSuccess {
				t.Fatalf("vendor command: %v", got)
			}
			rsp := sim.Execute(read(auth, uint16(len(tt.want)), 0))
			if got := string(rsp[16 : 16+len(tt.want)]); got != tt.want {
				t.Errorf("message buffer starts %q, want %q", got, tt.want)
			}
		})
	}
}

// TestNVIndexLimit: MaxNVIndices indices fit, one more is TPM_RC_NV_SPACE.
func TestNVIndexLimit(t *testing.T) {
	sim := newSim(t)
	for i := range nitrotpmsim.MaxNVIndices + 1 {
		pub := tpm2.New2B(tpm2.TPMSNVPublic{NVIndex: index + tpm2.TPMHandle(i), NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{AuthRead: true, AuthWrite: true, NT: tpm2.TPMNTOrdinary}, DataSize: 16})
		got := rc(t, sim.Execute(cmd(tpm2.TPMSTSessions, tpm2.TPMCCNVDefineSpace, u32(uint32(tpm2.TPMRHOwner)), pw(nil),
			tpm2.Marshal(tpm2.TPM2BAuth{}), tpm2.Marshal(pub))))
		want := tpm2.TPMRCSuccess
		if i == nitrotpmsim.MaxNVIndices {
			want = tpm2.TPMRCNVSpace
		}
		if got != want {
			t.Fatalf("index %d: %v, want %v", i, got, want)
		}
	}
	if n := sim.Defined(); n != nitrotpmsim.MaxNVIndices {
		t.Errorf("Defined = %d", n)
	}
}

func TestParseMeasurements(t *testing.T) {
	pcr := func(b byte) string { return strings.Repeat(hex.EncodeToString([]byte{b}), 48) }
	tests := []struct {
		name string
		json string
		want map[int][]byte
		err  string
	}{
		// The shape nitro-tpm-pcr-compute prints for a UKI (its README).
		{name: "nitro-tpm-pcr-compute", json: `{"Measurements": {"HashAlgorithm": "SHA384", "PCR4": "` + pcr(4) + `", "PCR7": "` + pcr(7) + `", "PCR12": "` + pcr(12) + `"}}`,
			want: map[int][]byte{4: bytes.Repeat([]byte{4}, 48), 7: bytes.Repeat([]byte{7}, 48), 12: bytes.Repeat([]byte{12}, 48)}},
		{name: "bare object", json: `{"HashAlgorithm": "SHA384", "PCR23": "` + pcr(1) + `"}`, want: map[int][]byte{23: bytes.Repeat([]byte{1}, 48)}},
		{name: "nitro-cli spelling", json: `{"HashAlgorithm": "Sha384 { ... }", "PCR0": "` + pcr(0) + `"}`, want: map[int][]byte{0: make([]byte, 48)}},
		{name: "PCR24", json: `{"PCR24": "` + pcr(1) + `"}`, err: "unexpected field"},
		{name: "PCR04", json: `{"PCR04": "` + pcr(1) + `"}`, err: "unexpected field"},
		{name: "SHA256", json: `{"HashAlgorithm": "SHA256", "PCR4": "` + pcr(1) + `"}`, err: "SHA-384 bank"},
		{name: "short value", json: `{"PCR4": "abcd"}`, err: "hex digits"},
		{name: "not hex", json: `{"PCR4": "` + strings.Repeat("zz", 48) + `"}`, err: "not hex"},
		{name: "no PCRs", json: `{"Measurements": {"HashAlgorithm": "SHA384"}}`, err: "no PCRs"},
		{name: "null", json: `{"Measurements": null}`, err: "null"},
		{name: "not JSON", json: `PCR4=...`, err: "decode"},
		{name: "at the size limit", json: `{"PCR4": "` + pcr(4) + `"}` + strings.Repeat(" ", nitrotpmsim.MaxMeasurementsSize-len(`{"PCR4": "`+pcr(4)+`"}`)), want: map[int][]byte{4: bytes.Repeat([]byte{4}, 48)}},
		{name: "past the size limit", json: `{"PCR4": "` + pcr(4) + `"}` + strings.Repeat(" ", nitrotpmsim.MaxMeasurementsSize+1-len(`{"PCR4": "`+pcr(4)+`"}`)), err: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nitrotpmsim.ParseMeasurements([]byte(tt.json))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.HasPrefix(err.Error(), "measurements: ") {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("PCRs (-want +got):\n%s", diff)
			}
			// MarshalMeasurements writes what ParseMeasurements reads.
			b, err := nitrotpmsim.MarshalMeasurements(got)
			if err != nil {
				t.Fatal(err)
			}
			back, err := nitrotpmsim.ParseMeasurements(b)
			if err != nil || !cmp.Equal(got, back) {
				t.Errorf("round trip: %v", err)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "m.json")
	if err := os.WriteFile(path, []byte(`{"PCR4": "`+pcr(4)+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nitrotpmsim.LoadMeasurements(path); err != nil {
		t.Errorf("LoadMeasurements: %v", err)
	}
	if _, err := nitrotpmsim.LoadMeasurements(path + ".missing"); err == nil {
		t.Error("LoadMeasurements of a missing file succeeded")
	}
}

func TestDefaultPCRs(t *testing.T) {
	pcrs := nitrotpmsim.DefaultPCRs(map[int][]byte{4: bytes.Repeat([]byte{4}, 48)})
	if len(pcrs) != attestation.NitroTPMPCRCount {
		t.Fatalf("%d PCRs", len(pcrs))
	}
	for i, v := range pcrs {
		want := make([]byte, 48)
		switch {
		case i == 4:
			want = bytes.Repeat([]byte{4}, 48)
		case i >= 17 && i <= 22:
			want = bytes.Repeat([]byte{0xff}, 48)
		}
		if !bytes.Equal(v, want) {
			t.Errorf("PCR%d = %x", i, v)
		}
	}
}

// FuzzExecute: whatever bytes arrive, the simulated TPM answers with a
// framed response and never panics. Seeds are the commands of one whole
// attestation.
func FuzzExecute(f *testing.F) {
	auth := []byte("0123456789abcdef0123456789abcdef")
	seeds := [][]byte{
		define(auth, 8192),
		write(auth, []byte("\xa1kAttestation\xa0"), 0),
		cmd(tpm2.TPMSTSessions, 0x20000001, u32(uint32(index)), u32(uint32(index)), pw(auth)),
		read(auth, 1024, 0),
		cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCGetCapability, u32(1), u32(uint32(index)), u32(256)),
		cmd(tpm2.TPMSTNoSessions, tpm2.TPMCCGetCapability, u32(6), u32(uint32(tpm2.TPMPTNVBufferMax)), u32(1)),
		cmd(tpm2.TPMSTSessions, tpm2.TPMCCNVUndefineSpace, u32(uint32(tpm2.TPMRHOwner)), u32(uint32(index)), pw(nil)),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	sim := newSim(f)
	for _, s := range seeds[:3] { // a defined, written index for the fuzzed commands to reach
		sim.Execute(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rsp := sim.Execute(b)
		if len(rsp) < 10 || int(binary.BigEndian.Uint32(rsp[2:6])) != len(rsp) || len(rsp) > nitrotpmsim.MaxCommandSize {
			t.Fatalf("response %x is not framed", rsp)
		}
	})
}
