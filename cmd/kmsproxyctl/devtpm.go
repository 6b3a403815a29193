package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/internal/transport"
)

// runDevTPM serves a simulated NitroTPM on a unix socket, the stand-in for
// an attested instance's /dev/tpmrm0 that a kmsproxyd built with -tags
// nsmsim reaches with --attestation nitrotpm-sim --tpm-device unix://PATH.
func runDevTPM(ctx context.Context, e *env, args []string) error {
	f := newFlags("dev tpm", "--ca DIR --listen unix:///PATH [--measurements FILE] [--pcr N=HEX ...]",
		`Serve a simulated NitroTPM on a unix socket: the TPM 2.0 commands an EC2
instance's /dev/tpmrm0 answers for attestation, AWS's vendor command
included, with documents in the NitroTPM's format (nitrotpm_pcrs, module
i-...-tpm...) signed under a "dev ca" CA. A kmsproxyd built with -tags
nsmsim uses it as its TPM with --attestation nitrotpm-sim --tpm-device
unix://PATH, so the attested instance path runs without AWS: devkms (with
--trust-root DIR/root.pem) verifies the documents, and a key policy from
"policy generate --kind nitrotpm" for the same measurements admits them.

The PCRs are those of the measurements (what nitro-tpm-pcr-compute prints
for an Attestable AMI) and the --pcr values; the others hold a TPM's reset
values. Documents chain to the CA's root, never to AWS's. It serves until
SIGTERM or SIGINT.`,
		`  kmsproxyctl dev ca --out ./simca
  kmsproxyctl dev tpm --ca ./simca --measurements instance-measurements.json --listen unix:///tmp/tpmrm0.sock &
  kmsproxyd-sim --attestation nitrotpm-sim --tpm-device unix:///tmp/tpmrm0.sock --listen-parent unix:///tmp/kmsproxy.sock ...`)
	var (
		caDir, listen, measurements, moduleID string
		pcrValues                             stringsFlag
	)
	f.StringVar(&caDir, "ca", "", "simulator CA `DIR` (from \"kmsproxyctl dev ca\")")
	f.StringVar(&listen, "listen", "", "unix socket `ADDR` to serve on, unix:///PATH")
	f.StringVar(&measurements, "measurements", "", "nitro-tpm-pcr-compute's measurements JSON `FILE` for the PCRs")
	f.Var(&pcrValues, "pcr", "set PCR N, `N=HEX` (repeatable; replaces a measured value)")
	f.StringVar(&moduleID, "module-id", "", "module_id (default "+nsmsim.DefaultNitroTPMModuleID+")")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	switch {
	case caDir == "":
		return f.usageError("missing --ca")
	case listen == "":
		return f.usageError("missing --listen")
	}
	addr, err := transport.Parse(listen)
	if err != nil || addr.Network != transport.Unix {
		return f.usageError("--listen %q: want unix:///PATH (a TPM device is a file; the simulator's stand-in is a unix socket)", listen)
	}
	overrides, err := parsePCRExpectations("pcr", pcrValues)
	if err != nil {
		return err
	}
	pcrs := map[int][]byte{}
	if measurements != "" {
		if pcrs, err = loadMeasurements(attestation.KindNitroTPM, measurements); err != nil {
			return err
		}
	}
	for _, o := range overrides {
		pcrs[o.index] = o.value
	}
	if moduleID != "" {
		if err := attestation.ValidateModuleID(attestation.KindNitroTPM, moduleID); err != nil {
			return usageErrorf("--module-id: %v", err)
		}
	}
	ca, err := nsmsim.LoadCA(caDir)
	if err != nil {
		return withHint(fmt.Errorf("failed to load the simulator CA: %w", err), "create one with: kmsproxyctl dev ca --out %s", caDir)
	}
	sim, err := nitrotpmsim.New(ca, nitrotpmsim.Options{PCRs: pcrs, ModuleID: moduleID})
	if err != nil {
		return fmt.Errorf("failed to start the simulator: %w", err)
	}
	ln, err := transport.Listen(addr)
	if err != nil {
		return fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	measured := make([]string, len(idx))
	for i, n := range idx {
		measured[i] = fmt.Sprintf("PCR%d %x…", n, pcrs[n][:6])
	}
	if len(measured) == 0 {
		measured = []string{"none (every PCR at its reset value)"}
	}
	fmt.Fprintf(e.stderr, "kmsproxyctl: serving a simulated NitroTPM on %s; documents chain to %s; measured: %s\n",
		addr, filepath.Join(caDir, nsmsim.RootFile), strings.Join(measured, ", "))
	if err := sim.Serve(ctx, ln); err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "kmsproxyctl: simulated NitroTPM stopped")
	return nil
}
