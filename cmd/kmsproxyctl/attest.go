package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// Input limits for attest verify.
const (
	// maxDocumentInput bounds a document file: attestation.MaxDocumentSize
	// bytes of CBOR, or the same in base64 with room for line breaks
	// (base64 -w 76 adds one byte per 76, about 300 for the largest
	// document; 4 KiB is ample).
	maxDocumentInput = (attestation.MaxDocumentSize+2)/3*4 + 4<<10
	// maxRootFile bounds a --root PEM file. A certificate is under 2 KiB in
	// PEM (NSM certificates are at most attestation.MaxCertificateSize DER
	// bytes); 1 MiB holds a bundle of hundreds.
	maxRootFile = 1 << 20
)

// readDocument reads an attestation document: the raw COSE_Sign1 (CBOR) or
// its base64 (as it appears in JSON, e.g. a KMS request's
// Recipient.AttestationDocument).
func readDocument(e *env, name string) ([]byte, error) {
	b, err := readInput(e, name, maxDocumentInput)
	if err != nil {
		return nil, err
	}
	return maybeBase64(b), nil
}

// maybeBase64 returns the decoded bytes when b is base64 text, and b
// otherwise. CBOR documents start with 0x84 (an array of four, untagged
// COSE_Sign1) or 0xd2 (tag 18); DER envelopes with 0x30: none of them is a
// base64 character, so the two cannot be confused.
func maybeBase64(b []byte) []byte {
	t := bytes.Join(bytes.Fields(b), nil)
	if len(t) == 0 {
		return b
	}
	d, err := base64.StdEncoding.DecodeString(string(t))
	if err != nil {
		return b
	}
	return d
}

// loadRoots reads --root files into a pool; without any it is the AWS Nitro
// Enclaves root.
func loadRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return attestation.NitroRoots(), nil
	}
	pool := x509.NewCertPool()
	for _, path := range files {
		b, err := readFile("root", path, maxRootFile)
		if err != nil {
			return nil, err
		}
		n := 0
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("failed to parse a certificate in --root %s: %w", path, err)
			}
			pool.AddCert(c)
			n++
		}
		if n == 0 {
			return nil, withHint(fmt.Errorf("--root %s holds no PEM certificate", path),
				"pass a PEM file such as the root.pem that \"kmsproxyctl dev ca\" writes")
		}
	}
	return pool, nil
}

// pcrExpectation is one N=HEX of --expect-pcr (attest verify) or --pcr
// (policy check).
type pcrExpectation struct {
	index int
	value []byte
}

// parsePCRExpectations parses the N=HEX values of the flag named flagName
// (--expect-pcr, --pcr), which its errors name. N may be any PCR of either
// kind of document (0-15 for an enclave, 0-23 for a NitroTPM); checkPCRs
// holds it against the document's kind.
func parsePCRExpectations(flagName string, vals []string) ([]pcrExpectation, error) {
	var out []pcrExpectation
	seen := map[int]bool{}
	for _, v := range vals {
		n, h, ok := strings.Cut(v, "=")
		idx, err := strconv.Atoi(strings.TrimPrefix(strings.ToUpper(n), "PCR"))
		if !ok || err != nil || idx < 0 || idx >= attestation.NitroTPMPCRCount {
			return nil, usageErrorf("--%s %q: want N=HEX with N from 0 to %d (%d for a Nitro Enclave document)", flagName, v, attestation.NitroTPMPCRCount-1, attestation.PCRCount-1)
		}
		val, err := hex.DecodeString(h)
		if err != nil || len(val) != attestation.PCRSize {
			return nil, usageErrorf("--%s %q: the value must be %d hex digits (a SHA-384 PCR)", flagName, v, 2*attestation.PCRSize)
		}
		if seen[idx] {
			return nil, usageErrorf("--%s: PCR%d given twice", flagName, idx)
		}
		seen[idx] = true
		out = append(out, pcrExpectation{idx, val})
	}
	return out, nil
}

// checkPCRs compares a verified document's PCRs (its kind's: an enclave's
// pcrs or a NitroTPM's nitrotpm_pcrs) with the expectations.
func checkPCRs(doc *attestation.Document, want []pcrExpectation) error {
	for _, w := range want {
		got, ok := doc.Measurements()[w.index]
		if !ok {
			return fmt.Errorf("PCR%d mismatch: the document has no PCR%d (a %s document has %s 0-%d)", w.index, w.index, doc.Kind, doc.Kind.Field(), doc.Kind.PCRCount()-1)
		}
		if !bytes.Equal(got, w.value) {
			return fmt.Errorf("PCR%d mismatch: the document has %x, expected %x", w.index, got, w.value)
		}
	}
	return nil
}

