package yamlfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type item struct {
	ID      string   `yaml:"id"`
	Enabled *bool    `yaml:"enabled"`
	Count   int      `yaml:"count"`
	Tags    []string `yaml:"tags"`
	Skipped string   `yaml:"-"`
}

type doc struct {
	Items []item            `yaml:"items"`
	Named map[string]item   `yaml:"named"`
	Plain map[string]string `yaml:"plain"`
}

func TestDecode(t *testing.T) {
	yes := true
	in := `# a comment
items:
  - id: a
    enabled: true
    count: 3
    tags: [x, y]
  - id: b
named:
  first: {id: c}
plain:
  k: v
`
	var got doc
	if err := Decode("f.yaml", []byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := doc{
		Items: []item{{ID: "a", Enabled: &yes, Count: 3, Tags: []string{"x", "y"}}, {ID: "b"}},
		Named: map[string]item{"first": {ID: "c"}},
		Plain: map[string]string{"k": "v"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Decode (-want +got):\n%s", diff)
	}
}

func TestDecodeEmpty(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "\n\n"} {
		var got doc
		if err := Decode("f.yaml", []byte(in), &got); err != nil {
			t.Errorf("Decode(%q) = %v", in, err)
		}
		if !Empty([]byte(in)) {
			t.Errorf("Empty(%q) = false", in)
		}
	}
	if Empty([]byte("items: []")) {
		t.Error("Empty of a document = true")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"misspelt field", "items:\n  - id: a\n    enabeld: true\n", `f.yaml:3:5: items[0]: unknown field "enabeld" (did you mean "enabled"?); valid fields: id, enabled, count, tags`},
		{"unknown field without a near one", "colour: red\n", `f.yaml:1:1: unknown field "colour"; valid fields: items, named, plain`},
		{"wrong kind: scalar for a list", "items: abc\n", `f.yaml:1:8: items: want a list, not a string`},
		{"wrong kind: list for a string", "plain:\n  k: [1]\n", `f.yaml:2:6: plain.k: want a string, not a list`},
		{"wrong scalar type", "items:\n  - count: many\n", `f.yaml:2:12: items[0].count: want a whole number, not a string`},
		{"bool field", "items:\n  - enabled: maybe\n", `f.yaml:2:14: items[0].enabled: want true or false, not a string`},
		{"duplicate field", "items: []\nitems: []\n", `f.yaml:2:1: field "items" appears twice (first at line 1)`},
		{"duplicate map key", "plain:\n  k: a\n  k: b\n", `f.yaml:3:3: plain: key "k" appears twice (first at line 2)`},
		{"alias", "plain: &p {k: v}\nnamed: *p\n", `f.yaml:1:8: plain: YAML anchors and aliases are not supported here: write the value out`},
		{"second document", "items: []\n---\nplain: {}\n", `f.yaml:3:1: the file holds one YAML document, and a second one starts here`},
		{"syntax error", "items: [\n", `f.yaml:1: invalid YAML: did not find expected node content`},
		{"top level is a list", "- a\n", `f.yaml:1:1: want a mapping, not a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got doc
			err := Decode("f.yaml", []byte(tt.in), &got)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode = %v, want an *Error", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestDecodeNeverQuotesValues: a credentials file holds secrets, so no error
// may repeat a value.
func TestDecodeNeverQuotesValues(t *testing.T) {
	for _, in := range []string{
		"items:\n  - count: TOPSECRET\n",
		"items:\n  - enabled: TOPSECRET\n",
		"items: TOPSECRET\n",
		"plain:\n  k: [TOPSECRET]\n",
	} {
		var got doc
		err := Decode("f.yaml", []byte(in), &got)
		if err == nil {
			t.Fatalf("Decode(%q) succeeded", in)
		}
		if strings.Contains(err.Error(), "TOPSECRET") {
			t.Errorf("error repeats a value: %v", err)
		}
	}
}

func TestPositions(t *testing.T) {
	in := "items:\n  - id: a\n  - id: b\n    count: 2\n"
	var got doc
	pos, err := DecodePositions("f.yaml", []byte(in), &got)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string
	}{
		{"items[1].count", "f.yaml:4:12: items[1].count: bad"},
		{"items[1].tags", "f.yaml:3:5: items[1].tags: bad"}, // absent: its item
		{"items[0]", "f.yaml:2:5: items[0]: bad"},
		{"nothing.here", "f.yaml:1:1: nothing.here: bad"},
	}
	for _, tt := range tests {
		if got := pos.Errorf(tt.path, "bad").Error(); got != tt.want {
			t.Errorf("Errorf(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
}
