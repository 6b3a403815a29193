package cms

import "fmt"

// This file is the BER reader and writer (ITU-T X.690 section 8): the part of
// the encoding that cryptobyte, which reads DER only, cannot handle. KMS
// writes the outer layers of its envelopes with indefinite lengths (X.690
// 8.1.3.6: length octet 0x80, contents closed by the end-of-contents octets
// 00 00) and the encrypted content as a constructed [0] of primitive OCTET
// STRING chunks (X.690 8.7.3). parseBER checks a whole element once; the
// envelope parser then walks it level by level, as cryptobyte walks DER, and
// hands the definite-length (DER) parts to cryptobyte. Nothing is allocated
// while reading.
//
// The reader accepts only what it needs to and is strict about the rest:
// single-octet tags (tag numbers below 31), minimal long-form lengths of at
// most four octets, indefinite lengths only on constructed elements. It caps
// nesting at MaxDepth and the elements inside one constructed element at
// MaxChunks, so its recursion is bounded.

// Identifier octets used by the envelope (X.690 8.1.2).
const (
	tagEOC         = 0x00
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagNull        = 0x05
	tagOID         = 0x06
	tagSequence    = 0x30 // universal 16, constructed
	tagSet         = 0x31 // universal 17, constructed

	tagConstructed    = 0x20
	tagContext0       = 0x80 // [0] primitive
	tagContext0Cons   = 0xa0 // [0] constructed
	tagContext1Cons   = 0xa1 // [1] constructed
	tagOctetStringCon = tagOctetString | tagConstructed
	tagHighNumberForm = 0x1f
)

// berElement is one element found by the reader. Its slices alias the input.
type berElement struct {
	tag        byte   // identifier octet: class, constructed bit and tag number
	indefinite bool   // constructed with the indefinite length form
	depth      int    // nesting level, the outermost element being 0
	contents   []byte // contents octets (for an indefinite length, without the end-of-contents)
	raw        []byte // the whole encoding: header, contents, end-of-contents
}

func (el *berElement) constructed() bool { return el.tag&tagConstructed != 0 }

// parseBER reads and fully checks the single BER element that fills in.
// Errors are *Error with Kind ErrTruncated, ErrTrailingData, ErrMalformed,
// ErrTooLarge, ErrTooDeep or ErrTooManyChunks. It allocates nothing: the
// element's children are read again, without the checks, by elements.
func parseBER(in []byte) (berElement, error) {
	if len(in) == 0 {
		return berElement{}, newError(ErrTruncated, "empty input")
	}
	el, rest, err := readBER(in, 0, true)
	if err != nil {
		return berElement{}, err
	}
	if len(rest) != 0 {
		return berElement{}, newError(ErrTrailingData, fmt.Sprintf("%d bytes after the end of the envelope", len(rest)))
	}
	return el, nil
}

// elements appends the elements inside the constructed element el to dst.
// parseBER has already checked them, so this reads headers only, descending
// into indefinite-length children just to find their ends.
func (el *berElement) elements(dst []berElement) ([]berElement, error) {
	for rest := el.contents; len(rest) > 0; {
		c, r, err := readBER(rest, el.depth+1, false)
		if err != nil {
			return nil, err
		}
		dst = append(dst, c)
		rest = r
	}
	return dst, nil
}

// hasIndefinite reports whether el or any element inside it uses the
// indefinite length form.
func (el *berElement) hasIndefinite() bool {
	return el.indefinite || el.constructed() && anyIndefinite(el.contents, el.depth+1)
}

// anyIndefinite reports whether any of the elements in contents, at level
// depth, or inside them uses the indefinite length form.
func anyIndefinite(contents []byte, depth int) bool {
	for rest := contents; len(rest) > 0; {
		c, r, err := readBER(rest, depth, false)
		if err != nil {
			return false
		}
		if c.indefinite || c.constructed() && anyIndefinite(c.contents, depth+1) {
			return true
		}
		rest = r
	}
	return false
}

