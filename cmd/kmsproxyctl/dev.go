package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// maxPublicKeyFile bounds a --public-key PEM file: NSM carries at most
// attestation.MaxPublicKeySize (1024) bytes of public key, under 2 KiB in
// PEM; 64 KiB leaves room for a certificate chain around it.
const maxPublicKeyFile = 64 << 10

func runDevCA(ctx context.Context, e *env, args []string) error {
	f := newFlags("dev ca", "--out DIR",
		`Create a CA for the NSM simulator: a root and an intermediate (P-384, like
the AWS Nitro Attestation PKI) whose key signs the 3-hour leaves of
simulated documents. DIR receives root.pem, intermediate.pem and
intermediate.key (mode 0600); the root's own key is discarded. Documents it
signs chain to root.pem, never to the AWS root, so only verifiers told to
trust root.pem accept them.`,
		`  kmsproxyctl dev ca --out ./simca
  devkms --trust-root ./simca/root.pem ...
  kmsproxyd-sim --nsm sim --sim-ca ./simca ...
  kmsproxyctl attest verify --root ./simca/root.pem doc.cbor`)
	out := f.String("out", "", "`DIR` to write the CA to (created if missing)")
	force := f.Bool("force", false, "replace a CA already in DIR (what trusted the old root stops accepting new documents)")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if *out == "" {
		return f.usageError("missing --out")
	}
	root := filepath.Join(*out, nsmsim.RootFile)
	if _, err := os.Stat(root); err == nil && !*force {
		return withHint(fmt.Errorf("%s already holds a simulator CA", *out),
			"use it as it is, choose another --out, or pass --force to replace it")
	}
	ca, err := nsmsim.NewCA()
	if err != nil {
		return fmt.Errorf("failed to create the CA: %w", err)
	}
	if err := ca.Save(*out); err != nil {
		return fmt.Errorf("failed to save the CA: %w", err)
	}
	fmt.Fprintf(e.stdout, `wrote the NSM simulator CA to %[1]s
root certificate: %[2]s
trust it with:
  devkms --trust-root %[2]s
  kmsproxyctl attest verify --root %[2]s FILE
  kmsproxyd built with -tags nsmsim: --nsm sim --sim-ca %[1]s
sign a document with:
  kmsproxyctl dev attest --ca %[1]s --out doc.cbor
`, *out, root)
	return nil
}

