// Package nitrotpmsim simulates an EC2 instance's NitroTPM for machines
// without Nitro hardware: a TPM 2.0 that speaks the TPM command framing
// (over a unix socket standing in for /dev/tpm0, or an in-process pipe)
// and answers the commands kmsproxyd's internal/nitrotpm client sends,
// AWS's vendor command TPM2_VENDOR_AWS_NSM_REQUEST included. Its documents
// are NitroTPM documents (nitrotpm_pcrs, module ID i-...-tpm...) signed by
// internal/nsmsim under the `kmsproxyctl dev ca` chain, so the real client,
// verifier and daemon run end to end in development and tests.
//
// It implements what the NitroTPM attestation path needs and nothing
// else: TPM2_GetCapability (TPM_CAP_HANDLES for NV indices,
// TPM_CAP_TPM_PROPERTIES for TPM_PT_NV_BUFFER_MAX), TPM2_NV_DefineSpace,
// TPM2_NV_UndefineSpace, TPM2_NV_Write, TPM2_NV_Read and the vendor
// command, with password authorization (the owner's, empty, and each
// index's own value) checked as a TPM checks it. Any other command is
// answered TPM_RC_COMMAND_CODE.
//
// Documents it signs chain to the simulator CA's root, never to AWS's. It
// must never be linked into a production binary: kmsproxyd reaches it only
// through the nsmsim build tag.
package nitrotpmsim

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/cryptobyte"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// Limits of the simulated TPM.
const (
	// MaxCommandSize is the largest command accepted: the Linux kernel's
	// TPM buffer (TPM_BUFSIZE, 4096 bytes), which is also what go-tpm
	// reads back. Bigger commands get TPM_RC_COMMAND_SIZE.
	MaxCommandSize = 4096
	// NVBufferMax is TPM_PT_NV_BUFFER_MAX, the most bytes one NV_Read or
	// NV_Write moves: MAX_NV_BUFFER_SIZE of the TCG reference
	// implementation.
	NVBufferMax = 1024
	// MaxNVIndexSize is the largest NV index it defines: the 8192 bytes
	// of the NitroTPM message buffer (nitrotpm.NVBufferSize).
	MaxNVIndexSize = nitrotpm.NVBufferSize
	// MaxNVIndices bounds the NV indices defined at once (a TPM's NV
	// memory is small; 16 message buffers is 128 KiB). More get
	// TPM_RC_NV_SPACE.
	MaxNVIndices = 16
)

// Options configures a Simulator.
type Options struct {
	// PCRs maps indexes 0-23 to 48-byte values, e.g. from
	// LoadMeasurements; the others are DefaultPCRs's.
	PCRs map[int][]byte
	// ModuleID is the module_id; empty means nsmsim.DefaultNitroTPMModuleID.
	ModuleID string
	// Now is the clock for timestamps and leaf validity; nil means time.Now.
	Now func() time.Time
	// Signed, if set, is called with every document the simulator signs
	// (tests use it to see what a daemon obtained). It must not block.
	Signed func(doc []byte)
}

// Simulator is a simulated NitroTPM. It is safe for concurrent use; like a
// TPM, it runs one command at a time.
type Simulator struct {
	signer *nsmsim.Simulator
	signed func([]byte)

	mu sync.Mutex
	nv map[tpm2.TPMHandle]*nvIndex
}

type nvIndex struct {
	pub     tpm2.TPMSNVPublic
	auth    []byte
	data    []byte
	written bool
}

// New creates a simulator whose documents ca signs.
func New(ca *nsmsim.CA, opts Options) (*Simulator, error) {
	signer, err := nsmsim.New(ca, nsmsim.Options{
		Kind:     attestation.KindNitroTPM,
		PCRs:     DefaultPCRs(opts.PCRs),
		ModuleID: opts.ModuleID,
		Now:      opts.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("nitrotpmsim: %w", err)
	}
	return &Simulator{signer: signer, signed: opts.Signed, nv: map[tpm2.TPMHandle]*nvIndex{}}, nil
}

// Defined returns how many NV indices are defined: 0 between attestations
// when the client cleans up after itself.
func (s *Simulator) Defined() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nv)
}

// Pipe returns an in-process connection to the simulator that carries the
// TPM framing both ways, for nitrotpm.New. Close it to end the connection.
func (s *Simulator) Pipe() transport.TPMCloser {
	client, server := net.Pipe()
	go func() {
		_ = s.serveConn(server)
		server.Close()
	}()
	return transport.FromReadWriteCloser(client)
}

