package keypolicy

import (
	"testing"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

func TestAttestationContext(t *testing.T) {
	tests := []struct {
		name string
		pcrs map[int][]byte
		want map[string][]string
	}{
		{"none", nil, map[string][]string{}},
		{
			name: "PCR0 is also the image digest; hex is lowercase",
			pcrs: map[int][]byte{0: {0xAB, 0x01}, 1: {0xCD}, 8: {}, -1: {0xff}},
			want: map[string][]string{
				"kms:RecipientAttestation:ImageSha384": {"ab01"},
				"kms:RecipientAttestation:PCR0":        {"ab01"},
				"kms:RecipientAttestation:PCR1":        {"cd"},
				"kms:RecipientAttestation:PCR8":        {""},
			},
		},
		{
			name: "no PCR0, no image digest",
			pcrs: map[int][]byte{15: {0x0f}},
			want: map[string][]string{"kms:RecipientAttestation:PCR15": {"0f"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diff(t, "context", AttestationContext(tt.pcrs), tt.want)
		})
	}
}

func TestEncryptionContext(t *testing.T) {
	tests := []struct {
		name string
		ec   map[string]string
		want map[string][]string
	}{
		{"empty", map[string]string{}, map[string][]string{}},
		{
			name: "pairs and sorted keys",
			ec:   map[string]string{"tenant": "blue", "Project": "X", "aws:cloudtrail:arn": "arn:aws:cloudtrail:us-east-1:111122223333:trail/t"},
			want: map[string][]string{
				"kms:EncryptionContext:tenant":             {"blue"},
				"kms:EncryptionContext:Project":            {"X"},
				"kms:EncryptionContext:aws:cloudtrail:arn": {"arn:aws:cloudtrail:us-east-1:111122223333:trail/t"},
				"kms:EncryptionContextKeys":                {"Project", "aws:cloudtrail:arn", "tenant"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diff(t, "context", EncryptionContext(tt.ec), tt.want)
		})
	}
}

func TestCallerContext(t *testing.T) {
	tests := []struct {
		name   string
		caller string
		want   map[string][]string
	}{
		{"user", testUser, map[string][]string{
			"kms:CallerAccount": {testAccount}, "aws:PrincipalAccount": {testAccount}, "aws:PrincipalArn": {testUser},
		}},
		{"session is the role", testSession, map[string][]string{
			"kms:CallerAccount": {testAccount}, "aws:PrincipalAccount": {testAccount}, "aws:PrincipalArn": {testRole},
		}},
		{"root", testRoot, map[string][]string{
			"kms:CallerAccount": {testAccount}, "aws:PrincipalAccount": {testAccount}, "aws:PrincipalArn": {testRoot},
		}},
		{"bare account is the root", testAccount, map[string][]string{
			"kms:CallerAccount": {testAccount}, "aws:PrincipalAccount": {testAccount}, "aws:PrincipalArn": {testRoot},
		}},
		{"other partition", "arn:aws-us-gov:sts::111122223333:assumed-role/app/s", map[string][]string{
			"kms:CallerAccount": {testAccount}, "aws:PrincipalAccount": {testAccount}, "aws:PrincipalArn": {"arn:aws-us-gov:iam::111122223333:role/app"},
		}},
		{"service", "logs.amazonaws.com", map[string][]string{}},
		{"anonymous", "", map[string][]string{}},
		{"malformed ARN", "arn:aws:iam::1:user/x", map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diff(t, "context", CallerContext(tt.caller), tt.want)
		})
	}
}

func TestMergeContext(t *testing.T) {
	a := map[string][]string{"kms:a": {"1"}, "kms:b": {"2"}}
	b := map[string][]string{"kms:b": {"3"}, "kms:c": {"4"}}
	got := MergeContext(a, nil, b)
	want := map[string][]string{"kms:a": {"1"}, "kms:b": {"2", "3"}, "kms:c": {"4"}}
	diff(t, "merged", got, want)
	got["kms:a"][0] = "changed"
	if a["kms:a"][0] != "1" {
		t.Error("MergeContext shares value slices with its arguments")
	}
}

// TestNitroTPMAttestationContext: a NitroTPM document's PCRs become
// kms:RecipientAttestation:NitroTPMPCR<n> in lower-case hex, which a
// condition can test like an enclave's PCRs.
func TestNitroTPMAttestationContext(t *testing.T) {
	got := NitroTPMAttestationContext(map[int][]byte{4: {0xAB, 0x01}, 23: {0xff}, -1: {0}})
	want := map[string][]string{
		"kms:RecipientAttestation:NitroTPMPCR4":  {"ab01"},
		"kms:RecipientAttestation:NitroTPMPCR23": {"ff"},
	}
	diff(t, "NitroTPMAttestationContext", got, want)
	p := mustParse(t, document(`{"Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:NitroTPMPCR4":"AB01"}}}`))
	if d := p.Evaluate(Request{Principal: testRole, Action: "kms:Decrypt", Resource: testKeyARN, Context: got}); !d.Allowed {
		t.Errorf("NitroTPM PCR condition:\n%s", d.Explain())
	}
	if ws := p.Warnings(); len(ws) != 0 {
		t.Errorf("warnings for a known key: %v", ws)
	}
}

// TestDocumentContext: each kind of document sets its own condition keys
// and never the other kind's, so a value of one kind cannot satisfy a
// condition written for the other: an enclave document whose PCR4 equals
// an instance's boot measurement is still no NitroTPM document, and an
// instance whose PCR0 equals an enclave image's digest is still no
// enclave.
func TestDocumentContext(t *testing.T) {
	v := []byte{0xAB, 0x01}
	enclave := &attestation.Document{Kind: attestation.KindEnclave, PCRs: map[int][]byte{0: v, 4: v}}
	tpm := &attestation.Document{Kind: attestation.KindNitroTPM, NitroTPMPCRs: map[int][]byte{0: v, 4: v}}
	tests := []struct {
		name string
		doc  *attestation.Document
		want map[string][]string
	}{
		{"enclave", enclave, map[string][]string{
			"kms:RecipientAttestation:ImageSha384": {"ab01"},
			"kms:RecipientAttestation:PCR0":        {"ab01"},
			"kms:RecipientAttestation:PCR4":        {"ab01"},
		}},
		{"NitroTPM", tpm, map[string][]string{
			"kms:RecipientAttestation:NitroTPMPCR0": {"ab01"},
			"kms:RecipientAttestation:NitroTPMPCR4": {"ab01"},
		}},
		{"no kind", &attestation.Document{PCRs: map[int][]byte{0: v}, NitroTPMPCRs: map[int][]byte{4: v}}, map[string][]string{}},
		{"nil", nil, map[string][]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diff(t, "DocumentContext", DocumentContext(tt.doc), tt.want)
		})
	}

	policies := map[string]*Policy{
		"instance": mustParse(t, document(`{"Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:NitroTPMPCR4":"AB01"}}}`)),
		"enclave":  mustParse(t, document(`{"Effect":"Allow","Principal":{"AWS":"`+testRole+`"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":"AB01"}}}`)),
	}
	for _, c := range []struct {
		policy string
		doc    *attestation.Document
		allow  bool
	}{
		{"instance", tpm, true},
		{"instance", enclave, false},
		{"enclave", enclave, true},
		{"enclave", tpm, false},
	} {
		d := policies[c.policy].Evaluate(Request{Principal: testRole, Action: "kms:Decrypt", Resource: testKeyARN, Context: DocumentContext(c.doc)})
		if d.Allowed != c.allow {
			t.Errorf("%s policy, %s document: allowed = %v, want %v\n%s", c.policy, c.doc.Kind, d.Allowed, c.allow, d.Explain())
		}
	}
}
