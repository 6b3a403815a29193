//go:build nsmsim

package main

import (
	"github.com/enclavekit/kmsproxy/internal/attestation"
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
}
