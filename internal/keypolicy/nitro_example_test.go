package keypolicy

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
)

// nitroExamplePath is the example key policy of AWS's Nitro Enclaves
// documentation (testdata/aws-docs/PROVENANCE.md).
const nitroExamplePath = "testdata/aws-docs/nitro-enclaves-example-key-policy.json"

// nitroExample is the key policy from AWS's Nitro Enclaves documentation
// with its EXAMPLE placeholders replaced by simulated measurements, and the
// PCRs an enclave with those measurements reports.
type nitroExample struct {
	policy *Policy
	pcrs   map[int][]byte
}

const (
	exampleAccount = "123456789012"
	exampleRole    = "arn:aws:iam::123456789012:role/data-processing"
	exampleKeyARN  = "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
)

// simulatedPCR returns a deterministic 48-byte measurement for PCR n.
func simulatedPCR(n int) []byte {
	sum := sha512.Sum384([]byte(fmt.Sprintf("kmsproxy simulated enclave PCR%d", n)))
	return sum[:]
}

// loadNitroExample reads the example policy (nitroExamplePath) and
// substitutes measurements for its placeholders: ImageSha384 and PCR0 get
// PCR0, PCRn gets PCRn. Even PCRs are written in UPPERCASE hex, odd ones in
// lowercase, so StringEqualsIgnoreCase has real work to do against the
// lowercase hex of the request context.
func loadNitroExample(t testing.TB) nitroExample {
	t.Helper()
	doc, err := os.ReadFile(nitroExamplePath)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse of the AWS example policy: %v", err)
	}
	if len(raw.Statements) != 1 || len(raw.Statements[0].Conditions) != 6 {
		t.Fatalf("example policy has %d statements; want 1 with 6 conditions", len(raw.Statements))
	}
	pcrs := make(map[int][]byte, 16)
	for n := range 16 {
		// A real NSM reports 16 PCRs; those the image does not measure are
		// zero.
		pcrs[n] = make([]byte, sha512.Size384)
	}
	for _, c := range raw.Statements[0].Conditions {
		if c.Operator != "StringEqualsIgnoreCase" || len(c.Values) != 1 || !strings.Contains(c.Values[0], "EXAMPLE") {
			t.Fatalf("unexpected example condition %s %v", c.String(), c.Values)
		}
		n := 0
		if c.Key != KeyImageSha384 {
			if _, err := fmt.Sscanf(c.Key, KeyPCRPrefix+"%d", &n); err != nil {
				t.Fatalf("unexpected example condition key %q", c.Key)
			}
		}
		pcrs[n] = simulatedPCR(n)
		measurement := hex.EncodeToString(pcrs[n])
		if n%2 == 0 {
			measurement = strings.ToUpper(measurement)
		}
		doc = bytes.ReplaceAll(doc, []byte(c.Values[0]), []byte(measurement))
	}
	if bytes.Contains(doc, []byte("EXAMPLE")) {
		t.Fatal("placeholders left in the example policy after substitution")
	}
	p, err := Parse(doc)
	if err != nil {
		t.Fatalf("Parse of the substituted example policy: %v", err)
	}
	return nitroExample{policy: p, pcrs: pcrs}
}

// request builds a request from the enclave with the given PCRs.
func (e nitroExample) request(principal, action string, pcrs map[int][]byte) Request {
	return Request{
		Principal: principal,
		Action:    action,
		Resource:  exampleKeyARN,
		Context:   MergeContext(AttestationContext(pcrs), CallerContext(principal)),
	}
}

