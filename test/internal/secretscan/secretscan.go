// Package secretscan checks that no secret a test used (a plaintext, a data
// key, a private key, a shared secret, an AWS secret key or session token)
// shows up in any log the test captured: every process's stdout and stderr
// and every in-process logger. kmsproxy promises that secrets never reach a
// log, an error or a metric; the end-to-end tests hold every component to
// it with a Scanner.
//
// A secret is searched for raw and in the encodings a careless log line
// would use: hex (both cases) and base64 (standard and URL alphabets, with
// and without padding).
package secretscan

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"sync"
)

// MinSecretLen is the shortest secret searched for: shorter values (a
// 4-byte random number) would match by chance in kilobytes of logs, and
// every secret the tests use is at least 16 bytes.
const MinSecretLen = 8

// Form is one encoding of a secret.
type Form struct {
	Name  string // "raw", "hex", "HEX", "base64", ...
	Value []byte
}

// Forms returns the encodings of value a scan searches for.
func Forms(value []byte) []Form {
	forms := []Form{
		{"raw", value},
		{"hex", []byte(hex.EncodeToString(value))},
		{"HEX", bytes.ToUpper([]byte(hex.EncodeToString(value)))},
	}
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{
		{"base64", base64.StdEncoding},
		{"base64 unpadded", base64.RawStdEncoding},
		{"base64url", base64.URLEncoding},
		{"base64url unpadded", base64.RawURLEncoding},
	} {
		forms = append(forms, Form{e.name, []byte(e.enc.EncodeToString(value))})
	}
	// Unpadded and padded forms are the same when len%3 == 0, and the URL
	// alphabet equals the standard one for many values: keep each once.
	seen := map[string]bool{}
	out := forms[:0]
	for _, f := range forms {
		if !seen[string(f.Value)] {
			seen[string(f.Value)] = true
			out = append(out, f)
		}
	}
	return out
}

// Finding is one secret found in one log.
type Finding struct {
	Log    string // the log's name
	Secret string // the secret's name, never its value
	Form   string
	Offset int
}

func (f Finding) String() string {
	return fmt.Sprintf("secret %q appears in log %q (%s, at byte %d)", f.Secret, f.Log, f.Form, f.Offset)
}

// Scanner collects secrets and logs and searches the logs for the secrets.
// It is safe for concurrent use.
type Scanner struct {
	mu      sync.Mutex
	secrets []secret
	logs    []logSource
}

type secret struct {
	name  string
	forms []Form
}

type logSource struct {
	name string
	read func() []byte
}

// New returns an empty Scanner.
func New() *Scanner { return &Scanner{} }

// AddSecret registers a secret value, searched for in all its Forms.
// Values shorter than MinSecretLen are ignored.
func (s *Scanner) AddSecret(name string, value []byte) {
	if len(value) < MinSecretLen {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = append(s.secrets, secret{name, Forms(bytes.Clone(value))})
}

// AddMarker registers a string that must not appear raw, whatever its
// length, such as a KMS JSON member name in a recording of TLS traffic.
func (s *Scanner) AddMarker(name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = append(s.secrets, secret{name, []Form{{"raw", []byte(value)}}})
}

// AddLog registers a log; read is called at every Scan and returns all of
// it so far.
func (s *Scanner) AddLog(name string, read func() []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs = append(s.logs, logSource{name, read})
}

// Log returns a new Buffer registered under name, for a process's output or
// an in-process logger.
func (s *Scanner) Log(name string) *Buffer {
	b := &Buffer{}
	s.AddLog(name, b.Bytes)
	return b
}

// Scan searches every registered log for every registered secret and
// returns what it found, sorted by log and secret.
func (s *Scanner) Scan() []Finding {
	s.mu.Lock()
	secrets := append([]secret(nil), s.secrets...)
	logs := append([]logSource(nil), s.logs...)
	s.mu.Unlock()
	var out []Finding
	for _, l := range logs {
		out = append(out, find(l.name, l.read(), secrets)...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Log != out[j].Log {
			return out[i].Log < out[j].Log
		}
		return out[i].Secret < out[j].Secret
	})
	return out
}

// Counts reports how many secrets and logs are registered and how many
// bytes the logs hold now.
func (s *Scanner) Counts() (secrets, logs, logBytes int) {
	s.mu.Lock()
	secrets, sources := len(s.secrets), append([]logSource(nil), s.logs...)
	s.mu.Unlock()
	for _, l := range sources {
		logBytes += len(l.read())
	}
	return secrets, len(sources), logBytes
}

// ScanData searches data, named name in the findings, for every registered
// secret: for recordings and outputs that are not logs.
func (s *Scanner) ScanData(name string, data []byte) []Finding {
	s.mu.Lock()
	secrets := append([]secret(nil), s.secrets...)
	s.mu.Unlock()
	return find(name, data, secrets)
}

// find searches data for each secret's forms and reports the first
// occurrence of each form.
func find(name string, data []byte, secrets []secret) []Finding {
	var out []Finding
	for _, sec := range secrets {
		for _, f := range sec.forms {
			if i := bytes.Index(data, f.Value); i >= 0 {
				out = append(out, Finding{Log: name, Secret: sec.name, Form: f.Name, Offset: i})
			}
		}
	}
	return out
}

// Buffer is a bytes.Buffer safe for concurrent writers: the stdout and
// stderr of a process, or an slog handler's output.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

var _ io.Writer = (*Buffer)(nil)

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// Bytes returns a copy of everything written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}

// String returns everything written so far.
func (b *Buffer) String() string { return string(b.Bytes()) }
