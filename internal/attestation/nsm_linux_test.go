//go:build linux

package attestation

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nsm/request"
)

// nsmMaxRequestSize is the NSM driver's request buffer: hf/nsm's
// maxRequestSize and the Rust nsm-api driver both use 0x1000 bytes.
const nsmMaxRequestSize = 0x1000

// TestMaxRequestFitsNSMBuffer: a request with every field at NSM's limit,
// encoded as hf/nsm sends it, fits the driver's request buffer, so
// Request.Validate's limits never let through something the device
// cannot even receive.
func TestMaxRequestFitsNSMBuffer(t *testing.T) {
	req := &request.Attestation{
		PublicKey: make([]byte, MaxPublicKeySize),
		UserData:  make([]byte, MaxUserDataSize),
		Nonce:     make([]byte, MaxNonceSize),
	}
	b, err := cbor.Marshal(req.Encoded())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > nsmMaxRequestSize {
		t.Fatalf("a maximal request encodes to %d bytes; the NSM driver accepts %d", len(b), nsmMaxRequestSize)
	}
	t.Logf("maximal request: %d of %d bytes", len(b), nsmMaxRequestSize)
}

// TestOpenDeviceAbsent: outside a Nitro Enclave there is no /dev/nsm and
// OpenDevice says so.
func TestOpenDeviceAbsent(t *testing.T) {
	if _, err := os.Stat(DevicePath); err == nil {
		t.Skipf("skipping: %s exists (inside a Nitro Enclave)", DevicePath)
	}
	d, err := OpenDevice()
	if d != nil || !errors.Is(err, ErrNoDevice) {
		t.Fatalf("OpenDevice = %v, %v; want nil, ErrNoDevice", d, err)
	}
	t.Log(err)
	for _, want := range []string{"attestation: ", DevicePath, "not a Nitro Enclave", "simulator"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestDeviceFailures drives the device code against /dev/null, a device
// that exists but answers no NSM ioctl: every failure must be a typed error.
func TestDeviceFailures(t *testing.T) {
	d, err := openDevice("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()

	_, err = d.Attest(ctx, Request{UserData: make([]byte, MaxUserDataSize+1)})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("Attest with oversized user_data: %v, want ErrTooLarge", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Attest(canceled, Request{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Attest with a canceled context: %v", err)
	}
	_, err = d.Attest(ctx, Request{Nonce: []byte("n")})
	if !errors.Is(err, ErrDevice) {
		t.Errorf("Attest on /dev/null: %v, want ErrDevice", err)
	}
	t.Log(err)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.Attest(ctx, Request{}); !errors.Is(err, ErrDevice) || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Attest after Close: %v, want a closed-device error", err)
	}
	if _, err := openDevice(t.TempDir() + "/absent"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("openDevice of a missing path: %v, want ErrNoDevice", err)
	}
}
