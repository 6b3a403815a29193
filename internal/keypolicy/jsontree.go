package keypolicy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// maxNesting bounds how deeply objects and arrays may nest. The deepest
// element of a valid key policy is a condition value list: document object →
// Statement array → statement object → Condition object → operator object →
// value array, six levels. Anything deeper cannot be a key policy, so the
// reader stops there instead of following an attacker's nesting.
const maxNesting = 6

// jsonKind is the type of one JSON value.
type jsonKind uint8

const (
	jsonString jsonKind = iota
	jsonNumber
	jsonBool
	jsonNull
	jsonObject
	jsonArray
)

func (k jsonKind) String() string {
	switch k {
	case jsonString:
		return "a string"
	case jsonNumber:
		return "a number"
	case jsonBool:
		return "a boolean"
	case jsonNull:
		return "null"
	case jsonObject:
		return "an object"
	default:
		return "an array"
	}
}

// jsonValue is a decoded JSON value that keeps object members in document
// order, so explanations list conditions in the order the policy author wrote
// them, and that never silently merges duplicate member names.
type jsonValue struct {
	kind    jsonKind
	text    string // string contents, or the literal text of a number
	boolean bool
	members []jsonMember // objects, in document order
	elems   []jsonValue  // arrays
}

type jsonMember struct {
	name  string
	value jsonValue
}

// member returns the value of the named member of an object.
func (v *jsonValue) member(name string) (jsonValue, bool) {
	for _, m := range v.members {
		if m.name == name {
			return m.value, true
		}
	}
	return jsonValue{}, false
}

// errJSONTooDeep and errDuplicateMember are reported with their own reasons;
// every other decoding error is a JSON syntax error.
var (
	errJSONTooDeep = errors.New("the policy nests objects or arrays deeper than any key policy element")
)

type duplicateMemberError struct{ name string }

func (e *duplicateMemberError) Error() string {
	return "the element " + quote(e.name) + " appears twice in the same object"
}

// decodeJSON decodes exactly one JSON value from doc.
func decodeJSON(doc []byte) (jsonValue, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	v, err := readValue(dec, 0)
	if err != nil {
		return jsonValue{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return jsonValue{}, errors.New("the policy has data after the end of the JSON document")
		}
		return jsonValue{}, err
	}
	return v, nil
}

func readValue(dec *json.Decoder, depth int) (jsonValue, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return jsonValue{}, io.ErrUnexpectedEOF
		}
		return jsonValue{}, err
	}
	switch t := tok.(type) {
	case string:
		return jsonValue{kind: jsonString, text: t}, nil
	case json.Number:
		return jsonValue{kind: jsonNumber, text: t.String()}, nil
	case bool:
		return jsonValue{kind: jsonBool, boolean: t}, nil
	case nil:
		return jsonValue{kind: jsonNull}, nil
	case json.Delim:
		if depth >= maxNesting {
			return jsonValue{}, errJSONTooDeep
		}
		switch t {
		case '{':
			return readObject(dec, depth+1)
		case '[':
			return readArray(dec, depth+1)
		}
	}
	// json.Decoder.Token never returns a closing delimiter where a value
	// starts; it reports a syntax error instead.
	return jsonValue{}, errors.New("unexpected JSON token")
}

func readObject(dec *json.Decoder, depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonObject}
	seen := make(map[string]struct{})
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonValue{}, err
		}
		name, ok := tok.(string)
		if !ok {
			return jsonValue{}, errors.New("object member name is not a string")
		}
		if _, dup := seen[name]; dup {
			return jsonValue{}, &duplicateMemberError{name: name}
		}
		seen[name] = struct{}{}
		mv, err := readValue(dec, depth)
		if err != nil {
			return jsonValue{}, err
		}
		v.members = append(v.members, jsonMember{name: name, value: mv})
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return jsonValue{}, err
	}
	return v, nil
}

func readArray(dec *json.Decoder, depth int) (jsonValue, error) {
	v := jsonValue{kind: jsonArray}
	for dec.More() {
		ev, err := readValue(dec, depth)
		if err != nil {
			return jsonValue{}, err
		}
		v.elems = append(v.elems, ev)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return jsonValue{}, err
	}
	return v, nil
}
