// Package nitrotpm asks an EC2 instance's NitroTPM for attestation
// documents: the same COSE_Sign1 documents, signed by the Nitro Hypervisor
// under the AWS Nitro root, that an enclave's NSM returns, with the
// instance's `nitrotpm_pcrs` in place of an enclave's `pcrs`. It is how
// kmsproxyd attests when it serves apps on an attested instance rather
// than inside an enclave; KMS accepts the documents as a Recipient and
// evaluates kms:RecipientAttestation:NitroTPMPCR<n> on them.
//
// NitroTPM carries the NSM's CBOR request and response through an AWS
// vendor-specific TPM command. The layout, from AWS's own client
// (github.com/aws/NitroTPM-Tools, nitro-tpm-attest: src/raw/tpm/mod.rs,
// src/raw/nsm_request.rs, src/tss/message_buffer.rs) and confirmed by
// lockboot/vaportpm (crates/vaportpm-attest/src/nsm.rs), which produced the
// real documents in internal/attestation/testdata/nitrotpm:
//
//  1. define an ordinary NV index (the "message buffer") of 8192 bytes with
//     TPMA_NV_AUTHREAD | TPMA_NV_AUTHWRITE, under the owner hierarchy;
//  2. NV_Write the CBOR request (hf/nsm's Attestation request, exactly what
//     /dev/nsm takes) at offset 0;
//  3. send command code 0x20000001 (TPM2_VENDOR_AWS_NSM_REQUEST), tag
//     TPM_ST_SESSIONS, with the index as both handles (authHandle and
//     nvIndex), one authorization for the index and no parameters; the
//     hypervisor replaces the buffer's contents with the CBOR response;
//  4. NV_Read the response (one CBOR item, followed by whatever the buffer
//     held before) and NV_UndefineSpace the index.
//
// AWS's client authorizes with salted HMAC sessions, vaportpm with
// passwords; both are standard TPM authorization for an index. This
// package uses password sessions with a random 32-byte authorization value
// for each buffer, so no other process on the instance can read or
// overwrite a buffer it did not define (root can do everything anyway; see
// docs/security.md).
//
// The TPM transport and the standard commands are google/go-tpm's; the
// vendor command, which go-tpm does not know, is framed with go-tpm's
// marshalling of the TPM 2.0 structures.
package nitrotpm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// DefaultDevicePath is the kernel's resource-managed TPM device, which
// several processes can use at once. /dev/tpm0, the raw device, works too
// but only one process may hold it open.
const DefaultDevicePath = "/dev/tpmrm0"

// CommandNSMRequest is AWS's vendor-specific TPM command code,
// TPM2_VENDOR_AWS_NSM_REQUEST (nitro-tpm-attest src/raw/tpm/mod.rs):
// bit 29 set marks a vendor command (TPM 2.0 Part 2, TPMA_CC V).
const CommandNSMRequest tpm2.TPMCC = 0x20000001

// Sizes of the vendor-command path. Each is a limit on what the TPM may
// answer, checked with a typed error.
const (
	// NVBufferSize is the size of the NV message buffer: 8192 bytes, as
	// nitro-tpm-attest defines it ("The plain attestation document ...
	// will be almost 5 KiB and the optional parameters are each limited to
	// 1 KiB"; real documents are 4942 to 4965 bytes). The CBOR response,
	// and so the document, cannot be larger.
	NVBufferSize = 8192
	// nvIndexFirst and nvIndexLast bound the NV indices the buffer may
	// take: TPM_HT_NV_INDEX's range, searched for the first free one as
	// nitro-tpm-attest does (TPM2_NV_INDEX_FIRST to TPM2_NV_INDEX_LAST).
	nvIndexFirst tpm2.TPMHandle = 0x01000000
	nvIndexLast  tpm2.TPMHandle = 0x01ffffff
	// maxChunk bounds one NV_Write or NV_Read: MAX_NV_BUFFER_SIZE of the
	// TCG reference implementation is 1024; the TPM's own
	// TPM_PT_NV_BUFFER_MAX is used when smaller. minChunk is the least
	// chunk size accepted from the TPM (a smaller claim is a broken TPM).
	maxChunk = 1024
	minChunk = 64
	// maxVendorResponse bounds the vendor command's response: a 10-byte
	// header, the 4-byte parameterSize and one TPMS_AUTH_RESPONSE (nonce
	// and HMAC of at most 64 bytes each, SHA-512's size, plus 5 bytes of
	// sizes and attributes); the command has no response parameters.
	maxVendorResponse = 10 + 4 + (2 + 64 + 1 + 2 + 64)
	// authSize is the size of each buffer's random authorization value:
	// at most the size of the index's name algorithm digest (SHA-256).
	authSize = 32
	// maxCapabilityPages bounds the GetCapability pages read while
	// looking for a free NV index (each page lists up to capabilityPage
	// handles; a TPM has room for far fewer NV indices).
	maxCapabilityPages = 16
	capabilityPage     = 256
	// defineAttempts: when another process takes the index chosen between
	// the search and NV_DefineSpace (TPM_RC_NV_DEFINED), search again.
	defineAttempts = 3
)