// readBER reads one element at the start of in, at nesting level depth, and
// returns it with the bytes that follow it. With check set it reads every
// element inside it too, enforcing MaxDepth and MaxChunks; without, it skips
// definite-length contents and reads inside indefinite-length ones only as
// far as needed to find their end.
func readBER(in []byte, depth int, check bool) (berElement, []byte, error) {
	if depth > MaxDepth {
		return berElement{}, nil, newError(ErrTooDeep, fmt.Sprintf("elements nested deeper than %d levels", MaxDepth))
	}
	if len(in) < 2 {
		return berElement{}, nil, newError(ErrTruncated, "element header cut short")
	}
	el := berElement{tag: in[0], depth: depth}
	if el.tag&tagHighNumberForm == tagHighNumberForm {
		return berElement{}, nil, newError(ErrMalformed, fmt.Sprintf("identifier octet 0x%02x uses the high-tag-number form, which no envelope field has", el.tag))
	}
	if el.tag == tagEOC {
		return berElement{}, nil, newError(ErrMalformed, "end-of-contents where an element was expected")
	}

	lenByte := in[1]
	hdr := 2
	var length uint64
	switch {
	case lenByte == 0x80:
		if !el.constructed() {
			return berElement{}, nil, newError(ErrMalformed, fmt.Sprintf("primitive element (tag 0x%02x) with an indefinite length", el.tag))
		}
		el.indefinite = true
		return readIndefinite(el, in, check)
	case lenByte < 0x80:
		length = uint64(lenByte)
	case lenByte == 0xff:
		return berElement{}, nil, newError(ErrMalformed, "reserved length octet 0xff")
	default:
		numOctets := int(lenByte & 0x7f)
		if numOctets > 4 {
			// Four length octets already describe 4 GiB; MaxEnvelopeSize is 16 KiB.
			return berElement{}, nil, newError(ErrTooLarge, fmt.Sprintf("length field of %d octets", numOctets))
		}
		if len(in) < hdr+numOctets {
			return berElement{}, nil, newError(ErrTruncated, "length octets cut short")
		}
		for _, b := range in[hdr : hdr+numOctets] {
			length = length<<8 | uint64(b)
		}
		if in[hdr] == 0 || length < 0x80 {
			return berElement{}, nil, newError(ErrMalformed, "length not in its shortest form")
		}
		hdr += numOctets
	}
	if length > uint64(len(in)-hdr) {
		return berElement{}, nil, newError(ErrTruncated, fmt.Sprintf("element announces %d bytes, %d remain", length, len(in)-hdr))
	}
	end := hdr + int(length)
	el.contents, el.raw = in[hdr:end], in[:end]
	if check && el.constructed() {
		n := 0
		for rest := el.contents; len(rest) > 0; n++ {
			if rest[0] == tagEOC {
				return berElement{}, nil, newError(ErrMalformed, "end-of-contents inside a definite-length element")
			}
			if n == MaxChunks {
				return berElement{}, nil, tooManyElements(el.tag)
			}
			_, r, err := readBER(rest, depth+1, true)
			if err != nil {
				return berElement{}, nil, err
			}
			rest = r
		}
	}
	return el, in[end:], nil
}

// readIndefinite reads the elements of an indefinite-length element up to
// its end-of-contents octets (X.690 8.1.3.6).
func readIndefinite(el berElement, in []byte, check bool) (berElement, []byte, error) {
	rest := in[2:]
	for n := 0; ; n++ {
		if len(rest) < 2 {
			return berElement{}, nil, newError(ErrTruncated, "indefinite-length element without end-of-contents")
		}
		if rest[0] == tagEOC {
			if rest[1] != 0 {
				return berElement{}, nil, newError(ErrMalformed, "end-of-contents with a non-zero length")
			}
			end := len(in) - len(rest)
			el.contents, el.raw = in[2:end], in[:end+2]
			return el, rest[2:], nil
		}
		if check && n == MaxChunks {
			return berElement{}, nil, tooManyElements(el.tag)
		}
		_, r, err := readBER(rest, el.depth+1, check)
		if err != nil {
			return berElement{}, nil, err
		}
		rest = r
	}
}

func tooManyElements(tag byte) error {
	return newError(ErrTooManyChunks, fmt.Sprintf("more than %d elements inside one element (tag 0x%02x)", MaxChunks, tag))
}

// berNode is an element tree for the writer: Encrypt builds one, and the
// tests build and modify them to make the envelopes they need.
type berNode struct {
	tag        byte      // identifier octet
	indefinite bool      // write the indefinite length form
	value      []byte    // contents octets of a primitive element
	children   []berNode // elements inside a constructed element
}

func (n *berNode) constructed() bool { return n.tag&tagConstructed != 0 }

// Writer. appendBER is the inverse of the reader: for every input parseBER
// accepts, the tree of its elements encodes back to exactly that input
// (FuzzBER checks this), because the reader accepts only minimal definite
// lengths.

// encodedLen is the size of n's encoding.
func (n *berNode) encodedLen() int {
	c := n.contentsLen()
	if n.indefinite {
		return 2 + c + 2
	}
	return 1 + lengthOctets(c) + c
}

func (n *berNode) contentsLen() int {
	if !n.constructed() {
		return len(n.value)
	}
	c := 0
	for i := range n.children {
		c += n.children[i].encodedLen()
	}
	return c
}

// lengthOctets is the size of the minimal definite length field for l.
func lengthOctets(l int) int {
	switch {
	case l < 0x80:
		return 1
	case l <= 0xff:
		return 2
	case l <= 0xffff:
		return 3
	case l <= 0xffffff:
		return 4
	default:
		return 5
	}
}

// appendBER appends the encoding of n to dst.
func appendBER(dst []byte, n *berNode) []byte {
	dst = append(dst, n.tag)
	if n.indefinite {
		dst = append(dst, 0x80)
	} else {
		dst = appendLength(dst, n.contentsLen())
	}
	if !n.constructed() {
		dst = append(dst, n.value...)
	} else {
		for i := range n.children {
			dst = appendBER(dst, &n.children[i])
		}
	}
	if n.indefinite {
		dst = append(dst, tagEOC, 0)
	}
	return dst
}

func appendLength(dst []byte, l int) []byte {
	k := lengthOctets(l)
	if k == 1 {
		return append(dst, byte(l))
	}
	dst = append(dst, 0x80|byte(k-1))
	for i := k - 2; i >= 0; i-- {
		dst = append(dst, byte(l>>(8*i)))
	}
	return dst
}

// Constructors for the envelope Encrypt writes.

func primitive(tag byte, value []byte) berNode { return berNode{tag: tag, value: value} }

func definite(tag byte, children ...berNode) berNode {
	return berNode{tag: tag, children: children}
}

func indefinite(tag byte, children ...berNode) berNode {
	return berNode{tag: tag, indefinite: true, children: children}
}
