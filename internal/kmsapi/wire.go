package kmsapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	// ContentType is the media type of every KMS request and answer.
	ContentType = "application/x-amz-json-1.1"
	// TargetHeader names the operation: "TrentService.<Operation>".
	TargetHeader = "X-Amz-Target"
	// TargetPrefix is the KMS service name in TargetHeader.
	TargetPrefix = "TrentService."

	// MaxRequestBody bounds a KMS request body (64 KiB). The
	// largest legitimate KMS requests are far below it: PutKeyPolicy's
	// policy is at most 32 KiB, a CiphertextBlob at most 6144 bytes, and an
	// attestation document about 5 KiB before base64.
	MaxRequestBody = 64 << 10
)

// Operation returns the KMS operation named by the request's X-Amz-Target
// header, or UnknownOperationException when the header is missing or does
// not name a TrentService operation.
func Operation(r *http.Request) (string, error) {
	t := r.Header.Get(TargetHeader)
	op, ok := strings.CutPrefix(t, TargetPrefix)
	if !ok || op == "" || strings.ContainsAny(op, " ./") {
		return "", Errorf(UnknownOperation, "Unknown operation %q", truncate(t, 64))
	}
	return op, nil
}

// CheckRequest validates what every KMS request shares: POST and KMS's
// content type. AWS SDKs and the AWS CLI always send both.
func CheckRequest(r *http.Request) error {
	if r.Method != http.MethodPost {
		return &Error{Type: UnknownOperation, Message: "KMS accepts only POST", Status: http.StatusMethodNotAllowed}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != ContentType && mt != "application/json") {
			return Errorf(Serialization, "Unsupported Content-Type %q", truncate(ct, 64))
		}
	}
	return nil
}

// ReadBody reads at most max bytes of the request body; a longer body is a
// ValidationException, a broken one a SerializationException.
func ReadBody(r *http.Request, max int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, Errorf(Validation, "Request body exceeds the %d-byte limit", max)
	}
	if err != nil {
		return nil, Errorf(Serialization, "failed to read request body")
	}
	if int64(len(body)) > max {
		return nil, Errorf(Validation, "Request body exceeds the %d-byte limit", max)
	}
	return body, nil
}

// DecodeInput decodes a KMS JSON request body into v, normally a pointer to
// an aws-sdk-go-v2 kms.<Operation>Input whose field names are the KMS member
// names. An empty body is the empty object. Syntax errors and type mismatches
// (including invalid base64 in a blob) are SerializationException, as AWS
// JSON-protocol services answer them.
func DecodeInput(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return Errorf(Serialization, "%s", describeJSONError(err))
	}
	if dec.More() {
		return Errorf(Serialization, "Unexpected data after the JSON request body")
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(Serialization, "Unexpected data after the JSON request body")
	}
	return nil
}

// describeJSONError names what was wrong without echoing the request's
// values, which may be plaintext.
func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("Malformed JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("Invalid type for member %s: got %s, want %s", typ.Field, typ.Value, typ.Type)
		}
		return fmt.Sprintf("Invalid JSON value: got %s, want %s", typ.Value, typ.Type)
	case errors.As(err, &b64):
		return "Invalid base64 in a blob member"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "Truncated JSON request body"
	}
	return "Malformed JSON request body"
}

// WriteJSON writes v as a KMS JSON answer with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"__type":"KMSInternalException","message":"failed to encode the answer"}`)
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// WriteOutput writes an aws-sdk-go-v2 output value in KMS's JSON form with
// status 200.
func WriteOutput(w http.ResponseWriter, out any) {
	b, err := EncodeOutput(out)
	if err != nil {
		WriteError(w, Errorf(KMSInternal, "failed to encode the answer"))
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// EncodeOutput encodes an aws-sdk-go-v2 KMS output (or any struct of the same
// style) the way KMS writes it: exported fields by their Go name, nil
// pointers, nil slices, nil maps and empty enum strings omitted, []byte as
// standard base64, time.Time as epoch seconds (the awsJson1.1 timestamp
// format), booleans and plain integers always. The SDK's ResultMetadata and
// unexported fields are skipped.
func EncodeOutput(v any) ([]byte, error) {
	return AppendOutput(nil, v)
}

// AppendOutput is EncodeOutput appending to dst. Callers answering with a
// secret pass a dst with room for the whole answer, so the buffer never
// grows (leaving partial copies behind), and clear it after writing.
func AppendOutput(dst []byte, v any) ([]byte, error) {
	buf := bytes.NewBuffer(dst[:0])
	if err := encodeValue(buf, reflect.ValueOf(v)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var (
	timeType  = reflect.TypeFor[time.Time]()
	bytesType = reflect.TypeFor[[]byte]()
)

func encodeValue(buf *bytes.Buffer, v reflect.Value) error {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			buf.WriteString("null")
			return nil
		}
		v = v.Elem()
	}
	if v.Type() == timeType {
		t := v.Interface().(time.Time)
		buf.WriteString(strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64))
		return nil
	}
	if v.Type() == bytesType {
		// Base64 needs no JSON escaping; encoding straight into buf leaves
		// no other copy of a secret blob for the caller to miss.
		src := v.Bytes()
		buf.WriteByte('"')
		buf.Grow(base64.StdEncoding.EncodedLen(len(src)) + 1)
		b := buf.AvailableBuffer()[:base64.StdEncoding.EncodedLen(len(src))]
		base64.StdEncoding.Encode(b, src)
		buf.Write(b)
		buf.WriteByte('"')
		return nil
	}
	switch v.Kind() {
	case reflect.Struct:
		return encodeStruct(buf, v)
	case reflect.Slice, reflect.Array:
		buf.WriteByte('[')
		for i := range v.Len() {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encodeValue(buf, v.Index(i)); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
		return nil
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("kmsapi: cannot encode map keyed by %s", v.Type().Key())
		}
		// Sorted keys keep the output deterministic.
		m := make(map[string]reflect.Value, v.Len())
		keys := make([]string, 0, v.Len())
		for it := v.MapRange(); it.Next(); {
			k := it.Key().String()
			m[k] = it.Value()
			keys = append(keys, k)
		}
		slices.Sort(keys)
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			kb, _ := json.Marshal(k)
			buf.Write(kb)
			buf.WriteByte(':')
			if err := encodeValue(buf, m[k]); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
		return nil
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32,
		reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		b, err := json.Marshal(v.Interface())
		if err != nil {
			return fmt.Errorf("kmsapi: failed to encode %s: %w", v.Type(), err)
		}
		buf.Write(b)
		return nil
	}
	return fmt.Errorf("kmsapi: cannot encode %s", v.Type())
}

func encodeStruct(buf *bytes.Buffer, v reflect.Value) error {
	t := v.Type()
	buf.WriteByte('{')
	first := true
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Name == "ResultMetadata" {
			continue
		}
		fv := v.Field(i)
		if omit(fv) {
			continue
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(f.Name)
		buf.Write(kb)
		buf.WriteByte(':')
		if err := encodeValue(buf, fv); err != nil {
			return err
		}
	}
	buf.WriteByte('}')
	return nil
}

// omit reports whether a field is absent in KMS's JSON: nil pointers, nil
// slices and maps, and empty enum strings (the SDK models optional enums as
// plain strings).
func omit(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Slice, reflect.Map:
		return v.IsNil()
	case reflect.String:
		return v.Len() == 0
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