// cborDec decodes the NSM response from the buffer: one item of at most
// NVBufferSize bytes, shallow (hf/nsm's response is a map of a map).
var cborDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels:  4,
		MaxArrayElements: 16,
		MaxMapPairs:      16,
		IndefLength:      cbor.IndefLengthAllowed,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err) // constant options
	}
	return dm
}()

// Device is an EC2 instance's NitroTPM, or anything that answers its
// vendor command over a TPM transport (the simulator in
// internal/nitrotpmsim). It is an attestation.Attester, safe for
// concurrent use: requests take turns, as the TPM runs one command at a
// time.
type Device struct {
	mu     sync.Mutex
	tpm    transport.TPM // nil after Close
	closer io.Closer
	chunk  int                // NV_Read/NV_Write size; 0 until asked
	stale  []*buffer          // buffers whose NV_UndefineSpace failed, retried first
	random func([]byte) error // authorization values; nil means crypto/rand
}

var _ attestation.Attester = (*Device)(nil)

// Open opens the TPM character device at path (DefaultDevicePath when
// empty). A missing device, or a path that is not a character device, is
// an *Error with ReasonNoDevice.
func Open(path string) (*Device, error) {
	if path == "" {
		path = DefaultDevicePath
	}
	t, err := linuxtpm.Open(path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, &Error{Reason: ReasonNoDevice, Detail: path + " does not exist",
				hint: "this is not an EC2 instance with NitroTPM enabled: launch it from an AMI registered with --tpm-support v2.0 (for development use the NitroTPM simulator: a binary built with -tags nsmsim and --attestation nitrotpm-sim)"}
		case errors.Is(err, linuxtpm.ErrFileIsNotDevice):
			return nil, &Error{Reason: ReasonNoDevice, Detail: path + " is not a character device", Err: err}
		case errors.Is(err, fs.ErrPermission):
			return nil, &Error{Reason: ReasonTransport, Step: "open " + path, Err: err,
				hint: "the TPM device belongs to the tss group: run kmsproxyd with that supplementary group"}
		}
		return nil, &Error{Reason: ReasonTransport, Step: "open " + path, Err: err}
	}
	return &Device{tpm: sendErrors{t}, closer: t}, nil
}

// New returns a Device that speaks to the TPM through t, for transports
// other than a device file (tests, the simulator). closer, if not nil, is
// closed by Close.
func New(t transport.TPM, closer io.Closer) *Device {
	return &Device{tpm: sendErrors{t}, closer: closer}
}

// sendErrors marks the transport's own failures (I/O on the device), so
// they are told apart from TPM response codes and malformed responses
// that go-tpm reports through the same error.
type sendErrors struct{ t transport.TPM }

type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

func (s sendErrors) Send(cmd []byte) ([]byte, error) {
	rsp, err := s.t.Send(cmd)
	if err != nil {
		return nil, &sendError{err}
	}
	return rsp, nil
}

// Close releases the device after the requests in progress. It is safe to
// call more than once.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tpm == nil {
		return nil
	}
	d.tpm = nil
	if d.closer != nil {
		if err := d.closer.Close(); err != nil {
			return &Error{Reason: ReasonTransport, Step: "close the TPM device", Err: err}
		}
	}
	return nil
}

