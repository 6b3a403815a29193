//go:build linux

package attestation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"

	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// DevicePath is where the Nitro Secure Module appears inside an enclave.
const DevicePath = "/dev/nsm"

// Device is the Nitro Secure Module, reached through /dev/nsm with
// github.com/hf/nsm. It exists only inside a Nitro Enclave.
type Device struct {
	mu   sync.RWMutex // Attest holds it shared, Close exclusively (hf/nsm: Close must not race Send)
	sess *nsm.Session
}

var _ Attester = (*Device)(nil)

// OpenDevice opens /dev/nsm. Outside a Nitro Enclave, where the device does
// not exist, it returns an *Error whose check is CheckNoDevice.
func OpenDevice() (*Device, error) { return openDevice(DevicePath) }

func openDevice(path string) (*Device, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, newError(CheckNoDevice, path+" does not exist: this is not a Nitro Enclave (for development use the NSM simulator: a binary built with -tags nsmsim and --nsm sim)", nil)
		}
		return nil, newError(CheckDevice, "failed to stat "+path, err)
	}
	sess, err := nsm.OpenSession(nsm.Options{
		Open:    func() (nsm.FileDescriptor, error) { return os.Open(path) },
		Syscall: syscall.Syscall,
	})
	if err != nil {
		return nil, newError(CheckDevice, "failed to open "+path, err)
	}
	return &Device{sess: sess}, nil
}

// Attest asks the NSM for a document carrying req. The ioctl cannot be
// interrupted; ctx is checked before it starts.
func (d *Device) Attest(ctx context.Context, req Request) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.sess == nil {
		return nil, newError(CheckDevice, "device is closed", nil)
	}
	res, err := d.sess.Send(&request.Attestation{
		PublicKey: req.PublicKey,
		UserData:  req.UserData,
		Nonce:     req.Nonce,
	})
	if err != nil {
		return nil, newError(CheckDevice, "failed to send the attestation request", err)
	}
	if res.Error != "" {
		c := CheckDevice
		if res.Error == response.ECInputTooLarge {
			c = CheckTooLarge
		}
		return nil, newError(c, fmt.Sprintf("NSM refused the attestation request with %s", res.Error), nil)
	}
	if res.Attestation == nil || len(res.Attestation.Document) == 0 {
		return nil, newError(CheckDevice, "NSM answered without a document", nil)
	}
	if len(res.Attestation.Document) > MaxDocumentSize {
		return nil, newError(CheckTooLarge, fmt.Sprintf("NSM returned a %d-byte document; the limit is %d", len(res.Attestation.Document), MaxDocumentSize), nil)
	}
	return bytes.Clone(res.Attestation.Document), nil
}

// Close releases the device. It waits for Attest calls in progress and is
// safe to call more than once.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return nil
	}
	err := d.sess.Close()
	d.sess = nil
	if err != nil {
		return newError(CheckDevice, "failed to close the device", err)
	}
	return nil
}
