package attestation

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-cmp/cmp"
)

func TestRequestedRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name     string
		listener string
		data     []byte
	}{
		{"no data", "parent", nil},
		{"empty data", "local", []byte{}},
		{"some data", "parent", []byte("a verifier's challenge")},
		{"data looking like the structure", "parent", mustEncodeRequested(t, "local", []byte("nested"))},
		{"at the limit with the longest listener name", strings.Repeat("l", MaxRequestedListenerLen), bytes.Repeat([]byte{0xff}, MaxRequestedDataSize)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := EncodeRequested(tt.listener, tt.data)
			if err != nil {
				t.Fatalf("EncodeRequested: %v", err)
			}
			if len(b) > MaxUserDataSize {
				t.Fatalf("encoded %d bytes, over NSM's %d", len(b), MaxUserDataSize)
			}
			if err := (Request{UserData: b}).Validate(); err != nil {
				t.Fatalf("a requested user_data fails Request.Validate: %v", err)
			}
			got, err := ParseRequested(b)
			if err != nil {
				t.Fatalf("ParseRequested: %v", err)
			}
			want := &Requested{Purpose: RequestedPurpose, Listener: tt.listener, Data: tt.data}
			if want.Data == nil {
				want.Data = []byte{}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRequestedLimit: the named limit is exact: the longest listener name
// with MaxRequestedDataSize bytes fills NSM's user_data to the byte, and
// one byte more is refused.
func TestRequestedLimit(t *testing.T) {
	long := strings.Repeat("l", MaxRequestedListenerLen)
	b, err := EncodeRequested(long, make([]byte, MaxRequestedDataSize))
	if err != nil || len(b) != MaxUserDataSize {
		t.Fatalf("at the limit: %d bytes, %v; want exactly %d", len(b), err, MaxUserDataSize)
	}
	_, err = EncodeRequested("parent", make([]byte, MaxRequestedDataSize+1))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "945") {
		t.Fatalf("one past the limit: %v, want ErrTooLarge naming 945", err)
	}
	for _, l := range []string{"", long + "x"} {
		if _, err := EncodeRequested(l, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("listener %q: %v, want ErrMalformed", l, err)
		}
	}
}

func mustEncodeRequested(t testing.TB, listener string, data []byte) []byte {
	t.Helper()
	b, err := EncodeRequested(listener, data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRequestedRefuses(t *testing.T) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := mustEncodeRequested(t, "parent", []byte("x"))
	// The same map with its keys in another order: valid CBOR, not
	// canonical.
	reordered := append([]byte{0xa3}, enc("purpose")...)
	reordered = append(reordered, enc(RequestedPurpose)...)
	reordered = append(reordered, enc("data")...)
	reordered = append(reordered, enc([]byte("x"))...)
	reordered = append(reordered, enc("listener")...)
	reordered = append(reordered, enc("parent")...)
	for _, tt := range []struct {
		name      string
		userData  []byte
		malformed string // "" for ErrNotRequested
	}{
		{"empty", nil, ""},
		{"raw text", []byte("the enclave says hello"), ""},
		{"a CBOR string", enc("kmsproxyd/requested-attestation/v1"), ""},
		{"a map without purpose", enc(map[string]any{"listener": "parent", "data": []byte("x")}), ""},
		{"a map with another purpose", enc(map[string]any{"purpose": "something/else", "listener": "parent", "data": []byte("x")}), ""},
		{"integer keys", enc(map[int]any{1: RequestedPurpose}), ""},
		{"truncated", good[:len(good)-1], ""},
		{"another version", enc(map[string]any{"purpose": "kmsproxyd/requested-attestation/v2", "listener": "parent", "data": []byte("x")}), "this version reads only"},
		{"an extra key", enc(map[string]any{"purpose": RequestedPurpose, "listener": "parent", "data": []byte("x"), "from": "enclave"}), "has 4 keys"},
		{"no data", enc(map[string]any{"purpose": RequestedPurpose, "listener": "parent", "from": "x"}), "does not decode"},
		{"data as text", enc(map[string]any{"purpose": RequestedPurpose, "listener": "parent", "data": "x"}), "does not decode"},
		{"empty listener", enc(map[string]any{"purpose": RequestedPurpose, "listener": "", "data": []byte("x")}), "listener name of 0 bytes"},
		{"not canonical", reordered, "canonical"},
		{"trailing bytes", append(bytes.Clone(good), 0x00), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequested(tt.userData)
			if got != nil {
				t.Fatalf("ParseRequested accepted it: %+v", got)
			}
			if tt.malformed == "" {
				if !errors.Is(err, ErrNotRequested) {
					t.Fatalf("got %v, want ErrNotRequested", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.malformed) {
				t.Fatalf("got %v, want ErrMalformed mentioning %q", err, tt.malformed)
			}
		})
	}
}

func FuzzParseRequested(f *testing.F) {
	f.Add(mustEncodeRequested(f, "parent", []byte("seed")))
	f.Add(mustEncodeRequested(f, "local", nil))
	f.Add([]byte("raw"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequested(b)
		if err != nil {
			var ae *Error
			if !errors.Is(err, ErrNotRequested) && !errors.As(err, &ae) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			return
		}
		again, err := EncodeRequested(r.Listener, r.Data)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("an accepted structure does not re-encode to itself: %v", err)
		}
	})
}