// Serve answers TPM commands on every connection ln accepts, each until it
// is closed (one command per connection, as go-tpm's linuxudstpm client
// sends them, or many), until ctx ends; then it closes ln and the
// connections and returns nil.
func (s *Simulator) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	done := make(chan struct{})
	defer func() {
		close(done)
		wg.Wait()
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-done:
		}
		ln.Close()
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nitrotpmsim: failed to accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			_ = s.serveConn(conn)
			conn.Close()
		}()
	}
}

// serveConn reads framed commands from conn and writes each response,
// until EOF or an error. A command whose header is unreadable or whose
// size is out of range is answered TPM_RC_COMMAND_SIZE and ends the
// connection (the framing is lost).
func (s *Simulator) serveConn(conn io.ReadWriter) error {
	for {
		var hdr [10]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < 10 || size > MaxCommandSize {
			_, _ = conn.Write(errorResponse(tpm2.TPMRCCommandSize))
			return fmt.Errorf("nitrotpmsim: command of %d bytes", size)
		}
		cmd := make([]byte, size)
		copy(cmd, hdr[:])
		if _, err := io.ReadFull(conn, cmd[10:]); err != nil {
			return err
		}
		if _, err := conn.Write(s.Execute(cmd)); err != nil {
			return err
		}
	}
}

// Execute runs one TPM command (header included) and returns the
// response. It never panics on malformed input: that is answered with a
// TPM error response code.
func (s *Simulator) Execute(cmd []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, rc := parseCommand(cmd)
	if rc != tpm2.TPMRCSuccess {
		return errorResponse(rc)
	}
	var out []byte
	switch c.code {
	case tpm2.TPMCCGetCapability:
		out, rc = s.getCapability(c)
	case tpm2.TPMCCNVDefineSpace:
		out, rc = s.defineSpace(c)
	case tpm2.TPMCCNVUndefineSpace:
		out, rc = s.undefineSpace(c)
	case tpm2.TPMCCNVWrite:
		out, rc = s.nvWrite(c)
	case tpm2.TPMCCNVRead:
		out, rc = s.nvRead(c)
	case nitrotpm.CommandNSMRequest:
		out, rc = s.nsmRequest(c)
	default:
		rc = tpm2.TPMRCCommandCode
	}
	if rc != tpm2.TPMRCSuccess {
		return errorResponse(rc)
	}
	return response(c, out)
}

// command is a parsed TPM command: code, the handle area (read by each
// command, which knows how many handles it has), the password sessions
// and the parameters.
type command struct {
	code     tpm2.TPMCC
	sessions bool
	body     cryptobyte.String // handles, then (after splitAuth) parameters
	auths    []tpm2.TPMSAuthCommand
}

func parseCommand(b []byte) (*command, tpm2.TPMRC) {
	if len(b) < 10 || len(b) > MaxCommandSize {
		return nil, tpm2.TPMRCCommandSize
	}
	hdr, err := tpm2.Unmarshal[tpm2.TPMCmdHeader](b[:10])
	if err != nil || int(hdr.Length) != len(b) {
		return nil, tpm2.TPMRCCommandSize
	}
	c := &command{code: hdr.CommandCode, body: cryptobyte.String(b[10:])}
	switch hdr.Tag {
	case tpm2.TPMSTSessions:
		c.sessions = true
	case tpm2.TPMSTNoSessions:
	default:
		return nil, rcBadTag
	}
	return c, tpm2.TPMRCSuccess
}

// handles reads n handles, then (with sessions) the authorization area.
func (c *command) handles(n int) ([]tpm2.TPMHandle, tpm2.TPMRC) {
	hs := make([]tpm2.TPMHandle, n)
	for i := range hs {
		var h uint32
		if !c.body.ReadUint32(&h) {
			return nil, tpm2.TPMRCInsufficient
		}
		hs[i] = tpm2.TPMHandle(h)
	}
	if !c.sessions {
		return hs, tpm2.TPMRCSuccess
	}
	var (
		size uint32
		area cryptobyte.String
	)
	if !c.body.ReadUint32(&size) || size > uint32(len(c.body)) || !c.body.ReadBytes((*[]byte)(&area), int(size)) {
		return nil, tpm2.TPMRCAuthSize
	}
	for !area.Empty() {
		var (
			handle uint32
			nonce  cryptobyte.String
			attrs  uint8
			hmac   cryptobyte.String
		)
		if !area.ReadUint32(&handle) || !area.ReadUint16LengthPrefixed(&nonce) || !area.ReadUint8(&attrs) || !area.ReadUint16LengthPrefixed(&hmac) {
			return nil, tpm2.TPMRCAuthSize
		}
		if len(c.auths) == 3 {
			return nil, tpm2.TPMRCAuthSize
		}
		c.auths = append(c.auths, tpm2.TPMSAuthCommand{
			Handle:        tpm2.TPMHandle(handle),
			Nonce:         tpm2.TPM2BNonce{Buffer: bytes.Clone(nonce)},
			Attributes:    tpm2.TPMASession{ContinueSession: attrs&1 != 0},
			Authorization: tpm2.TPM2BData{Buffer: bytes.Clone(hmac)},
		})
	}
	return hs, tpm2.TPMRCSuccess
}

