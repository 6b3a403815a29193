package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/internal/upstream"
)

// The attestation sources --attestation names.
const (
	// SourceNSM is an enclave's Nitro Secure Module, /dev/nsm.
	SourceNSM = "nsm"
	// SourceNitroTPM is an EC2 instance's NitroTPM (--tpm-device).
	SourceNitroTPM = "nitrotpm"
	// SourceNSMSim and SourceNitroTPMSim are the simulators, in binaries
	// built with -tags nsmsim only.
	SourceNSMSim      = "nsm-sim"
	SourceNitroTPMSim = "nitrotpm-sim"
)

// openSimulator and openNitroTPMSimulator are set by nsm_sim.go in
// binaries built with -tags nsmsim. The production binary has neither
// simulator: a test checks that go list -deps of this package contains
// neither internal/nsmsim nor internal/nitrotpmsim.
var (
	openSimulator         func(caDir, pcrsFile string) (attestation.Attester, func(), error)
	openNitroTPMSimulator func(c *Config) (attestation.Attester, func(), error)
)

// attestationSource is the source --attestation names, or the one the old
// --nsm spelling names (device is nsm, sim is nsm-sim).
func (c *Config) attestationSource() string {
	switch c.NSM {
	case "device":
		return SourceNSM
	case "sim":
		return SourceNSMSim
	}
	return c.Attestation
}

// validateAttestation checks --attestation (or --nsm) and the flags that
// go with each source. A NitroTPM source means kmsproxyd runs on the
// instance itself, where there is no parent and no vsock-proxy: it serves
// the apps of that instance on a unix socket or loopback, and reaches KMS
// and IMDS directly. A vsock listener there would serve the instance's
// enclaves (any of them) with the instance's attested identity, and a
// non-loopback TCP listener every host that can reach the instance; both
// are refused rather than allowed by accident of a default.
func (c *Config) validateAttestation() error {
	switch c.NSM {
	case "":
	case "device", "sim":
		if c.Attestation != SourceNSM && c.Attestation != c.attestationSource() {
			return fmt.Errorf("--nsm %s and --attestation %s disagree: give --attestation alone", c.NSM, c.Attestation)
		}
	default:
		return fmt.Errorf("--nsm %q: want device or sim (or use --attestation nsm|nitrotpm|nsm-sim|nitrotpm-sim)", c.NSM)
	}
	source := c.attestationSource()
	sim := source == SourceNSMSim || source == SourceNitroTPMSim
	switch source {
	case SourceNSM, SourceNitroTPM, SourceNSMSim, SourceNitroTPMSim:
	default:
		return fmt.Errorf("--attestation %q: want nsm, nitrotpm, nsm-sim or nitrotpm-sim", c.Attestation)
	}
	if !sim && (c.SimCA != "" || c.SimPCRs != "") {
		return fmt.Errorf("--sim-ca and --sim-pcrs need a simulator source (--attestation nsm-sim or nitrotpm-sim), not %s", source)
	}
	tpm := source == SourceNitroTPM || source == SourceNitroTPMSim
	if c.TPMDevice != "" && !tpm {
		return fmt.Errorf("--tpm-device needs --attestation nitrotpm or nitrotpm-sim, not %s", source)
	}
	switch source {
	case SourceNSMSim:
		if c.SimCA == "" {
			return fmt.Errorf("--attestation %s needs --sim-ca (the directory `kmsproxyctl dev ca --out DIR` wrote)", source)
		}
	case SourceNitroTPM:
		if c.TPMDevice != "" && !filepath.IsAbs(c.TPMDevice) {
			return fmt.Errorf("--tpm-device %q: want the absolute path of the TPM device, e.g. %s", c.TPMDevice, nitrotpm.DefaultDevicePath)
		}
	case SourceNitroTPMSim:
		if c.TPMDevice != "" {
			a, err := transport.Parse(c.TPMDevice)
			if err != nil || a.Network != transport.Unix {
				return fmt.Errorf("--tpm-device %q: with nitrotpm-sim, want unix:///PATH of a simulator's socket (or none, for an in-process simulator)", c.TPMDevice)
			}
			if c.SimCA != "" || c.SimPCRs != "" {
				return errors.New("--sim-ca and --sim-pcrs configure the in-process simulator; the simulator at --tpm-device has its own")
			}
		} else if c.SimCA == "" {
			return fmt.Errorf("--attestation %s needs --sim-ca (the directory `kmsproxyctl dev ca --out DIR` wrote) or --tpm-device unix:///PATH", source)
		}
	}
	if tpm {
		return c.validateInstance()
	}
	return nil
}

// validateInstance checks the addresses of a kmsproxyd on an attested
// instance (see validateAttestation).
func (c *Config) validateInstance() error {
	for _, l := range []struct{ flag, addr string }{{"--listen-parent", c.ListenParent}, {"--listen-local", c.ListenLocal}} {
		if l.addr == "" {
			continue
		}
		a, err := transport.Parse(l.addr)
		if err != nil {
			return nil // reported by Validate with the flag's name
		}
		switch a.Network {
		case transport.VSOCK:
			return fmt.Errorf("%s %s: a NitroTPM source serves the apps of this instance, not an enclave's parent; a vsock listener would serve the instance's enclaves instead: use a unix socket, e.g. %s unix:///run/kmsproxy/kmsproxy.sock", l.flag, l.addr, l.flag)
		case transport.TCP:
			host, _, err := net.SplitHostPort(a.HostPort)
			if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
				return fmt.Errorf("%s %s: a NitroTPM source serves only this instance's apps: listen on a loopback address (127.0.0.1, ::1) or a unix socket, never on an address other hosts reach", l.flag, l.addr)
			}
		}
	}
	if a, direct, err := upstream.ParseDial(c.KMSDial); err == nil && !direct && a.Network == transport.VSOCK {
		return fmt.Errorf("--kms-dial %s: an instance reaches KMS itself, not through a parent's vsock-proxy: use --kms-dial direct", c.KMSDial)
	}
	if c.Credentials == "imds" {
		if a, err := transport.Parse(c.IMDSDial); err == nil && a.Network == transport.VSOCK {
			return fmt.Errorf("--imds-dial %s: an instance reaches IMDS itself: use --imds-dial tcp://169.254.169.254:80", c.IMDSDial)
		}
	}
	return nil
}

// openAttester returns the attestation source the configuration names and
// a function that releases it.
func openAttester(c *Config) (attestation.Attester, func(), error) {
	source := c.attestationSource()
	switch source {
	case SourceNSMSim:
		if openSimulator == nil {
			return nil, nil, simulatorMissing(source)
		}
		return openSimulator(c.SimCA, c.SimPCRs)
	case SourceNitroTPMSim:
		if openNitroTPMSimulator == nil {
			return nil, nil, simulatorMissing(source)
		}
		return openNitroTPMSimulator(c)
	case SourceNitroTPM:
		dev, err := nitrotpm.Open(c.TPMDevice)
		if err != nil {
			return nil, nil, err
		}
		return dev, func() { _ = dev.Close() }, nil
	default:
		dev, err := attestation.OpenDevice()
		if err != nil {
			return nil, nil, err
		}
		return dev, func() { _ = dev.Close() }, nil
	}
}

func simulatorMissing(source string) error {
	flag := "--attestation " + source
	if strings.HasPrefix(source, "nsm") {
		flag += " (--nsm sim)"
	}
	return fmt.Errorf("%s: this kmsproxyd was built without the simulator (build with -tags nsmsim for development)", flag)
}