func TestNitroEnclavesExamplePolicy(t *testing.T) {
	ex := loadNitroExample(t)
	session := "arn:aws:sts::123456789012:assumed-role/data-processing/i-0123456789abcdef0"

	otherPCR2 := make(map[int][]byte, len(ex.pcrs))
	for n, v := range ex.pcrs {
		otherPCR2[n] = v
	}
	otherPCR2[2] = simulatedPCR(102)

	tests := []struct {
		name          string
		req           Request
		wantAllowed   bool
		wantPrincipal bool
		wantAction    bool
		wantFailed    []string // keys of the conditions that fail
	}{
		{
			name:        "role with matching measurements",
			req:         ex.request(exampleRole, "kms:Decrypt", ex.pcrs),
			wantAllowed: true, wantPrincipal: true, wantAction: true,
		},
		{
			name:        "assumed-role session of the role",
			req:         ex.request(session, "kms:Decrypt", ex.pcrs),
			wantAllowed: true, wantPrincipal: true, wantAction: true,
		},
		{
			name:        "GenerateDataKey",
			req:         ex.request(session, "kms:GenerateDataKey", ex.pcrs),
			wantAllowed: true, wantPrincipal: true, wantAction: true,
		},
		{
			name:        "GenerateRandom",
			req:         ex.request(session, "kms:GenerateRandom", ex.pcrs),
			wantAllowed: true, wantPrincipal: true, wantAction: true,
		},
		{
			name:          "one PCR different",
			req:           ex.request(exampleRole, "kms:Decrypt", otherPCR2),
			wantPrincipal: true, wantAction: true,
			wantFailed: []string{"kms:RecipientAttestation:PCR2"},
		},
		{
			name:          "no attestation document",
			req:           Request{Principal: exampleRole, Action: "kms:Decrypt", Resource: exampleKeyARN, Context: CallerContext(exampleRole)},
			wantPrincipal: true, wantAction: true,
			wantFailed: []string{
				"kms:RecipientAttestation:ImageSha384", "kms:RecipientAttestation:PCR0", "kms:RecipientAttestation:PCR1",
				"kms:RecipientAttestation:PCR2", "kms:RecipientAttestation:PCR3", "kms:RecipientAttestation:PCR4",
			},
		},
		{
			name:       "another principal of the account",
			req:        ex.request("arn:aws:iam::123456789012:user/alice", "kms:Decrypt", ex.pcrs),
			wantAction: true,
		},
		{
			name:       "the same role name in another account",
			req:        ex.request("arn:aws:sts::999988887777:assumed-role/data-processing/s", "kms:Decrypt", ex.pcrs),
			wantAction: true,
		},
		{
			name:          "action not in the statement",
			req:           ex.request(exampleRole, "kms:Encrypt", ex.pcrs),
			wantPrincipal: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := ex.policy.Evaluate(tt.req)
			if d.Allowed != tt.wantAllowed || d.ExplicitDeny {
				t.Fatalf("Allowed, ExplicitDeny = %v, %v; want %v, false\n%s", d.Allowed, d.ExplicitDeny, tt.wantAllowed, d.Explain())
			}
			r := d.Statements[0]
			if r.PrincipalMatched != tt.wantPrincipal || r.ActionMatched != tt.wantAction || !r.ResourceMatched {
				t.Errorf("principal, action, resource matched = %v, %v, %v; want %v, %v, true",
					r.PrincipalMatched, r.ActionMatched, r.ResourceMatched, tt.wantPrincipal, tt.wantAction)
			}
			var failed []string
			for _, c := range r.Conditions {
				if !c.Matched {
					failed = append(failed, c.Key)
				}
			}
			diff(t, "failed conditions", failed, tt.wantFailed)
			msg := d.AccessDeniedMessage(tt.req)
			if tt.wantAllowed {
				if msg != "" {
					t.Errorf("AccessDeniedMessage of an allowed request = %q", msg)
				}
				return
			}
			want := fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s because no resource-based policy allows the %s action",
				tt.req.Principal, tt.req.Action, exampleKeyARN, tt.req.Action)
			if msg != want {
				t.Errorf("AccessDeniedMessage =\n%q\nwant\n%q", msg, want)
			}
		})
	}
}

// TestNitroEnclavesExampleExplainsPCR checks what `kmsproxyctl policy check`
// will print when one measurement is off: the PCR, the operator and both
// values.
func TestNitroEnclavesExampleExplainsPCR(t *testing.T) {
	ex := loadNitroExample(t)
	for _, n := range []int{0, 3} {
		t.Run(fmt.Sprintf("PCR%d", n), func(t *testing.T) {
			pcrs := make(map[int][]byte, len(ex.pcrs))
			for k, v := range ex.pcrs {
				pcrs[k] = v
			}
			pcrs[n] = simulatedPCR(100 + n)
			d := ex.policy.Evaluate(ex.request(exampleRole, "kms:Decrypt", pcrs))
			if d.Allowed {
				t.Fatal("allowed with a wrong measurement")
			}
			got := d.Explain()
			policyHex := hex.EncodeToString(simulatedPCR(n))
			if n%2 == 0 {
				policyHex = strings.ToUpper(policyHex)
			}
			want := fmt.Sprintf("  condition StringEqualsIgnoreCase kms:RecipientAttestation:PCR%d: FAILED: request value %q does not match policy value %q\n",
				n, hex.EncodeToString(pcrs[n]), policyHex)
			if !strings.Contains(got, want) {
				t.Errorf("Explain lacks\n%s\ngot:\n%s", want, got)
			}
			if !strings.HasPrefix(got, "DENIED (implicit deny)") {
				t.Errorf("Explain does not start with the verdict:\n%s", got)
			}
			imageFailed := strings.Contains(got, "kms:RecipientAttestation:ImageSha384: FAILED")
			if imageFailed != (n == 0) {
				t.Errorf("ImageSha384 failed = %v, want %v (it is PCR0)", imageFailed, n == 0)
			}
		})
	}
}