// Response codes with a session or handle number (TPM 2.0 Part 2, 6.6.3:
// format-one codes carry TPM_RC_S or TPM_RC_H and the number in bits 8-10).
// rcBadTag is TPM_RC_BAD_TAG (TPM 2.0 Part 2, 6.6.3: 0x01E, the one
// response code a TPM 1.2-style header error gets), which go-tpm does not
// name.
const rcBadTag tpm2.TPMRC = 0x01E

const (
	rcP = 0x040 // a parameter's number follows
	rcS = 0x800 // a session's number follows
	rcH = 0x000 // a handle's number follows
	rc1 = 0x100
	rc2 = 0x200
)

// authorize checks the one password session that authorizes a handle
// whose authorization value is want.
func (c *command) authorize(want []byte) tpm2.TPMRC {
	if !c.sessions {
		return tpm2.TPMRCAuthMissing
	}
	if len(c.auths) != 1 {
		return tpm2.TPMRCAuthSize
	}
	a := c.auths[0]
	if a.Handle != tpm2.TPMRSPW {
		// Only password sessions are simulated; HMAC and policy sessions
		// would need TPM2_StartAuthSession first.
		return tpm2.TPMRCAuthUnavailable
	}
	if len(a.Nonce.Buffer) != 0 {
		return tpm2.TPMRCNonce | rcS | rc1
	}
	if subtle.ConstantTimeCompare(a.Authorization.Buffer, want) != 1 {
		return tpm2.TPMRCAuthFail | rcS | rc1
	}
	return tpm2.TPMRCSuccess
}

// done requires that the parameters were read to the end.
func (c *command) done() tpm2.TPMRC {
	if !c.body.Empty() {
		return tpm2.TPMRCSize
	}
	return tpm2.TPMRCSuccess
}

func errorResponse(rc tpm2.TPMRC) []byte {
	return tpm2.Marshal(tpm2.TPMRspHeader{Tag: tpm2.TPMSTNoSessions, Length: 10, ResponseCode: rc})
}

// response frames a successful answer with params (no response handles
// in the commands simulated): with sessions, parameterSize, the
// parameters, and one password TPMS_AUTH_RESPONSE per session.
func response(c *command, params []byte) []byte {
	var body []byte
	if c.sessions {
		body = binary.BigEndian.AppendUint32(body, uint32(len(params)))
		body = append(body, params...)
		for range c.auths {
			// A password session's response: empty nonce and HMAC, and
			// continueSession set whatever the command said (TPM 2.0 Part
			// 1, 19.8.4: the password session is never closed).
			body = append(body, tpm2.Marshal(tpm2.TPMSAuthResponse{
				Nonce:         tpm2.TPM2BNonce{Buffer: []byte{}},
				Attributes:    tpm2.TPMASession{ContinueSession: true},
				Authorization: tpm2.TPM2BData{Buffer: []byte{}},
			})...)
		}
	} else {
		body = params
	}
	hdr := tpm2.Marshal(tpm2.TPMRspHeader{Tag: tpm2.TPMSTNoSessions, Length: uint32(10 + len(body))})
	if c.sessions {
		hdr = tpm2.Marshal(tpm2.TPMRspHeader{Tag: tpm2.TPMSTSessions, Length: uint32(10 + len(body))})
	}
	return append(hdr, body...)
}

func isNVIndex(h tpm2.TPMHandle) bool { return h>>24 == tpm2.TPMHandle(tpm2.TPMHTNVIndex) }

