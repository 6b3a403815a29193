package keypolicy

import (
	"os"
	"testing"
)

// BenchmarkEvaluate measures one authorisation of devkms's hot path: an
// attested Decrypt by a role session against AWS's Nitro Enclaves example
// policy (six StringEqualsIgnoreCase conditions on 96-digit measurements),
// with a request context of 16 PCRs plus the caller keys.
func BenchmarkEvaluate(b *testing.B) {
	ex := loadNitroExample(b)
	req := ex.request("arn:aws:sts::123456789012:assumed-role/data-processing/i-0123456789abcdef0", "kms:Decrypt", ex.pcrs)
	if d := ex.policy.Evaluate(req); !d.Allowed {
		b.Fatalf("benchmark request is denied:\n%s", d.Explain())
	}
	b.ReportAllocs()
	for b.Loop() {
		ex.policy.Evaluate(req)
	}
}

// BenchmarkEvaluateDenied is the same request with one PCR off, where every
// condition is still evaluated for the explanation.
func BenchmarkEvaluateDenied(b *testing.B) {
	ex := loadNitroExample(b)
	pcrs := make(map[int][]byte, len(ex.pcrs))
	for n, v := range ex.pcrs {
		pcrs[n] = v
	}
	pcrs[4] = simulatedPCR(104)
	req := ex.request(exampleRole, "kms:Decrypt", pcrs)
	if d := ex.policy.Evaluate(req); d.Allowed {
		b.Fatal("benchmark request is allowed")
	}
	b.ReportAllocs()
	for b.Loop() {
		ex.policy.Evaluate(req)
	}
}

// BenchmarkParse measures parsing AWS's Nitro Enclaves example policy, the
// work devkms does on PutKeyPolicy and when it loads its state.
func BenchmarkParse(b *testing.B) {
	doc, err := os.ReadFile(nitroExamplePath)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseAtLimit parses a policy of MaxPolicySize bytes.
func BenchmarkParseAtLimit(b *testing.B) {
	doc := sizedDocument(b, MaxPolicySize)
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(doc); err != nil {
			b.Fatal(err)
		}
	}
}
