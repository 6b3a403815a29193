package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/enclavekit/kmsproxy/internal/cms"
)

// Input limits for the cms commands.
const (
	// maxEnvelopeInput bounds an envelope file: cms.MaxEnvelopeSize bytes of
	// BER, or its base64 (as in a KMS JSON answer's CiphertextForRecipient)
	// with room for line breaks.
	maxEnvelopeInput = (cms.MaxEnvelopeSize+2)/3*4 + 4<<10
	// maxKeyFile bounds a PEM private key file. An RSA-4096 key is about
	// 3.3 KiB in PEM; 64 KiB leaves room for comments and a certificate
	// kept beside it.
	maxKeyFile = 64 << 10
)

func runCMSInspect(ctx context.Context, e *env, args []string) error {
	f := newFlags("cms inspect", "[--json] FILE|-",
		`Describe a CiphertextForRecipient envelope (CMS EnvelopedData) without
decrypting it: encoding, versions, recipient identifier, algorithms, IV and
sizes. FILE holds the BER/DER bytes or their base64 (as in the KMS answer's
CiphertextForRecipient); - reads stdin. Any well-formed EnvelopedData is
described; what kmsproxyd would refuse in it (algorithms, parameters or
versions KMS never writes, such as RSAES-OAEP with SHA-1) is listed at the
end ("refusals" in --json), and only cms decrypt refuses it.`,
		`  kmsproxyctl cms inspect envelope.ber
  jq -r .CiphertextForRecipient answer.json | kmsproxyctl cms inspect --json -`)
	asJSON := f.Bool("json", false, "print the structure as JSON")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	in, err := f.oneInput(pos)
	if err != nil {
		return err
	}
	b, err := readInput(e, in, maxEnvelopeInput)
	if err != nil {
		return err
	}
	b, err = envelopeBytes(b)
	if err != nil {
		return err
	}
	// Inspect, not Parse: a diagnostic shows every well-formed envelope
	// and marks what kmsproxyd would refuse; only cms decrypt refuses.
	envl, err := cms.Inspect(b)
	if err != nil {
		return cmsError(err)
	}
	if *asJSON {
		return printJSON(e.stdout, envl)
	}
	_, err = io.WriteString(e.stdout, envl.Summary())
	return err
}

func runCMSDecrypt(ctx context.Context, e *env, args []string) error {
	f := newFlags("cms decrypt", "--key PEM [--out FILE] FILE|-",
		`Decrypt a CiphertextForRecipient envelope with the RSA private key it was
made for (PKCS #1 "RSA PRIVATE KEY" or PKCS #8 "PRIVATE KEY" PEM) and write
the plaintext bytes to stdout, or to --out (mode 0600). FILE holds the
BER/DER bytes or their base64; - reads stdin.`,
		`  kmsproxyctl cms decrypt --key recipient.pem envelope.ber > plaintext.bin
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out k.pem   # a recipient key`)
	keyFile := f.String("key", "", "RSA private key, PEM `FILE` (PKCS #1 or PKCS #8)")
	out := f.String("out", "", "write the plaintext to `FILE` (mode 0600) instead of stdout")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	in, err := f.oneInput(pos)
	if err != nil {
		return err
	}
	if *keyFile == "" {
		return f.usageError("missing --key")
	}
	key, err := loadRSAKey(*keyFile)
	if err != nil {
		return err
	}
	b, err := readInput(e, in, maxEnvelopeInput)
	if err != nil {
		return err
	}
	if b, err = envelopeBytes(b); err != nil {
		return err
	}
	plain, err := cms.Decrypt(b, key)
	if err != nil {
		return cmsError(err)
	}
	defer clear(plain)
	if *out != "" {
		return writeSecretFile(*out, plain)
	}
	_, err = e.stdout.Write(plain)
	return err
}

// envelopeBytes returns the envelope in an input: BER/DER bytes, their
// base64, or a PEM "CMS" or "PKCS7" block (openssl cms -outform PEM).
func envelopeBytes(b []byte) ([]byte, error) {
	if t := bytes.TrimSpace(b); bytes.HasPrefix(t, []byte("-----BEGIN ")) {
		blk, _ := pem.Decode(t)
		if blk == nil {
			return nil, errors.New("the input looks like PEM but has no complete PEM block")
		}
		if blk.Type != "CMS" && blk.Type != "PKCS7" {
			return nil, withHint(fmt.Errorf("the input is a PEM %q block, not an envelope", blk.Type),
				"give the envelope (BER/DER, base64, or PEM CMS); keys go in --key")
		}
		return blk.Bytes, nil
	}
	return maybeBase64(b), nil
}

// cmsError adds advice to a cms error.
func cmsError(err error) error {
	switch {
	case errors.Is(err, cms.ErrNoMatchingKey):
		return withHint(err, "the envelope is for another RSA key: KMS names its recipient by SHA-256 of the public key (cms inspect shows it)")
	case errors.Is(err, cms.ErrMalformed), errors.Is(err, cms.ErrTruncated),
		errors.Is(err, cms.ErrTrailingData), errors.Is(err, cms.ErrTooLarge), errors.Is(err, cms.ErrTooDeep):
		return withHint(err, "the input must be one CMS EnvelopedData (a KMS CiphertextForRecipient): BER/DER bytes or their base64")
	}
	return err
}

// loadRSAKey reads an RSA private key from a PEM file.
func loadRSAKey(path string) (*rsa.PrivateKey, error) {
	b, err := readFile("key", path, maxKeyFile)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("--key %s holds no RSA PRIVATE KEY or PRIVATE KEY PEM block", path)
		}
		switch blk.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("failed to parse the PKCS #1 key in %s: %w", path, err)
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("failed to parse the PKCS #8 key in %s: %w", path, err)
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("the key in %s is a %T, not RSA: KMS envelopes are for RSA keys", path, k)
			}
			return rk, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, withHint(fmt.Errorf("the key in %s is encrypted", path), "decrypt it first: openssl pkey -in %s -out plain.pem", path)
		}
	}
}