func (s *Simulator) getCapability(c *command) ([]byte, tpm2.TPMRC) {
	if _, rc := c.handles(0); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	var capability, property, count uint32
	if !c.body.ReadUint32(&capability) || !c.body.ReadUint32(&property) || !c.body.ReadUint32(&count) {
		return nil, tpm2.TPMRCInsufficient
	}
	if rc := c.done(); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	var (
		more bool
		data tpm2.TPMSCapabilityData
	)
	switch tpm2.TPMCap(capability) {
	case tpm2.TPMCapHandles:
		var list tpm2.TPMLHandle
		if isNVIndex(tpm2.TPMHandle(property)) {
			var hs []tpm2.TPMHandle
			for h := range s.nv {
				if h >= tpm2.TPMHandle(property) {
					hs = append(hs, h)
				}
			}
			sort.Slice(hs, func(i, j int) bool { return hs[i] < hs[j] })
			if uint32(len(hs)) > count {
				hs, more = hs[:count], true
			}
			list.Handle = hs
		}
		data = tpm2.TPMSCapabilityData{Capability: tpm2.TPMCapHandles, Data: tpm2.NewTPMUCapabilities(tpm2.TPMCapHandles, &list)}
	case tpm2.TPMCapTPMProperties:
		var list tpm2.TPMLTaggedTPMProperty
		if tpm2.TPMPT(property) <= tpm2.TPMPTNVBufferMax && count > 0 {
			list.TPMProperty = []tpm2.TPMSTaggedProperty{{Property: tpm2.TPMPTNVBufferMax, Value: NVBufferMax}}
		}
		data = tpm2.TPMSCapabilityData{Capability: tpm2.TPMCapTPMProperties, Data: tpm2.NewTPMUCapabilities(tpm2.TPMCapTPMProperties, &list)}
	default:
		return nil, tpm2.TPMRCValue | rcP | rc1
	}
	out := []byte{0}
	if more {
		out[0] = 1
	}
	return append(out, tpm2.Marshal(data)...), tpm2.TPMRCSuccess
}

func (s *Simulator) defineSpace(c *command) ([]byte, tpm2.TPMRC) {
	hs, rc := c.handles(1)
	if rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if hs[0] != tpm2.TPMRHOwner {
		return nil, tpm2.TPMRCHierarchy | rcH | rc1
	}
	if rc := c.authorize(nil); rc != tpm2.TPMRCSuccess { // the owner's authorization is empty
		return nil, rc
	}
	var auth, public cryptobyte.String
	if !c.body.ReadUint16LengthPrefixed(&auth) || !c.body.ReadUint16LengthPrefixed(&public) {
		return nil, tpm2.TPMRCInsufficient
	}
	if rc := c.done(); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMSNVPublic](public)
	if err != nil || len(tpm2.Marshal(*pub)) != len(public) {
		return nil, tpm2.TPMRCSize | rcP | rc2
	}
	switch {
	case !isNVIndex(pub.NVIndex):
		return nil, tpm2.TPMRCNVRange
	case pub.Attributes.NT != tpm2.TPMNTOrdinary || !pub.Attributes.AuthRead || !pub.Attributes.AuthWrite || pub.Attributes.Written:
		return nil, tpm2.TPMRCAttributes | rcP | rc2
	case pub.NameAlg != tpm2.TPMAlgSHA256 || len(auth) > 32:
		return nil, tpm2.TPMRCSize | rcP | rc1
	case pub.DataSize == 0 || pub.DataSize > MaxNVIndexSize:
		return nil, tpm2.TPMRCSize | rcP | rc2
	}
	if _, ok := s.nv[pub.NVIndex]; ok {
		return nil, tpm2.TPMRCNVDefined
	}
	if len(s.nv) >= MaxNVIndices {
		return nil, tpm2.TPMRCNVSpace
	}
	data := make([]byte, pub.DataSize)
	for i := range data {
		data[i] = 0xff // erased NV memory
	}
	s.nv[pub.NVIndex] = &nvIndex{pub: *pub, auth: bytes.Clone(auth), data: data}
	return nil, tpm2.TPMRCSuccess
}

func (s *Simulator) undefineSpace(c *command) ([]byte, tpm2.TPMRC) {
	hs, rc := c.handles(2)
	if rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if hs[0] != tpm2.TPMRHOwner {
		return nil, tpm2.TPMRCHierarchy | rcH | rc1
	}
	if rc := c.authorize(nil); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if rc := c.done(); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if _, ok := s.nv[hs[1]]; !ok {
		return nil, tpm2.TPMRCHandle | rcH | rc2
	}
	delete(s.nv, hs[1])
	return nil, tpm2.TPMRCSuccess
}

