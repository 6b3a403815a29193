package yamlfile

import (
	"errors"
	"testing"
)

// FuzzDecode checks that Decode never panics and that every error it
// returns is an *Error with a file name and a reason.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		"items:\n  - id: a\n    enabled: true\n    count: 3\n    tags: [x, y]\nnamed:\n  first: {id: c}\nplain:\n  k: v\n",
		"items:\n  - enabeld: true\n", "plain: &p {k: v}\nnamed: *p\n", "items: [\n", "- a\n", "a: 1\n---\nb: 2\n", "",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v doc
		pos, err := DecodePositions("f.yaml", b, &v)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.File != "f.yaml" || e.Reason == "" {
				t.Fatalf("error %T %v is not a complete *Error", err, err)
			}
			return
		}
		_ = pos.Errorf("items[0].id", "x").Error()
	})
}