// Attest asks the NitroTPM for a document carrying req's fields (nil as
// CBOR null, as NSM does). It refuses a request over NSM's limits with an
// *attestation.Error (CheckTooLarge) and returns ctx.Err() when ctx ends
// between TPM commands (a command in progress cannot be interrupted); any
// other failure is an *Error. The document it returns parses as a
// NitroTPM document (attestation.KindNitroTPM, module ID of the NitroTPM
// form) that carries req's fields; its signature is for the caller (and
// KMS) to verify.
func (d *Device) Attest(ctx context.Context, req attestation.Request) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msg, err := encodeRequest(req)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tpm == nil {
		return nil, &Error{Reason: ReasonClosed, Detail: "the device is closed"}
	}
	d.undefineStale()
	resp, err := d.exchange(ctx, msg)
	if err != nil {
		return nil, err
	}
	doc, err := decodeResponse(resp)
	if err != nil {
		return nil, err
	}
	if err := checkDocument(doc, req); err != nil {
		return nil, err
	}
	return doc, nil
}

// encodeRequest encodes req as the NSM's Attestation request, with
// hf/nsm's request type and the CBOR hf/nsm sends to /dev/nsm.
func encodeRequest(req attestation.Request) ([]byte, error) {
	r := &request.Attestation{PublicKey: req.PublicKey, UserData: req.UserData, Nonce: req.Nonce}
	b, err := cbor.Marshal(r.Encoded())
	if err != nil {
		return nil, fmt.Errorf("nitrotpm: failed to encode the attestation request: %w", err)
	}
	if len(b) > NVBufferSize {
		// Not reachable within NSM's field limits (3 × 1024 bytes and a
		// few dozen of CBOR); kept so the buffer size is never assumed.
		return nil, &Error{Reason: ReasonDocument, Step: "encode the attestation request",
			Detail: fmt.Sprintf("the request is %d bytes; the NV message buffer holds %d", len(b), NVBufferSize)}
	}
	return b, nil
}

// buffer is one NV message buffer.
type buffer struct {
	index tpm2.TPMHandle
	auth  []byte
	pub   tpm2.TPMSNVPublic
}

func (b *buffer) name() tpm2.TPM2BName {
	n, err := tpm2.NVName(&b.pub)
	if err != nil {
		return tpm2.TPM2BName{} // SHA-256 is always available; the TPM would refuse an empty name
	}
	return *n
}

func (b *buffer) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: b.index, Name: b.name(), Auth: tpm2.PasswordAuth(b.auth)}
}

func (b *buffer) namedHandle() tpm2.NamedHandle {
	return tpm2.NamedHandle{Handle: b.index, Name: b.name()}
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// exchange runs steps 1 to 4 of the package comment and returns the NSM
// response bytes (one CBOR item).
func (d *Device) exchange(ctx context.Context, msg []byte) ([]byte, error) {
	chunk, err := d.chunkSize()
	if err != nil {
		return nil, err
	}
	buf, err := d.define()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := d.undefine(buf); err != nil {
			d.stale = append(d.stale, buf)
		}
	}()

	for off := 0; off < len(msg); off += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(off+chunk, len(msg))
		_, err := tpm2.NVWrite{
			AuthHandle: buf.authHandle(),
			NVIndex:    buf.namedHandle(),
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: msg[off:end]},
			Offset:     uint16(off),
		}.Execute(d.tpm)
		if err != nil {
			return nil, tpmError("write the request to the NV message buffer", err, ReasonResponse)
		}
		buf.pub.Attributes.Written = true // the index's name changes with it
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := d.vendorCommand(buf); err != nil {
		return nil, err
	}

	var resp []byte
	for off := 0; off < NVBufferSize; off += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(chunk, NVBufferSize-off)
		out, err := tpm2.NVRead{
			AuthHandle: buf.authHandle(),
			NVIndex:    buf.namedHandle(),
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(d.tpm)
		if err != nil {
			return nil, tpmError("read the response from the NV message buffer", err, ReasonResponse)
		}
		if len(out.Data.Buffer) != n {
			return nil, &Error{Reason: ReasonResponse, Step: "read the response from the NV message buffer",
				Detail: fmt.Sprintf("NV_Read of %d bytes at offset %d returned %d", n, off, len(out.Data.Buffer))}
		}
		resp = append(resp, out.Data.Buffer...)
		item, err := firstItem(resp)
		if err == nil {
			return item, nil
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &Error{Reason: ReasonResponse, Step: "decode the NSM response", Detail: "the message buffer does not start with a CBOR item", Err: err}
		}
	}
	return nil, &Error{Reason: ReasonResponse, Step: "decode the NSM response",
		Detail: fmt.Sprintf("no complete CBOR item in the %d-byte message buffer", NVBufferSize)}
}

