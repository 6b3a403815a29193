// Package yamlfile decodes the YAML configuration files devkms reads (seed,
// credentials, IAM policies) strictly, with errors a person can act on: each
// names the file, the line and column, the path to the offending value, and
// for a misspelt field the nearest valid one, e.g.
//
//	seed.yaml:4:5: keys[0]: unknown field "polcy_file" (did you mean "policy_file"?)
//
// instead of go.yaml.in/yaml/v3's "field polcy_file not found in type
// devkms.SeedKey", which names a Go type the reader has never seen. Values
// are never repeated in errors: a credentials file holds secrets.
package yamlfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/enclavekit/kmsproxy/internal/suggest"
)

// Error is a problem at a place in a YAML file.
type Error struct {
	// File is the file's name as given to Decode.
	File string
	// Line and Column are 1-based; 0 when unknown (Column is 0 for YAML
	// syntax errors, whose column the parser does not report).
	Line, Column int
	// Path locates the value, e.g. "keys[0].policy_file"; "" for the whole
	// document.
	Path string
	// Reason says what is wrong.
	Reason string
}

// Error gives "FILE:LINE:COLUMN: PATH: REASON".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Column > 0 {
			b.WriteString(":" + strconv.Itoa(e.Column))
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Position is where a value starts in a file, 1-based.
type Position struct {
	Line, Column int
}

// Positions maps the path of every value Decode read ("keys[0].id") to
// where it starts, so that a check made after decoding can point at the
// line it is about.
type Positions struct {
	file string
	at   map[string]Position
}

// Errorf returns an *Error at the value of path, or at the nearest enclosing
// value Decode saw ("keys[3]" for a missing "keys[3].id").
func (p Positions) Errorf(path, format string, args ...any) *Error {
	e := &Error{File: p.file, Path: path, Reason: fmt.Sprintf(format, args...)}
	for q := path; ; {
		if pos, ok := p.at[q]; ok {
			e.Line, e.Column = pos.Line, pos.Column
			return e
		}
		i := strings.LastIndexAny(q, ".[")
		if i < 0 {
			break
		}
		q = q[:i]
	}
	if pos, ok := p.at[""]; ok {
		e.Line, e.Column = pos.Line, pos.Column
	}
	return e
}

// Decode decodes the YAML document data, read from the file named file, into
// v, which must be a non-nil pointer. Struct fields are matched by their
// `yaml:"name"` tags; an unknown field, a repeated key, a value of the wrong
// kind, a YAML alias or a second document is an *Error. An empty document
// leaves v unchanged and returns nil; Empty reports it.
func Decode(file string, data []byte, v any) error {
	_, err := DecodePositions(file, data, v)
	return err
}

// DecodePositions is Decode that also returns where each value was.
func DecodePositions(file string, data []byte, v any) (Positions, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		panic("yamlfile: Decode needs a non-nil pointer")
	}
	d := &decoder{file: file, pos: Positions{file: file, at: map[string]Position{}}}
	err := d.document(data, rv)
	return d.pos, err
}

func (d *decoder) document(data []byte, rv reflect.Value) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return d.syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		at := &extra
		if len(extra.Content) > 0 {
			at = extra.Content[0]
		}
		return d.errorAt(at, "", "the file holds one YAML document, and a second one starts here")
	case !errors.Is(err, io.EOF):
		return d.syntaxError(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil
	}
	return d.decode(doc.Content[0], "", rv.Elem())
}

// Empty reports whether data holds no YAML document (nothing, or only
// comments and blank lines).
func Empty(data []byte) bool {
	var doc yaml.Node
	err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc)
	return errors.Is(err, io.EOF)
}

type decoder struct {
	file string
	pos  Positions
}

func (d *decoder) errorAt(n *yaml.Node, path, format string, args ...any) *Error {
	return &Error{File: d.file, Line: n.Line, Column: n.Column, Path: path, Reason: fmt.Sprintf(format, args...)}
}

// yamlLine finds the line in a go.yaml.in/yaml/v3 syntax error, "yaml: line
// N: problem"; without it the problem is on the first line.
var yamlLine = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

func (d *decoder) syntaxError(err error) *Error {
	msg := err.Error()
	e := &Error{File: d.file, Line: 1}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	e.Reason = "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")
	return e
}

// kindName names what a YAML node is, for "want X, not Y".
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "null"
		}
		return "a scalar"
	}
	return "an unsupported YAML node"
}

// wantName names what a Go type expects.
func wantName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Pointer:
		return wantName(t.Elem())
	}
	return "a " + t.Kind().String()
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) error {
	d.pos.at[path] = Position{Line: n.Line, Column: n.Column}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return d.errorAt(n, path, "YAML anchors and aliases are not supported here: write the value out")
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		v.SetZero()
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		if err := d.decode(n, path, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		return d.decodeStruct(n, path, v)
	case reflect.Map:
		return d.decodeMap(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return d.errorAt(n, path, "want a list, not %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.decode(item, fmt.Sprintf("%s[%d]", path, i), s.Index(i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errorAt(n, path, "want %s, not %s", wantName(v.Type()), kindName(n))
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		// yaml.v3's message quotes the value, which may be a secret.
		return d.errorAt(n, path, "want %s, not %s", wantName(v.Type()), kindName(n))
	}
	return nil
}

// structFields maps the YAML names of t's fields to their indexes, in
// declaration order.
func structFields(t reflect.Type) (names []string, index map[string]int) {
	index = map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		names = append(names, name)
		index[name] = i
	}
	return names, index
}

func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		return d.errorAt(n, path, "want a mapping, not %s", kindName(n))
	}
	names, index := structFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.errorAt(k, path, "a field name must be a plain string, not %s", kindName(k))
		}
		if line, dup := seen[k.Value]; dup {
			return d.errorAt(k, path, "field %s appears twice (first at line %d)", strconv.Quote(k.Value), line)
		}
		seen[k.Value] = k.Line
		fi, ok := index[k.Value]
		if !ok {
			return d.errorAt(k, path, "unknown field %s%s; valid fields: %s",
				quoteName(k.Value), suggest.DidYouMean(k.Value, names), strings.Join(names, ", "))
		}
		if err := d.decode(val, join(path, k.Value), v.Field(fi)); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) decodeMap(n *yaml.Node, path string, v reflect.Value) error {
	if n.Kind != yaml.MappingNode {
		return d.errorAt(n, path, "want a mapping, not %s", kindName(n))
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("yamlfile: maps must have string keys")
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.errorAt(k, path, "a key must be a plain string, not %s", kindName(k))
		}
		if line, dup := seen[k.Value]; dup {
			return d.errorAt(k, path, "key %s appears twice (first at line %d)", quoteName(k.Value), line)
		}
		seen[k.Value] = k.Line
		elem := reflect.New(v.Type().Elem()).Elem()
		if err := d.decode(val, join(path, k.Value), elem); err != nil {
			return err
		}
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
	return nil
}

// maxQuoted bounds how much of a name from the file an error repeats.
const maxQuoted = 64

// quoteName quotes a field or key name, shortened to maxQuoted bytes. Names
// are not secret (values are never quoted).
func quoteName(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "…"
	}
	return strconv.Quote(s)
}
