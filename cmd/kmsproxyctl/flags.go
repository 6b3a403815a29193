package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// cmdFlags is one subcommand's FlagSet with its usage text.
type cmdFlags struct {
	*flag.FlagSet
	name     string // "attest verify"
	synopsis string // "[flags] FILE|-"
	about    string // what the command does, a paragraph
	examples string // indented example lines
}

func newFlags(name, synopsis, about, examples string) *cmdFlags {
	f := &cmdFlags{
		FlagSet:  flag.NewFlagSet("kmsproxyctl "+name, flag.ContinueOnError),
		name:     name,
		synopsis: synopsis,
		about:    about,
		examples: examples,
	}
	f.SetOutput(io.Discard) // errors are reported by report, usage on -h
	return f
}

// usage writes the subcommand's help to w.
func (f *cmdFlags) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: kmsproxyctl %s %s\n\n%s\n", f.name, f.synopsis, strings.TrimSpace(f.about))
	var n int
	f.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		f.SetOutput(w)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
	}
	if f.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(f.examples, "\n"))
	}
}

// parse parses args, allowing flags after positional arguments
// ("attest verify doc.cbor --json"); "--" ends the flags. It returns the
// positional arguments. -h prints the usage on stdout and returns errHelp.
func (f *cmdFlags) parse(e *env, args []string) ([]string, error) {
	var pos []string
	for {
		err := f.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			f.usage(e.stdout)
			return nil, errHelp
		}
		if err != nil {
			return nil, f.usageError("%v", err)
		}
		rest := f.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError is a usage mistake in this subcommand, with a hint to its help.
func (f *cmdFlags) usageError(format string, args ...any) error {
	return &hintError{usageErrorf(format, args...), fmt.Sprintf("run \"kmsproxyctl %s -h\" for usage and examples", f.name)}
}

// oneInput checks that exactly one positional argument (FILE or -) was given.
func (f *cmdFlags) oneInput(pos []string) (string, error) {
	switch len(pos) {
	case 1:
		return pos[0], nil
	case 0:
		return "", f.usageError("missing FILE argument (use - for stdin)")
	}
	return "", f.usageError("want one FILE argument, got %d: %s", len(pos), strings.Join(pos, " "))
}

// isSet reports whether the flag name was given on the command line (a flag
// set to its zero value is given, unlike one left out).
func (f *cmdFlags) isSet(name string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	return set
}

// noArgs checks that no positional argument was given.
func (f *cmdFlags) noArgs(pos []string) error {
	if len(pos) > 0 {
		return f.usageError("unexpected argument %q", pos[0])
	}
	return nil
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// contextFlag is a repeatable KEY=VALUE flag: an encryption context.
type contextFlag map[string]string

func (c *contextFlag) String() string {
	keys := make([]string, 0, len(*c))
	for k := range *c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + (*c)[k]
	}
	return strings.Join(keys, ",")
}

func (c *contextFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	if *c == nil {
		*c = map[string]string{}
	}
	if _, dup := (*c)[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	(*c)[k] = val
	return nil
}

// atFlag is --at: the time to verify a document at.
type atFlag struct {
	document bool      // at the document's own timestamp
	t        time.Time // zero: now
}

func (a *atFlag) String() string {
	switch {
	case a.document:
		return "document"
	case a.t.IsZero():
		return "now"
	}
	return a.t.Format(time.RFC3339)
}

func (a *atFlag) Set(v string) error {
	switch v {
	case "document":
		*a = atFlag{document: true}
	case "now":
		*a = atFlag{}
	default:
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return errors.New(`want "document", "now" or an RFC 3339 time like 2024-05-01T12:00:00Z`)
		}
		*a = atFlag{t: t}
	}
	return nil
}

// resolve returns the verification time for a document with timestamp ts.
func (a *atFlag) resolve(ts time.Time) time.Time {
	switch {
	case a.document:
		return ts
	case a.t.IsZero():
		return time.Now()
	}
	return a.t
}

// readInput reads FILE, or stdin for "-", refusing more than limit bytes.
func readInput(e *env, name string, limit int64) ([]byte, error) {
	var r io.Reader = e.stdin
	display := "stdin"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("failed to read input: %w", err)
		}
		defer f.Close()
		r = f
		display = name
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", display, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("failed to read %s: larger than %d bytes", display, limit)
	}
	return b, nil
}

// readFile reads a named file given to flag, refusing more than limit bytes.
func readFile(flagName, path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read --%s: %w", flagName, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read --%s %s: %w", flagName, path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("failed to read --%s %s: larger than %d bytes", flagName, path, limit)
	}
	return b, nil
}

// decodeBase64Flag decodes a flag value given in standard base64.
func decodeBase64Flag(flagName, v string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil {
		return nil, usageErrorf("--%s is not valid base64: %v", flagName, err)
	}
	return b, nil
}

// blobPrefix marks a blob argument read from a binary file, as in the AWS
// CLI ("fileb://path": "the file is read as binary").
const blobPrefix = "fileb://"

// readBlobFlag reads a blob argument the AWS CLI way: fileb://PATH for the
// raw bytes of a file, otherwise base64 text (AWS CLI v2 treats blob
// arguments as base64 by default; cli_binary_format).
func readBlobFlag(flagName, v string, limit int64) ([]byte, error) {
	if path, ok := strings.CutPrefix(v, blobPrefix); ok {
		return readFile(flagName, path, limit)
	}
	if strings.HasPrefix(v, "file://") {
		return nil, withHint(usageErrorf("--%s: file:// reads text; a blob needs fileb://", flagName),
			"use --%s fileb://PATH for a binary file, or give the value in base64", flagName)
	}
	b, err := decodeBase64Flag(flagName, v)
	if err != nil {
		return nil, withHint(err, "give the value in base64, or fileb://PATH for a binary file")
	}
	if int64(len(b)) > limit {
		return nil, usageErrorf("--%s: %d bytes, more than %d", flagName, len(b), limit)
	}
	return b, nil
}

// writeSecretFile writes data to path readable by its owner only, replacing
// what was there. Existing files are narrowed to mode 0600 before the data is
// written, so a secret never lands in a file others can read.
func writeSecretFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("failed to restrict %s to its owner: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// writeOutput writes data to path, or to stdout for "" and "-".
func writeOutput(e *env, path string, data []byte, perm os.FileMode) error {
	if path == "" || path == "-" {
		// Binary output on a terminal garbles it and can send it escape
		// sequences; nobody wants to read CBOR there.
		if e.isTerminal != nil && e.isTerminal(e.stdout) {
			return withHint(errors.New("refusing to write binary output to a terminal"),
				"write it to a file with --out FILE (or the command's output flag), or redirect stdout: > doc.cbor, | kmsproxyctl attest verify -")
		}
		_, err := e.stdout.Write(data)
		return err
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("failed to write output: %w", err)
	}
	return nil
}
