//go:build !linux

package attestation

import "context"

// DevicePath is where the Nitro Secure Module appears inside an enclave.
const DevicePath = "/dev/nsm"

// Device is the Nitro Secure Module. Nitro Enclaves run Linux; on other
// systems OpenDevice always fails, so the module still builds on a laptop.
type Device struct{}

var _ Attester = (*Device)(nil)

// OpenDevice returns an *Error whose check is CheckNoDevice: the NSM exists
// only inside a (Linux) Nitro Enclave.
func OpenDevice() (*Device, error) {
	return nil, newError(CheckNoDevice, DevicePath+" exists only inside a Linux Nitro Enclave (for development use the NSM simulator: a binary built with -tags nsmsim and --nsm sim)", nil)
}

// Attest always fails: there is no device.
func (d *Device) Attest(ctx context.Context, req Request) ([]byte, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return nil, newError(CheckNoDevice, DevicePath+" exists only inside a Linux Nitro Enclave", nil)
}

// Close does nothing.
func (d *Device) Close() error { return nil }