// firstItem returns the first CBOR item of b (the rest of the buffer is
// what it held before the response was written), or an error wrapping
// io.ErrUnexpectedEOF when b ends inside it.
func firstItem(b []byte) ([]byte, error) {
	var raw cbor.RawMessage
	rest, err := cborDec.UnmarshalFirst(b, &raw)
	if err != nil {
		return nil, err
	}
	return b[:len(b)-len(rest)], nil
}

// chunkSize asks the TPM for TPM_PT_NV_BUFFER_MAX once.
func (d *Device) chunkSize() (int, error) {
	if d.chunk != 0 {
		return d.chunk, nil
	}
	const step = "read TPM_PT_NV_BUFFER_MAX"
	out, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(d.tpm)
	if err != nil {
		return 0, tpmError(step, err, ReasonResponse)
	}
	props, err := out.CapabilityData.Data.TPMProperties()
	if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != tpm2.TPMPTNVBufferMax {
		return 0, &Error{Reason: ReasonResponse, Step: step, Detail: "the TPM did not report it"}
	}
	v := props.TPMProperty[0].Value
	if v < minChunk {
		return 0, &Error{Reason: ReasonResponse, Step: step, Detail: fmt.Sprintf("the TPM reports %d bytes; at least %d expected", v, minChunk)}
	}
	d.chunk = int(min(v, maxChunk))
	return d.chunk, nil
}

// define creates a message buffer at the first free NV index.
func (d *Device) define() (*buffer, error) {
	const step = "define the NV message buffer"
	for attempt := 0; ; attempt++ {
		index, err := d.freeIndex()
		if err != nil {
			return nil, err
		}
		auth := make([]byte, authSize)
		random := d.random
		if random == nil {
			random = func(b []byte) error { _, err := rand.Read(b); return err }
		}
		if err := random(auth); err != nil {
			return nil, &Error{Reason: ReasonTransport, Step: "make an authorization value", Err: err}
		}
		buf := &buffer{index: index, auth: auth, pub: tpm2.TPMSNVPublic{
			NVIndex: index,
			NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{
				AuthWrite: true,
				AuthRead:  true,
				NoDA:      true, // a wrong value is a bug here, not an attack to lock the TPM over
				NT:        tpm2.TPMNTOrdinary,
			},
			DataSize: NVBufferSize,
		}}
		_, err = tpm2.NVDefineSpace{
			AuthHandle: ownerAuth,
			Auth:       tpm2.TPM2BAuth{Buffer: auth},
			PublicInfo: tpm2.New2B(buf.pub),
		}.Execute(d.tpm)
		var rc tpm2.TPMRC
		if errors.As(err, &rc) && rc == tpm2.TPMRCNVDefined && attempt+1 < defineAttempts {
			continue // taken by another process since freeIndex looked
		}
		if err != nil {
			if !errors.As(err, &rc) {
				// The TPM may have defined the index and the answer got
				// lost: remove it before the next request (TPM_RC_HANDLE
				// there means it never was).
				d.stale = append(d.stale, buf)
			}
			return nil, tpmError(step, err, ReasonResponse)
		}
		return buf, nil
	}
}

