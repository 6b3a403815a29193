package client

import (
	"testing"
	"unicode/utf8"
)

// FuzzNewError feeds newError arbitrary answers, as a misbehaving or
// hostile server could send them: it must not panic, and what it keeps must
// be bounded and printable.
func FuzzNewError(f *testing.F) {
	for _, seed := range []string{
		`{"__type":"AccessDeniedException","message":"User: arn:aws:sts::111122223333:assumed-role/r/s is not authorized"}`,
		`{"__type":"com.amazonaws.kms#NotFoundException","Message":"Key not found"}`,
		`{"ready":false,"credentials":{"Mode":"push"}}`,
		"<html><body>502 Bad Gateway</body></html>",
		`{"__type":"X","message":"a\u0000b\u001b[2J"}`,
		"\xff\xfe\xfd",
		"",
	} {
		f.Add(400, []byte(seed))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := newError(status, body)
		if len(e.Message) > maxErrorMessage+len("...") || len(e.Code) > 128+len("...") {
			t.Fatalf("kept %d bytes of message, %d of code", len(e.Message), len(e.Code))
		}
		for _, s := range []string{e.Message, e.Code} {
			if !utf8.ValidString(s) {
				t.Fatalf("not valid UTF-8: %q", s)
			}
			for _, r := range s {
				if r < 0x20 || r == 0x7f {
					t.Fatalf("control character in %q", s)
				}
			}
		}
		_ = e.Error()
	})
}