// index returns the NV index of a command whose two handles are the index
// itself (as authorization) and the index, authorized by its own value.
func (s *Simulator) index(c *command) (*nvIndex, tpm2.TPMRC) {
	hs, rc := c.handles(2)
	if rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	nv, ok := s.nv[hs[1]]
	if !ok {
		return nil, tpm2.TPMRCHandle | rcH | rc2
	}
	if hs[0] != hs[1] {
		// Owner or platform authorization of an index is not simulated
		// (the index has neither OWNERREAD nor OWNERWRITE).
		return nil, tpm2.TPMRCNVAuthorization
	}
	if rc := c.authorize(nv.auth); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	return nv, tpm2.TPMRCSuccess
}

func (s *Simulator) nvWrite(c *command) ([]byte, tpm2.TPMRC) {
	nv, rc := s.index(c)
	if rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	var data cryptobyte.String
	var offset uint16
	if !c.body.ReadUint16LengthPrefixed(&data) || !c.body.ReadUint16(&offset) {
		return nil, tpm2.TPMRCInsufficient
	}
	if rc := c.done(); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if len(data) > NVBufferMax {
		return nil, tpm2.TPMRCSize | rcP | rc1
	}
	if int(offset)+len(data) > len(nv.data) {
		return nil, tpm2.TPMRCNVRange
	}
	copy(nv.data[offset:], data)
	nv.written = true
	return nil, tpm2.TPMRCSuccess
}

func (s *Simulator) nvRead(c *command) ([]byte, tpm2.TPMRC) {
	nv, rc := s.index(c)
	if rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	var size, offset uint16
	if !c.body.ReadUint16(&size) || !c.body.ReadUint16(&offset) {
		return nil, tpm2.TPMRCInsufficient
	}
	if rc := c.done(); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if !nv.written {
		return nil, tpm2.TPMRCNVUninitialized
	}
	if size > NVBufferMax {
		return nil, tpm2.TPMRCValue | rcP | rc1
	}
	if int(offset)+int(size) > len(nv.data) {
		return nil, tpm2.TPMRCNVRange
	}
	return tpm2.Marshal(tpm2.TPM2BMaxNVBuffer{Buffer: nv.data[offset : offset+size]}), tpm2.TPMRCSuccess
}

// nsmRequest is TPM2_VENDOR_AWS_NSM_REQUEST: the index holds the NSM's
// CBOR request; it is replaced by the CBOR response, as the Nitro
// Hypervisor does.
func (s *Simulator) nsmRequest(c *command) ([]byte, tpm2.TPMRC) {
	nv, rc := s.index(c)
	if rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if rc := c.done(); rc != tpm2.TPMRCSuccess {
		return nil, rc
	}
	if !nv.written {
		return nil, tpm2.TPMRCNVUninitialized
	}
	resp := s.answer(nv.data)
	if len(resp) > len(nv.data) {
		resp = encodeError("BufferTooSmall")
	}
	copy(nv.data, resp)
	return nil, tpm2.TPMRCSuccess
}

// nsmRequestShape is hf/nsm's Attestation request as it appears in CBOR.
type nsmRequestShape struct {
	Attestation *struct {
		UserData  []byte `cbor:"user_data"`
		Nonce     []byte `cbor:"nonce"`
		PublicKey []byte `cbor:"public_key"`
	} `cbor:"Attestation"`
}

var requestDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{MaxNestedLevels: 4, MaxMapPairs: 16, MaxArrayElements: 16}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// answer runs the NSM request in buf (one CBOR item, then whatever the
// buffer held) and returns the encoded response, an error response for a
// request NSM would refuse.
func (s *Simulator) answer(buf []byte) []byte {
	var req nsmRequestShape
	if _, err := requestDec.UnmarshalFirst(buf, &req); err != nil || req.Attestation == nil {
		return encodeError("InvalidArgument")
	}
	r := attestation.Request{PublicKey: req.Attestation.PublicKey, UserData: req.Attestation.UserData, Nonce: req.Attestation.Nonce}
	if r.Validate() != nil {
		return encodeError("InputTooLarge")
	}
	doc, err := s.signer.Attest(context.Background(), r)
	if err != nil {
		return encodeError("InternalError")
	}
	if s.signed != nil {
		s.signed(bytes.Clone(doc))
	}
	b, err := cbor.Marshal(map[string]map[string][]byte{"Attestation": {"document": doc}})
	if err != nil {
		return encodeError("InternalError")
	}
	return b
}

// encodeError is the NSM's error response, {"Error": code}.
func encodeError(code string) []byte {
	b, _ := cbor.Marshal(map[string]string{"Error": code}) // a map of two strings always encodes
	return b
}