// freeIndex returns the first NV index in nvIndexFirst..nvIndexLast that
// GetCapability(TPM_CAP_HANDLES) does not list.
func (d *Device) freeIndex() (tpm2.TPMHandle, error) {
	const step = "list the defined NV indices"
	next := nvIndexFirst
	for range maxCapabilityPages {
		out, err := tpm2.GetCapability{
			Capability:    tpm2.TPMCapHandles,
			Property:      uint32(next),
			PropertyCount: capabilityPage,
		}.Execute(d.tpm)
		if err != nil {
			return 0, tpmError(step, err, ReasonResponse)
		}
		handles, err := out.CapabilityData.Data.Handles()
		if err != nil {
			return 0, &Error{Reason: ReasonResponse, Step: step, Err: err}
		}
		for _, h := range handles.Handle {
			if h < next || h > nvIndexLast {
				if h > nvIndexLast {
					return next, nil
				}
				continue // not in the range asked for: ignore, as a TPM would not send it
			}
			if h != next {
				return next, nil // a gap before h
			}
			if next == nvIndexLast {
				return 0, &Error{Reason: ReasonResponse, Step: step, Detail: "every NV index is taken"}
			}
			next++
		}
		if !out.MoreData || len(handles.Handle) == 0 {
			return next, nil
		}
	}
	return 0, &Error{Reason: ReasonResponse, Step: step,
		Detail: fmt.Sprintf("more than %d NV indices are defined", maxCapabilityPages*capabilityPage)}
}

// undefine removes a message buffer.
func (d *Device) undefine(buf *buffer) error {
	_, err := tpm2.NVUndefineSpace{
		AuthHandle: ownerAuth,
		NVIndex:    buf.namedHandle(),
	}.Execute(d.tpm)
	return err
}

// undefineStale retries the removal of buffers an earlier request could
// not remove (an NV index left behind costs 8 KiB of the TPM's NV memory
// until removed).
func (d *Device) undefineStale() {
	kept := d.stale[:0]
	for _, buf := range d.stale {
		err := d.undefine(buf)
		var rc tpm2.TPMRC
		if err != nil && !(errors.As(err, &rc) && rc.Is(tpm2.TPMRCHandle)) {
			kept = append(kept, buf) // gone already (TPM_RC_HANDLE) or removed: forget it
		}
	}
	d.stale = kept
}

// vendorCommand sends TPM2_VENDOR_AWS_NSM_REQUEST for buf and checks its
// response. go-tpm has no type for the command, so it is framed here with
// go-tpm's marshalling: header (TPM_ST_SESSIONS, size, command code), the
// two handles (authHandle and nvIndex, both the buffer), the authorization
// area (its size, then one TPMS_AUTH_COMMAND: a password session with the
// buffer's authorization value), and no parameters.
func (d *Device) vendorCommand(buf *buffer) error {
	const step = "run the NSM vendor command (TPM2_VENDOR_AWS_NSM_REQUEST)"
	auth := tpm2.Marshal(tpm2.TPMSAuthCommand{
		Handle:        tpm2.TPMRSPW,
		Nonce:         tpm2.TPM2BNonce{Buffer: []byte{}},
		Attributes:    tpm2.TPMASession{ContinueSession: true},
		Authorization: tpm2.TPM2BData{Buffer: buf.auth},
	})
	var body []byte
	body = binary.BigEndian.AppendUint32(body, uint32(buf.index)) // authHandle
	body = binary.BigEndian.AppendUint32(body, uint32(buf.index)) // nvIndex
	body = binary.BigEndian.AppendUint32(body, uint32(len(auth))) // authorizationSize
	body = append(body, auth...)
	cmd := tpm2.Marshal(tpm2.TPMCmdHeader{
		Tag:         tpm2.TPMSTSessions,
		Length:      uint32(10 + len(body)),
		CommandCode: CommandNSMRequest,
	})
	cmd = append(cmd, body...)

	rsp, err := d.tpm.Send(cmd)
	if err != nil {
		return &Error{Reason: ReasonTransport, Step: step, Err: err}
	}
	return checkVendorResponse(rsp)
}