// verifyHint explains the usual causes of a verification failure.
func verifyHint(err error, rootsGiven bool) string {
	switch {
	case errors.Is(err, attestation.ErrExpired):
		return "NSM signing certificates live 3 hours: verify an older document at its own time with --at document"
	case errors.Is(err, attestation.ErrNotYetValid):
		return "the verification time is before the document was signed; check the clock or --at"
	case errors.Is(err, attestation.ErrChain) && rootsGiven:
		return "the document does not chain to the --root certificates: real documents need the AWS Nitro root (omit --root), simulated ones the root.pem of their \"dev ca\" directory"
	case errors.Is(err, attestation.ErrChain):
		return "only documents signed by real Nitro hardware chain to the AWS root; for a simulated document pass --root DIR/root.pem from \"kmsproxyctl dev ca\""
	case errors.Is(err, attestation.ErrMalformed):
		return "the input must be an attestation document: raw CBOR (COSE_Sign1) or its base64"
	case errors.Is(err, attestation.ErrKind), errors.Is(err, attestation.ErrModuleID):
		return "AWS signs two kinds of document: a Nitro Enclave's (pcrs, module i-...-enc...) and an EC2 instance's NitroTPM's (nitrotpm_pcrs, module i-...-tpm...); this one is neither"
	}
	return ""
}

// debugPCRs are PCRs a debug-mode enclave reports as all zeros (the AWS
// Nitro Enclaves User Guide says its attestation documents carry zeros for
// PCR0, PCR1, PCR2 and PCR8; testdata/real holds two such documents). PCR8
// is zero too for any image that is not signed, so it tells nothing and is
// not among them.
var debugPCRs = []int{0, 1, 2}

// isDebugDocument reports whether doc is a Nitro Enclave's with PCR0, PCR1
// and PCR2 all zeros. A NitroTPM document has no debug mode.
func isDebugDocument(doc *attestation.Document) bool {
	if doc.Kind != attestation.KindEnclave {
		return false
	}
	for _, i := range debugPCRs {
		if !bytes.Equal(doc.PCRs[i], make([]byte, attestation.PCRSize)) {
			return false
		}
	}
	return true
}

// maxClockSkew is how far after the verification time a document's
// timestamp may be before --max-age refuses it: enclave and verifier clocks
// are both NTP-disciplined, and a minute covers what remains.
const maxClockSkew = time.Minute

