package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/keypolicy"
)

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantPos  []string
		wantJSON bool
		wantRoot []string
	}{
		{name: "flags first", args: []string{"--json", "--root", "r.pem", "doc"}, wantPos: []string{"doc"}, wantJSON: true, wantRoot: []string{"r.pem"}},
		{name: "flags after", args: []string{"doc", "--json", "--root", "r.pem"}, wantPos: []string{"doc"}, wantJSON: true, wantRoot: []string{"r.pem"}},
		{name: "mixed", args: []string{"--root", "a", "doc", "--root", "b"}, wantPos: []string{"doc"}, wantRoot: []string{"a", "b"}},
		{name: "stdin dash", args: []string{"-", "--json"}, wantPos: []string{"-"}, wantJSON: true},
		{name: "double dash ends flags", args: []string{"--", "--json"}, wantPos: []string{"--json"}},
		{name: "two positionals", args: []string{"a", "--json", "b"}, wantPos: []string{"a", "b"}, wantJSON: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFlags("test", "", "", "")
			var roots stringsFlag
			asJSON := f.Bool("json", false, "")
			f.Var(&roots, "root", "")
			pos, err := f.parse(&env{stdout: new(bytes.Buffer)}, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantPos, pos); diff != "" {
				t.Errorf("positional (-want +got):\n%s", diff)
			}
			if *asJSON != tt.wantJSON {
				t.Errorf("json = %v, want %v", *asJSON, tt.wantJSON)
			}
			if diff := cmp.Diff(tt.wantRoot, []string(roots)); diff != "" {
				t.Errorf("roots (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	f := newFlags("test", "", "", "")
	f.Bool("json", false, "")
	var out bytes.Buffer
	_, err := f.parse(&env{stdout: &out}, []string{"-h"})
	if !errors.Is(err, errHelp) || !strings.Contains(out.String(), "Usage: kmsproxyctl test") {
		t.Errorf("-h: err %v, usage %q", err, out.String())
	}
	_, err = f.parse(&env{stdout: &out}, []string{"--nope"})
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Errorf("unknown flag: %v, want a usage error", err)
	}
}

func TestContextFlag(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    map[string]string
		wantErr string
	}{
		{name: "pairs", values: []string{"tenant=acme", "purpose=backup"}, want: map[string]string{"tenant": "acme", "purpose": "backup"}},
		{name: "value with equals", values: []string{"k=a=b"}, want: map[string]string{"k": "a=b"}},
		{name: "empty value", values: []string{"k="}, want: map[string]string{"k": ""}},
		{name: "no equals", values: []string{"k"}, wantErr: "want KEY=VALUE"},
		{name: "empty key", values: []string{"=v"}, wantErr: "want KEY=VALUE"},
		{name: "repeated key", values: []string{"k=1", "k=2"}, wantErr: `key "k" given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c contextFlag
			var err error
			for _, v := range tt.values {
				if err = c.Set(v); err != nil {
					break
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, map[string]string(c)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestAtFlag(t *testing.T) {
	ts := time.Date(2024, 2, 26, 7, 2, 1, 0, time.UTC)
	tests := []struct {
		name    string
		value   string
		want    time.Time // zero: about now
		wantErr bool
	}{
		{name: "document", value: "document", want: ts},
		{name: "now", value: "now"},
		{name: "RFC 3339", value: "2022-11-09T23:00:00Z", want: time.Date(2022, 11, 9, 23, 0, 0, 0, time.UTC)},
		{name: "RFC 3339 with offset", value: "2022-11-10T01:00:00+02:00", want: time.Date(2022, 11, 9, 23, 0, 0, 0, time.UTC)},
		{name: "date only", value: "2022-11-09", wantErr: true},
		{name: "words", value: "yesterday", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a atFlag
			err := a.Set(tt.value)
			if tt.wantErr {
				if err == nil {
					t.Fatal("Set succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := a.resolve(ts)
			if tt.want.IsZero() {
				if time.Since(got) > time.Minute {
					t.Errorf("now resolved to %v", got)
				}
				return
			}
			if !got.Equal(tt.want) {
				t.Errorf("resolve = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestReadBlobFlag(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "blob.bin")
	if err := os.WriteFile(bin, []byte{0, 1, 2, 0xff}, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		value   string
		want    []byte
		wantErr string
	}{
		{name: "fileb", value: "fileb://" + bin, want: []byte{0, 1, 2, 0xff}},
		{name: "base64", value: "AAEC/w==", want: []byte{0, 1, 2, 0xff}},
		{name: "base64 with newline", value: "AAEC/w==\n", want: []byte{0, 1, 2, 0xff}},
		{name: "not base64", value: "hello world", wantErr: "not valid base64"},
		{name: "url-safe base64", value: "AAEC_w==", wantErr: "not valid base64"},
		{name: "file://", value: "file://" + bin, wantErr: "a blob needs fileb://"},
		{name: "missing file", value: "fileb://" + filepath.Join(dir, "nope"), wantErr: "no such file"},
		{name: "over the limit", value: base64.StdEncoding.EncodeToString(make([]byte, 9)), wantErr: "9 bytes, more than 8"},
		{name: "at the limit", value: base64.StdEncoding.EncodeToString(make([]byte, 8)), want: make([]byte, 8)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readBlobFlag("blob", tt.value, 8)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %x, want %x", got, tt.want)
			}
		})
	}
}

// TestInputLimits reads a file at each named input limit (accepted) and one
// byte past it (refused before parsing).
func TestInputLimits(t *testing.T) {
	tests := []struct {
		name  string
		limit int64
	}{
		{"maxDocumentInput", maxDocumentInput},
		{"maxEnvelopeInput", maxEnvelopeInput},
		{"maxRootFile", maxRootFile},
		{"maxKeyFile", maxKeyFile},
		{"maxPublicKeyFile", maxPublicKeyFile},
		{"maxKMSCAFile", maxKMSCAFile},
		{"maxCiphertextBlob", maxCiphertextBlob},
		{"maxPlaintext", maxPlaintext},
		{"keypolicy.MaxPolicySize", keypolicy.MaxPolicySize},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				size int64
				ok   bool
			}{{tt.limit, true}, {tt.limit + 1, false}} {
				path := filepath.Join(dir, tt.name)
				if err := os.WriteFile(path, make([]byte, c.size), 0o600); err != nil {
					t.Fatal(err)
				}
				_, err1 := readFile("x", path, tt.limit)
				_, err2 := readInput(&env{}, path, tt.limit)
				for _, err := range []error{err1, err2} {
					if (err == nil) != c.ok {
						t.Errorf("%d bytes: err = %v, want ok=%v", c.size, err, c.ok)
					}
				}
			}
		})
	}
}

func TestMaybeBase64(t *testing.T) {
	raw := []byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22}
	tests := []struct {
		name string
		in   []byte
		want []byte
	}{
		{name: "raw CBOR stays", in: raw, want: raw},
		{name: "base64 decodes", in: []byte(base64.StdEncoding.EncodeToString(raw)), want: raw},
		{name: "wrapped base64 decodes", in: []byte("hES hATgi\r\n"), want: raw},
		{name: "text stays", in: []byte("not base64!"), want: []byte("not base64!")},
		{name: "empty stays", in: []byte{}, want: []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maybeBase64(tt.in); !bytes.Equal(got, tt.want) {
				t.Errorf("maybeBase64(%q) = %x, want %x", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRoleARN(t *testing.T) {
	tests := []struct {
		name    string
		arn     string
		want    roleARN
		wantErr string
	}{
		{name: "role", arn: "arn:aws:iam::111122223333:role/enclave-parent", want: roleARN{"aws", "111122223333", "enclave-parent"}},
		{name: "role with path", arn: "arn:aws:iam::111122223333:role/service/enclave", want: roleARN{"aws", "111122223333", "enclave"}},
		{name: "china", arn: "arn:aws-cn:iam::111122223333:role/r", want: roleARN{"aws-cn", "111122223333", "r"}},
		{name: "session", arn: "arn:aws:sts::111122223333:assumed-role/r/i-0abc", wantErr: "is a session"},
		{name: "user", arn: "arn:aws:iam::111122223333:user/alice", wantErr: "want an IAM role ARN"},
		{name: "short account", arn: "arn:aws:iam::1111:role/r", wantErr: "not 12 digits"},
		{name: "no name", arn: "arn:aws:iam::111122223333:role/", wantErr: "want an IAM role ARN"},
		{name: "not an ARN", arn: "enclave-parent", wantErr: "want an IAM role ARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRoleARN(tt.arn)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(roleARN{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParsePCRList(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		count   int
		want    []int
		wantErr bool
	}{
		{name: "list", in: "0,1,2", count: attestation.PCRCount, want: []int{0, 1, 2}},
		{name: "unsorted with duplicates and PCR prefix", in: "8, PCR2,0,2", count: attestation.PCRCount, want: []int{0, 2, 8}},
		{name: "highest", in: "15", count: attestation.PCRCount, want: []int{15}},
		{name: "past the last PCR", in: "16", count: attestation.PCRCount, wantErr: true},
		{name: "a NitroTPM's highest", in: "4,12,23", count: attestation.NitroTPMPCRCount, want: []int{4, 12, 23}},
		{name: "past a NitroTPM's last PCR", in: "24", count: attestation.NitroTPMPCRCount, wantErr: true},
		{name: "negative", in: "-1", count: attestation.PCRCount, wantErr: true},
		{name: "empty item", in: "0,,1", count: attestation.PCRCount, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePCRList(tt.in, tt.count)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteSecretFileNarrowsMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plain.bin")
	if err := os.WriteFile(path, []byte("old, longer content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSecretFile(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %#o, want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != "secret" {
		t.Errorf("content = %q", b)
	}
}

// openPTY returns the terminal end of a new pseudo-terminal, or skips.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}

// TestWriteOutputRefusesTerminal: binary output (attest fetch, dev attest)
// is not written to a terminal, but is to a file or pipe.
func TestWriteOutputRefusesTerminal(t *testing.T) {
	tty := openPTY(t)
	e := &env{stdout: tty, isTerminal: isTerminal}
	err := writeOutput(e, "", []byte{0xd2, 0x84}, 0o644)
	if err == nil || !strings.Contains(err.Error(), "refusing to write binary output to a terminal") {
		t.Fatalf("writeOutput to a terminal = %v, want a refusal", err)
	}
	var he *hintError
	if !errors.As(err, &he) || !strings.Contains(he.hint, "--out FILE") {
		t.Errorf("refusal %v has no hint naming --out", err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	e.stdout = w
	if err := writeOutput(e, "", []byte{0xd2, 0x84}, 0o644); err != nil {
		t.Errorf("writeOutput to a pipe = %v", err)
	}
	w.Close()
	if got, _ := io.ReadAll(r); !bytes.Equal(got, []byte{0xd2, 0x84}) {
		t.Errorf("pipe got %x", got)
	}
}
