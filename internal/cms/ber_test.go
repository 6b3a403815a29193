package cms

import (
	"bytes"
	"encoding/asn1"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseBER(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantKind error // nil: parses and re-encodes to the same bytes
	}{
		{"primitive", "04 03 010203", nil},
		{"empty primitive", "04 00", nil},
		{"definite constructed", "30 07 0201 02 0500 0400", nil},
		{"indefinite constructed", "30 80 0201 02 0000", nil},
		{"nested indefinite", "30 80 a0 80 04 01 ff 0000 0000", nil},
		{"long-form length", "04 81 80" + strings.Repeat("00", 128), nil},
		{"two-octet length", "04 82 0100" + strings.Repeat("00", 256), nil},

		{"empty", "", ErrTruncated},
		{"tag only", "30", ErrTruncated},
		{"short contents", "04 05 0102", ErrTruncated},
		{"length octets cut", "04 82 01", ErrTruncated},
		{"indefinite without end-of-contents", "30 80 0500", ErrTruncated},
		{"indefinite cut inside end-of-contents", "30 80 00", ErrTruncated},
		{"child longer than parent", "30 03 04 05 0000000000", ErrTruncated},
		{"trailing byte", "0500 00", ErrTrailingData},

		{"indefinite primitive", "04 80 0000", ErrMalformed},
		{"reserved length 0xff", "04 ff", ErrMalformed},
		{"non-minimal long form", "04 81 05 0102030405", ErrMalformed},
		{"leading zero length octet", "04 82 0080" + strings.Repeat("00", 128), ErrMalformed},
		{"high tag number form", "1f 22 00", ErrMalformed},
		{"end-of-contents at top", "00 00", ErrMalformed},
		{"end-of-contents in definite element", "30 04 0000 0500", ErrMalformed},
		{"end-of-contents with a length", "30 80 00 01 00", ErrMalformed},
		{"five length octets", "04 85 0000000001 00", ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := mustHex(t, tt.in)
			el, err := parseBER(in)
			checkTyped(t, err)
			if tt.wantKind != nil {
				if !isKind(err, tt.wantKind) {
					t.Fatalf("parseBER error = %v, want %v", err, tt.wantKind)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseBER: %v", err)
			}
			n := toTree(t, el)
			if got := appendBER(nil, &n); !bytes.Equal(got, in) {
				t.Errorf("re-encoded %x, want %x", got, in)
			}
			if !bytes.Equal(el.raw, in) || n.encodedLen() != len(in) {
				t.Errorf("raw %x, encodedLen %d; want %x, %d", el.raw, n.encodedLen(), in, len(in))
			}
		})
	}
}

// nestedIndefinite returns SEQUENCEs with indefinite lengths whose innermost
// one sits at level depth.
func nestedIndefinite(depth int) []byte {
	return append(bytes.Repeat([]byte{0x30, 0x80}, depth+1), bytes.Repeat([]byte{0, 0}, depth+1)...)
}

func TestBERDepthLimit(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   func(depth int) []byte
	}{
		{"indefinite", nestedIndefinite},
		{"definite", nestedDefinite},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// nestedDefinite puts a NULL one level below its innermost SEQUENCE.
			depth := MaxDepth
			if tt.name == "definite" {
				depth = MaxDepth - 1
			}
			if _, err := parseBER(tt.in(depth)); err != nil {
				t.Errorf("level %d: %v", MaxDepth, err)
			}
			if _, err := parseBER(tt.in(depth + 1)); !isKind(err, ErrTooDeep) {
				t.Errorf("level %d: error %v, want ErrTooDeep", MaxDepth+1, err)
			}
		})
	}
}

func TestBERChildLimit(t *testing.T) {
	children := func(n int) []byte {
		c := make([]berNode, n)
		for i := range c {
			c[i] = primitive(tagOctetString, nil)
		}
		root := indefinite(tagContext0Cons, c...)
		return appendBER(nil, &root)
	}
	for _, form := range []string{"indefinite", "definite"} {
		in := children(MaxChunks)
		if form == "definite" {
			in = mutate(t, in, func(r *berNode) { r.indefinite = false })
		}
		el, err := parseBER(in)
		if err != nil {
			t.Fatalf("%s, %d children: %v", form, MaxChunks, err)
		}
		if kids, err := el.elements(nil); err != nil || len(kids) != MaxChunks {
			t.Errorf("%s, %d children: read %d, %v", form, MaxChunks, len(kids), err)
		}
		past := mutate(t, in, func(r *berNode) { r.children = append(r.children, primitive(tagOctetString, nil)) })
		if _, err := parseBER(past); !isKind(err, ErrTooManyChunks) {
			t.Errorf("%s, %d children: error %v, want ErrTooManyChunks", form, MaxChunks+1, err)
		}
	}
}

