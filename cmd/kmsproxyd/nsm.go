package main

import (
	"errors"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// openSimulator is set by nsm_sim.go in binaries built with -tags nsmsim.
// The production binary has no simulator: a test checks that go list -deps
// of this package does not contain it.
var openSimulator func(caDir, pcrsFile string) (attestation.Attester, func(), error)

// openAttester returns the attestation source --nsm names and a function
// that releases it.
func openAttester(c *Config) (attestation.Attester, func(), error) {
	switch c.NSM {
	case "sim":
		if openSimulator == nil {
			return nil, nil, errors.New("--nsm sim: this kmsproxyd was built without the simulator (build with -tags nsmsim for development)")
		}
		return openSimulator(c.SimCA, c.SimPCRs)
	default:
		dev, err := attestation.OpenDevice()
		if err != nil {
			return nil, nil, err
		}
		return dev, func() { _ = dev.Close() }, nil
	}
}
