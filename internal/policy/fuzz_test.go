package policy

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, that every error is a
// *ParseError, and that a policy it accepts is well-formed: every listener
// has rules naming only known operations and endpoints, and writing the
// policy out with MarshalYAML and parsing it again gives the same rules.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatalf("failed to read the example policy: %v", err)
	}
	seeds := []string{string(example), hardened, passThroughOnly, "listeners: {}\n"}
	for _, tt := range parseErrorTests {
		seeds = append(seeds, tt.text)
	}
	if len(seeds) < 2 {
		f.Fatal("FuzzParse has no seeds")
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error %T %q is not a *ParseError", err, err)
			}
			return
		}
		if p.IsDefault() {
			t.Fatal("a parsed file reports itself as the default")
		}
		for _, name := range Listeners {
			r := p.Rules(name)
			for _, op := range r.Operations {
				if op != Wildcard && !isOperation(op) {
					t.Fatalf("%s: accepted unknown operation %q", name, op)
				}
				if IsAttested(op) && !r.Plaintext {
					t.Fatalf("%s: accepted attested operation %s without plaintext", name, op)
				}
			}
			for _, c := range r.Control {
				if c != Wildcard && !slices.Contains(ControlEndpoints, c) {
					t.Fatalf("%s: accepted unknown control endpoint %q", name, c)
				}
			}
			for _, k := range r.Keys {
				if reason := checkKeyPattern(k); reason != "" {
					t.Fatalf("%s: accepted bad key pattern %q: %s", name, k, reason)
				}
			}
		}
		out, err := yaml.Marshal(p)
		if err != nil {
			t.Fatalf("yaml.Marshal of an accepted policy: %v", err)
		}
		again, err := Parse(out, "again.yaml")
		if err != nil {
			t.Fatalf("Parse of MarshalYAML output: %v\n%s", err, out)
		}
		for _, name := range Listeners {
			want, got := p.Rules(name).clone(), again.Rules(name).clone()
			want.absent, got.absent = false, false
			if diff := cmp.Diff(want, got, rulesOpts); diff != "" {
				t.Fatalf("%s rules changed in a round trip (-want +got):\n%s", name, diff)
			}
		}
	})
}