func runDevAttest(ctx context.Context, e *env, args []string) error {
	f := newFlags("dev attest", "--ca DIR --out FILE [flags]",
		`Sign a simulated attestation document in NSM's exact format under a
"dev ca" CA, so verifiers (yours, devkms, attest verify) can be tested
without Nitro hardware. The PCRs come from nitro-cli's measurements JSON
(--pcrs; the output of "nitro-cli build-enclave" or "describe-eif"), or are
all zero as in a debug-mode enclave.`,
		`  kmsproxyctl dev attest --ca ./simca --pcrs measurements.json --out doc.cbor
  openssl pkey -in recipient.pem -pubout -out recipient.pub
  kmsproxyctl dev attest --ca ./simca --public-key recipient.pub --nonce "$(head -c 16 /dev/urandom | base64)" --out doc.cbor`)
	var (
		caDir, pubFile, userData, nonce, pcrsFile, out, moduleID string
		kind                                                     = newKindFlag()
	)
	f.Var(&kind, "kind", "the `KIND` of document: enclave (an enclave's NSM) or nitrotpm (an EC2 instance's NitroTPM, nitrotpm_pcrs)")
	f.StringVar(&caDir, "ca", "", "simulator CA `DIR` (from \"kmsproxyctl dev ca\")")
	f.StringVar(&pubFile, "public-key", "", "public key to put in the document, PEM `FILE` (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE); stored as DER SubjectPublicKeyInfo")
	f.StringVar(&userData, "user-data", "", "user data, `B64` (at most 1024 bytes)")
	f.StringVar(&nonce, "nonce", "", "nonce, `B64` (at most 1024 bytes)")
	f.StringVar(&pcrsFile, "pcrs", "", "measurements JSON `FILE` for the PCRs: nitro-cli's (default: all zero, a debug-mode enclave), or nitro-tpm-pcr-compute's with --kind nitrotpm")
	f.StringVar(&moduleID, "module-id", "", "module_id; by default "+nsmsim.DefaultModuleID+" for an enclave, "+nsmsim.DefaultNitroTPMModuleID+" for a NitroTPM")
	f.StringVar(&out, "out", "", "write the document (CBOR) to `FILE`; - for stdout")
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
	case out == "":
		return f.usageError("missing --out (a FILE, or - for stdout)")
	}
	var req attestation.Request
	if userData != "" {
		if req.UserData, err = decodeBase64Flag("user-data", userData); err != nil {
			return err
		}
	}
	if nonce != "" {
		if req.Nonce, err = decodeBase64Flag("nonce", nonce); err != nil {
			return err
		}
	}
	if pubFile != "" {
		if req.PublicKey, err = loadPublicKeyDER(pubFile); err != nil {
			return err
		}
	}
	if err := req.Validate(); err != nil {
		return usageErrorf("%v", err)
	}
	opts := nsmsim.Options{ModuleID: moduleID, Kind: kind.value()}
	switch {
	case kind.value() == attestation.KindNitroTPM:
		// An instance's PCRs: the measured ones over a TPM's reset values.
		var measured map[int][]byte
		if pcrsFile != "" {
			if measured, err = loadMeasurements(attestation.KindNitroTPM, pcrsFile); err != nil {
				return err
			}
		}
		opts.PCRs = nitrotpmsim.DefaultPCRs(measured)
	case pcrsFile != "":
		if opts.PCRs, err = nsmsim.LoadMeasurements(pcrsFile); err != nil {
			return withHint(fmt.Errorf("failed to read --pcrs: %w", err),
				"--pcrs takes the JSON that \"nitro-cli build-enclave\" prints: {\"Measurements\": {\"HashAlgorithm\": \"Sha384 { ... }\", \"PCR0\": \"...\", ...}}")
		}
	}
	ca, err := nsmsim.LoadCA(caDir)
	if err != nil {
		return withHint(fmt.Errorf("failed to load the simulator CA: %w", err), "create one with: kmsproxyctl dev ca --out %s", caDir)
	}
	sim, err := nsmsim.New(ca, opts)
	if err != nil {
		return fmt.Errorf("failed to start the simulator: %w", err)
	}
	doc, err := sim.Attest(ctx, req)
	if err != nil {
		return fmt.Errorf("failed to sign the document: %w", err)
	}
	if err := writeOutput(e, out, doc, 0o644); err != nil {
		return err
	}
	if out != "-" {
		fmt.Fprintf(e.stdout, "wrote a simulated attestation document to %s (%d bytes)\nverify it with: kmsproxyctl attest verify --root %s %s\n",
			out, len(doc), filepath.Join(caDir, nsmsim.RootFile), out)
	}
	return nil
}

// loadPublicKeyDER reads a public key PEM file and returns the DER
// SubjectPublicKeyInfo, the form KMS expects in a Recipient document.
func loadPublicKeyDER(path string) ([]byte, error) {
	b, err := readFile("public-key", path, maxPublicKeyFile)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("--public-key %s holds no PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE PEM block", path)
		}
		switch blk.Type {
		case "PUBLIC KEY":
			if _, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil {
				return nil, fmt.Errorf("failed to parse the public key in %s: %w", path, err)
			}
			return blk.Bytes, nil
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("failed to parse the PKCS #1 public key in %s: %w", path, err)
			}
			return x509.MarshalPKIXPublicKey(k)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("failed to parse the certificate in %s: %w", path, err)
			}
			return c.RawSubjectPublicKeyInfo, nil
		case "RSA PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			return nil, withHint(errors.New("--public-key is a private key"),
				"pass its public half: openssl pkey -in %s -pubout", path)
		}
	}
}
