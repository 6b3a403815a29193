//go:build nsmsim

package main

import (
	"strings"

	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

func init() {
	openSimulator = func(caDir, pcrsFile string) (attestation.Attester, func(), error) {
		ca, err := nsmsim.LoadCA(caDir)
		if err != nil {
			return nil, nil, err
		}
		var opts nsmsim.Options
		if pcrsFile != "" {
			if opts.PCRs, err = nsmsim.LoadMeasurements(pcrsFile); err != nil {
				return nil, nil, err
			}
		}
		sim, err := nsmsim.New(ca, opts)
		if err != nil {
			return nil, nil, err
		}
		return sim, func() {}, nil
	}

	// The NitroTPM simulator is always reached through the real NitroTPM
	// client (internal/nitrotpm) and the TPM framing: over a simulator's
	// unix socket (--tpm-device unix:///PATH, go-tpm's socket transport),
	// or over an in-process pipe to a simulator signing under --sim-ca.
	openNitroTPMSimulator = func(c *Config) (attestation.Attester, func(), error) {
		if path, ok := strings.CutPrefix(c.TPMDevice, "unix://"); ok {
			t, err := linuxudstpm.Open(path)
			if err != nil {
				return nil, nil, &nitrotpm.Error{Reason: nitrotpm.ReasonNoDevice, Detail: "no simulator socket at " + path, Err: err}
			}
			dev := nitrotpm.New(t, t)
			return dev, func() { _ = dev.Close() }, nil
		}
		ca, err := nsmsim.LoadCA(c.SimCA)
		if err != nil {
			return nil, nil, err
		}
		var opts nitrotpmsim.Options
		if c.SimPCRs != "" {
			if opts.PCRs, err = nitrotpmsim.LoadMeasurements(c.SimPCRs); err != nil {
				return nil, nil, err
			}
		}
		sim, err := nitrotpmsim.New(ca, opts)
		if err != nil {
			return nil, nil, err
		}
		pipe := sim.Pipe()
		dev := nitrotpm.New(pipe, pipe)
		return dev, func() { _ = dev.Close() }, nil
	}
}