func TestLengthOctets(t *testing.T) {
	for _, l := range []int{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffff, 0x1000000} {
		b := appendLength(nil, l)
		if len(b) != lengthOctets(l) {
			t.Errorf("length %d: %d octets written, lengthOctets says %d", l, len(b), lengthOctets(l))
		}
		// encoding/asn1 writes minimal DER lengths; compare with its header.
		der, err := asn1.Marshal(asn1.RawValue{Tag: 4, Bytes: make([]byte, min(l, 0x10000))})
		if err != nil {
			t.Fatal(err)
		}
		if l <= 0x10000 && !bytes.Equal(der[1:1+len(b)], b) {
			t.Errorf("length %d: wrote %x, encoding/asn1 %x", l, b, der[1:1+len(b)])
		}
	}
}

func TestOIDNode(t *testing.T) {
	for _, o := range knownOIDs {
		der, err := asn1.Marshal(o.arcs)
		if err != nil {
			t.Fatal(err)
		}
		n := oidNode(o)
		if got := appendBER(nil, &n); !bytes.Equal(got, der) {
			t.Errorf("%s: oidNode encodes %x, encoding/asn1 %x", o.name, got, der)
		}
		if got := describeOID(o.der); got != o.name+" ("+o.arcs.String()+")" {
			t.Errorf("describeOID(%s) = %q", o.name, got)
		}
	}
	for _, tt := range []struct {
		content []byte
		want    string
	}{
		{[]byte{0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f}, "1.3.6.1.4.1.99999"},
		{[]byte{0x2b, 0x80, 0x01}, "an invalid OBJECT IDENTIFIER"}, // non-minimal arc
		{nil, "an invalid OBJECT IDENTIFIER"},
		{bytes.Repeat([]byte{0x2b}, 200), "an invalid OBJECT IDENTIFIER"},
	} {
		if got := describeOID(tt.content); got != tt.want {
			t.Errorf("describeOID(%x) = %q, want %q", tt.content, got, tt.want)
		}
	}
}

// berSeeds returns the inputs FuzzBER, FuzzParse and FuzzDecrypt start from:
// the committed vectors, fresh Encrypt output, hand-made BER shapes, and the
// real envelopes under testdata/real.
func berSeeds(f *testing.F) [][]byte {
	f.Helper()
	var seeds [][]byte
	vectors, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.ber"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range vectors {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	key := testKey(f, 2048)
	for _, n := range []int{0, 17, 1000} {
		seeds = append(seeds, mustEncrypt(f, &key.PublicKey, make([]byte, n)))
	}
	seeds = append(seeds,
		mustHex(f, "30 80 a0 80 04 01 ff 0000 0000"),
		mustHex(f, "04 81 80"+strings.Repeat("00", 128)),
		nestedIndefinite(MaxDepth),
	)
	for _, rel := range []string{edgebitEnvelope, opensslDER, opensslIndef, rustcrypto4,
		"aws-nitro-enclaves-sdk-c/csdk-1.ber", "aws-nitro-enclaves-sdk-c/csdk-2.ber", "rustcrypto/rustcrypto-1.ber"} {
		seeds = append(seeds, realFile(f, rel))
	}
	if len(vectors) == 0 || len(seeds) == 0 {
		f.Fatal("empty seed corpus: testdata/vectors holds no .ber files")
	}
	return seeds
}

// FuzzBER checks that the BER reader never panics, returns only typed
// errors, and that whatever it accepts re-encodes to exactly its input (it
// accepts only minimal lengths, so the encoding is unique).
func FuzzBER(f *testing.F) {
	for _, s := range berSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		el, err := parseBER(in)
		checkTyped(t, err)
		if err != nil {
			return
		}
		n := toTree(t, el)
		if got := appendBER(nil, &n); !bytes.Equal(got, in) {
			t.Fatalf("re-encoded %x, want %x", got, in)
		}
	})
}