// checkFreshness applies --expect-nonce and --max-age.
func checkFreshness(doc *attestation.Document, nonce []byte, maxAge time.Duration, when time.Time) error {
	if nonce != nil && !bytes.Equal(doc.Nonce, nonce) {
		if doc.Nonce == nil {
			return errors.New("nonce mismatch: the document carries no nonce, expected the --expect-nonce value")
		}
		return errors.New("nonce mismatch: the document's nonce is not the --expect-nonce value (it answers another request, or is replayed)")
	}
	if maxAge > 0 {
		age := when.Sub(doc.Timestamp)
		if age > maxAge {
			return fmt.Errorf("the document is %s old at %s, over --max-age %s", age.Round(time.Second), when.UTC().Format(time.RFC3339), maxAge)
		}
		if age < -maxClockSkew {
			return fmt.Errorf("the document's timestamp %s is %s after the verification time %s", doc.Timestamp.UTC().Format(time.RFC3339),
				(-age).Round(time.Second), when.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func runAttestVerify(ctx context.Context, e *env, args []string) error {
	f := newFlags("attest verify", "[flags] FILE|-",
		`Verify an AWS Nitro attestation document, a Nitro Enclave's (from its
NSM) or an EC2 instance's (from its NitroTPM), and say which: the
COSE_Sign1 ES384 signature, the certificate chain up to a trusted root and
its validity at the verification time, the field rules of its kind, and
optionally PCR values (an enclave's pcrs or the instance's nitrotpm_pcrs),
the nonce and the document's age. An enclave document from a debug-mode
enclave (PCR0, PCR1 and PCR2 all zero) is refused unless --allow-debug.
FILE holds the raw document (CBOR) or its base64; - reads stdin. Exit
status 0 when it verifies, 1 with the failed check otherwise.

A document kmsproxyd fetched for a caller (POST /v1/attestation, attest
fetch) carries that caller's user data inside kmsproxyd's
requested-attestation structure, which names the listener it came in on;
verify shows it, and those bytes are the caller's, not the enclave's.`,
		`  kmsproxyctl attest verify doc.cbor
  kmsproxyctl attest verify --at document old-doc.cbor
  kmsproxyctl attest verify --root ./simca/root.pem --expect-pcr 0=$PCR0 --json doc.cbor
  nitro-tpm-attest | kmsproxyctl attest verify --expect-pcr 4=$PCR4 --expect-pcr 12=$PCR12 -
  NONCE=$(head -c 32 /dev/urandom | base64)
  kmsproxyctl attest fetch --enclave vsock://16:5000 --nonce "$NONCE" | kmsproxyctl attest verify --expect-nonce "$NONCE" --max-age 1m -`)
	var (
		roots      stringsFlag
		expects    stringsFlag
		at         atFlag
		asJSON     bool
		nonceB64   string
		maxAge     time.Duration
		allowDebug bool
	)
	f.Var(&roots, "root", "trusted root certificate(s), PEM `FILE` (repeatable; default: the embedded AWS Nitro Enclaves root)")
	f.Var(&at, "at", "verify at `TIME`: document (its own timestamp), now, or RFC 3339")
	f.Var(&expects, "expect-pcr", "require PCR N (of the document's kind: an enclave's pcrs or a NitroTPM's nitrotpm_pcrs) to equal HEX, as `N=HEX` (repeatable)")
	f.StringVar(&nonceB64, "expect-nonce", "", "require the document's nonce to be `B64` (base64, as given to attest fetch --nonce)")
	f.DurationVar(&maxAge, "max-age", 0, "require the document to be at most `DURATION` old at the verification time (now, or --at)")
	f.BoolVar(&allowDebug, "allow-debug", false, "accept a document from a debug-mode enclave (PCR0, PCR1 and PCR2 all zero)")
	f.BoolVar(&asJSON, "json", false, "print the verified document as JSON")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	in, err := f.oneInput(pos)
	if err != nil {
		return err
	}
	want, err := parsePCRExpectations("expect-pcr", expects)
	if err != nil {
		return err
	}
	var nonce []byte
	if nonceB64 != "" {
		if nonce, err = decodeBase64Flag("expect-nonce", nonceB64); err != nil {
			return err
		}
		if len(nonce) > attestation.MaxNonceSize {
			return usageErrorf("--expect-nonce is %d bytes; a document's nonce is at most %d", len(nonce), attestation.MaxNonceSize)
		}
	}
	if maxAge < 0 {
		return usageErrorf("--max-age must not be negative")
	}
	if maxAge > 0 && at.document {
		return usageErrorf("--max-age with --at document would measure a document's age against its own timestamp: use --at now or an RFC 3339 time")
	}
	pool, err := loadRoots(roots)
	if err != nil {
		return err
	}
	b, err := readDocument(e, in)
	if err != nil {
		return err
	}
	doc, err := attestation.Parse(b)
	if err != nil {
		return withHint(fmt.Errorf("document does not verify: %w", err), "%s", verifyHint(err, len(roots) > 0))
	}
	when := at.resolve(doc.Timestamp)
	if err := attestation.Verify(doc, pool, when); err != nil {
		if h := verifyHint(err, len(roots) > 0); h != "" {
			return withHint(fmt.Errorf("document does not verify: %w", err), "%s", h)
		}
		return fmt.Errorf("document does not verify: %w", err)
	}
	if err := checkPCRs(doc, want); err != nil {
		return fmt.Errorf("document verifies but %w", err)
	}
	if !allowDebug && isDebugDocument(doc) {
		return withHint(errors.New("document verifies but comes from a debug-mode enclave: PCR0, PCR1 and PCR2 are all zeros, "+
			"so it names no image, and the parent instance can read that enclave's console"),
			"accept it only for development, with --allow-debug")
	}
	if err := checkFreshness(doc, nonce, maxAge, when); err != nil {
		return fmt.Errorf("document verifies but %w", err)
	}
	out := newDocumentJSON(doc, when)
	if asJSON {
		return printJSON(e.stdout, out)
	}
	printDocument(e.stdout, out, len(want))
	return nil
}

// documentJSON is the --json form of a verified document. Its PCRs are
// under the name the document gives them: pcrs for an enclave,
// nitrotpm_pcrs for an instance's NitroTPM.
type documentJSON struct {
	Kind         string  `json:"kind"`
	ModuleID     string  `json:"module_id"`
	Timestamp    string  `json:"timestamp"`
	Digest       string  `json:"digest"`
	PCRs         pcrMap  `json:"pcrs,omitempty"`
	NitroTPMPCRs pcrMap  `json:"nitrotpm_pcrs,omitempty"`
	PublicKey    *[]byte `json:"public_key"`
	UserData     *[]byte `json:"user_data"`
	Nonce        *[]byte `json:"nonce"`
	// Requested is user_data read as kmsproxyd's requested-attestation
	// structure, when it is one.
	Requested  *requestedJSON `json:"requested,omitempty"`
	Chain      []string       `json:"chain"`
	VerifiedAt time.Time      `json:"verified_at"`
	Debug      bool           `json:"debug_mode"`
}

// requestedJSON is the requested-attestation structure of a document's
// user_data.
type requestedJSON struct {
	Purpose  string `json:"purpose"`
	Listener string `json:"listener"`
	Data     []byte `json:"data"`
	// Note says plainly whose the data is.
	Note string `json:"note"`
	// Error says why user_data that claims to be the structure is not.
	Error string `json:"error,omitempty"`
}

// requestedNote is what verify says of a requested document's data.
func requestedNote(listener string) string {
	return fmt.Sprintf("kmsproxyd fetched this document for a caller of its %q listener: the data is that caller's, not a statement of the enclave", listener)
}

func newRequestedJSON(userData []byte) *requestedJSON {
	r, err := attestation.ParseRequested(userData)
	switch {
	case errors.Is(err, attestation.ErrNotRequested):
		return nil
	case err != nil:
		return &requestedJSON{Error: err.Error(), Note: "user_data claims to be kmsproxyd's requested-attestation structure but is not: treat it as nobody's statement"}
	}
	return &requestedJSON{Purpose: r.Purpose, Listener: r.Listener, Data: r.Data, Note: requestedNote(r.Listener)}
}

func newDocumentJSON(doc *attestation.Document, at time.Time) documentJSON {
	opt := func(b []byte) *[]byte {
		if b == nil {
			return nil
		}
		return &b
	}
	return documentJSON{
		Kind:         doc.Kind.String(),
		ModuleID:     doc.ModuleID,
		Timestamp:    doc.Timestamp.UTC().Format(time.RFC3339Nano),
		Digest:       doc.Digest,
		PCRs:         pcrMap(doc.PCRs),
		NitroTPMPCRs: pcrMap(doc.NitroTPMPCRs),
		PublicKey:    opt(doc.PublicKey),
		UserData:     opt(doc.UserData),
		Nonce:        opt(doc.Nonce),
		Requested:    newRequestedJSON(doc.UserData),
		Chain:        doc.ChainSubjects(),
		VerifiedAt:   at.UTC().Truncate(time.Second),
		Debug:        isDebugDocument(doc),
	}
}

// pcrMap marshals PCRs as {"0": "hex", "1": ...} in numeric order.
type pcrMap map[int][]byte

func (m pcrMap) sorted() []int {
	idx := make([]int, 0, len(m))
	for i := range m {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

func (m pcrMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for n, i := range m.sorted() {
		if n > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%q", strconv.Itoa(i), hex.EncodeToString(m[i]))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func printDocument(w io.Writer, d documentJSON, pcrsChecked int) {
	fmt.Fprintf(w, "verified: signature, certificate chain and validity at %s", d.VerifiedAt.Format(time.RFC3339))
	if pcrsChecked > 0 {
		fmt.Fprintf(w, ", %d expected PCR(s)", pcrsChecked)
	}
	pcrs, conditions := d.PCRs, "kms:RecipientAttestation:PCR<n>"
	if d.NitroTPMPCRs != nil {
		pcrs, conditions = d.NitroTPMPCRs, "kms:RecipientAttestation:NitroTPMPCR<n>"
	}
	fmt.Fprintf(w, "\nkind:       %s (KMS condition keys %s)\nmodule_id:  %s\ntimestamp:  %s\ndigest:     %s\n",
		d.Kind, conditions, d.ModuleID, d.Timestamp, d.Digest)
	for _, i := range pcrs.sorted() {
		fmt.Fprintf(w, "PCR%-2d       %x\n", i, pcrs[i])
	}
	field := func(name string, b *[]byte) {
		if b == nil {
			fmt.Fprintf(w, "%-11s (none)\n", name+":")
			return
		}
		fmt.Fprintf(w, "%-11s %d bytes, base64 %s\n", name+":", len(*b), base64.StdEncoding.EncodeToString(*b))
	}
	field("public_key", d.PublicKey)
	field("user_data", d.UserData)
	if r := d.Requested; r != nil && r.Error == "" {
		fmt.Fprintf(w, "  %-9s %s (kmsproxyd requested-attestation structure)\n", "purpose:", r.Purpose)
		fmt.Fprintf(w, "  %-9s %s\n", "listener:", r.Listener)
		fmt.Fprintf(w, "  %-9s %d bytes, base64 %s\n", "data:", len(r.Data), base64.StdEncoding.EncodeToString(r.Data))
		fmt.Fprintf(w, "  %-9s %s\n", "note:", r.Note)
	} else if r != nil {
		fmt.Fprintf(w, "  %-9s %s\n  %-9s %s\n", "warning:", r.Error, "note:", r.Note)
	}
	field("nonce", d.Nonce)
	if d.Debug {
		fmt.Fprintln(w, "debug_mode: yes (PCR0, PCR1 and PCR2 are all zeros; accepted with --allow-debug)")
	}
	fmt.Fprintln(w, "chain (leaf to root):")
	for _, s := range d.Chain {
		fmt.Fprintf(w, "  %s\n", s)
	}
}

// printJSON writes v indented, with a final newline.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func runAttestFetch(ctx context.Context, e *env, args []string) error {
	f := newFlags("attest fetch", "--enclave ADDR [flags]",
		`Ask the enclave's kmsproxyd for a fresh attestation document
(POST /v1/attestation) that carries your nonce and user data, and write it
as the NSM produced it (CBOR). Verify it with "kmsproxyctl attest verify".`,
		`  kmsproxyctl attest fetch --enclave vsock://16:5000 --nonce "$(head -c 32 /dev/urandom | base64)" --out doc.cbor
  kmsproxyctl attest verify doc.cbor
  KMSPROXY_ENCLAVE=vsock://16:5000 kmsproxyctl attest fetch | kmsproxyctl attest verify --json -`)
	var (
		enclave, nonce, userData, out string
		timeout                       time.Duration
	)
	f.StringVar(&enclave, "enclave", e.getenv(enclaveEnv), "kmsproxyd `ADDR` (env "+enclaveEnv+")")
	f.StringVar(&nonce, "nonce", "", "nonce to sign into the document, `B64` (at most 1024 bytes)")
	f.StringVar(&userData, "user-data", "", "user data to sign into the document, `B64` (at most 945 bytes: kmsproxyd wraps it in a structure naming the listener)")
	f.StringVar(&out, "out", "", "write the document to `FILE` instead of stdout")
	f.DurationVar(&timeout, "timeout", defaultTimeout, "give up after this `DURATION`")
	pos, err := f.parse(e, args)
	if err != nil {
		return err
	}
	if err := f.noArgs(pos); err != nil {
		return err
	}
	if enclave == "" {
		return f.usageError("missing --enclave (or %s)", enclaveEnv)
	}
	if err := checkEnclave(f, enclave); err != nil {
		return err
	}
	var req client.AttestationRequest
	if nonce != "" {
		if req.Nonce, err = decodeBase64Flag("nonce", nonce); err != nil {
			return err
		}
	}
	if userData != "" {
		if req.UserData, err = decodeBase64Flag("user-data", userData); err != nil {
			return err
		}
	}
	if len(req.Nonce) > attestation.MaxNonceSize {
		return usageErrorf("--nonce is %d bytes; NSM allows at most %d", len(req.Nonce), attestation.MaxNonceSize)
	}
	if len(req.UserData) > attestation.MaxRequestedDataSize {
		return usageErrorf("--user-data is %d bytes; at most %d fit in a document (NSM's %d less the structure kmsproxyd wraps them in)",
			len(req.UserData), attestation.MaxRequestedDataSize, attestation.MaxUserDataSize)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	doc, err := client.Attestation(ctx, enclave, req)
	if err != nil {
		return enclaveError(enclave, err)
	}
	return writeOutput(e, out, doc, 0o644)
}