// checkVendorResponse checks the vendor command's response: a whole
// header whose size is the response's, success, and (with sessions) a
// parameter area of size 0 followed by one TPMS_AUTH_RESPONSE and nothing
// more.
func checkVendorResponse(rsp []byte) error {
	const step = "run the NSM vendor command (TPM2_VENDOR_AWS_NSM_REQUEST)"
	bad := func(format string, args ...any) error {
		return &Error{Reason: ReasonResponse, Step: step, Detail: fmt.Sprintf(format, args...)}
	}
	switch {
	case len(rsp) < 10:
		return bad("the response is %d bytes; a TPM response header is 10", len(rsp))
	case len(rsp) > maxVendorResponse:
		return bad("the response is %d bytes; at most %d expected", len(rsp), maxVendorResponse)
	}
	hdr, err := tpm2.Unmarshal[tpm2.TPMRspHeader](rsp[:10])
	if err != nil {
		return bad("unreadable response header: %v", err)
	}
	if int(hdr.Length) != len(rsp) {
		return bad("the response header says %d bytes but %d arrived", hdr.Length, len(rsp))
	}
	if hdr.ResponseCode != tpm2.TPMRCSuccess {
		return tpmError(step, hdr.ResponseCode, ReasonResponse)
	}
	rest := rsp[10:]
	switch hdr.Tag {
	case tpm2.TPMSTNoSessions:
		if len(rest) != 0 {
			return bad("%d bytes of response parameters; the command has none", len(rest))
		}
		return nil
	case tpm2.TPMSTSessions:
	default:
		return bad("response tag %#x is neither TPM_ST_SESSIONS nor TPM_ST_NO_SESSIONS", uint16(hdr.Tag))
	}
	if len(rest) < 4 {
		return bad("the response ends before its parameterSize")
	}
	if n := binary.BigEndian.Uint32(rest); n != 0 {
		return bad("parameterSize is %d; the command has no response parameters", n)
	}
	rest = rest[4:]
	ar, err := tpm2.Unmarshal[tpm2.TPMSAuthResponse](rest)
	if err != nil {
		return bad("unreadable authorization response: %v", err)
	}
	if used := len(tpm2.Marshal(*ar)); used != len(rest) {
		return bad("%d bytes after the authorization response", len(rest)-used)
	}
	return nil
}

// decodeResponse turns the NSM response into the document, with hf/nsm's
// response type: {"Attestation": {"document": bytes}} or {"Error": code}.
func decodeResponse(b []byte) ([]byte, error) {
	const step = "decode the NSM response"
	var r response.Response
	if err := r.UnmarshalCBOR(b); err != nil {
		return nil, &Error{Reason: ReasonResponse, Step: step, Detail: "not an NSM response", Err: err}
	}
	if r.Error != "" {
		e := &Error{Reason: ReasonNSM, Step: "get an attestation document", NSM: string(r.Error),
			Detail: fmt.Sprintf("the Nitro Hypervisor answered %.32s", r.Error)}
		return nil, e
	}
	if r.Attestation == nil || len(r.Attestation.Document) == 0 {
		return nil, &Error{Reason: ReasonResponse, Step: step, Detail: "the response holds no attestation document"}
	}
	if n := len(r.Attestation.Document); n > attestation.MaxDocumentSize {
		return nil, &Error{Reason: ReasonResponse, Step: step,
			Detail: fmt.Sprintf("the document is %d bytes; the limit is %d", n, attestation.MaxDocumentSize)}
	}
	return bytes.Clone(r.Attestation.Document), nil
}

// checkDocument requires a NitroTPM document (Parse checks the module ID's
// form for its kind) carrying exactly the requested fields, so a TPM that
// answered with something else, an enclave's document or a stale one, is
// caught here rather than by KMS.
func checkDocument(b []byte, req attestation.Request) error {
	const step = "check the attestation document"
	doc, err := attestation.Parse(b)
	if err != nil {
		return &Error{Reason: ReasonDocument, Step: step, Err: err}
	}
	if doc.Kind != attestation.KindNitroTPM {
		return &Error{Reason: ReasonDocument, Step: step,
			Detail: fmt.Sprintf("the TPM returned a %s document (module %.64s), not a NitroTPM one", doc.Kind, doc.ModuleID)}
	}
	for _, f := range []struct {
		name      string
		got, want []byte
	}{
		{"public_key", doc.PublicKey, req.PublicKey},
		{"user_data", doc.UserData, req.UserData},
		{"nonce", doc.Nonce, req.Nonce},
	} {
		if !bytes.Equal(f.got, f.want) { // Parse makes empty fields nil; bytes.Equal treats nil and empty alike
			return &Error{Reason: ReasonDocument, Step: step,
				Detail: fmt.Sprintf("the document's %s (%d bytes) is not the one requested (%d bytes)", f.name, len(f.got), len(f.want))}
		}
	}
	return nil
}
