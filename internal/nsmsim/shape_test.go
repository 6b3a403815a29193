package nsmsim_test

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// item is a CBOR data item as the shape comparison sees it: major type,
// head form and, for containers, the children in encoded order. It is a
// deliberately small reader for the subset NSM uses (no tags, no floats).
type item struct {
	major    byte
	info     byte // additional information of the head (24-27: 1-8 length bytes, 31: indefinite)
	n        uint64
	content  []byte // byte and text strings
	children []item // array elements; map keys and values alternating
}

func (it item) indefinite() bool { return it.info == 31 }

var errShort = errors.New("cbor: truncated")

func readItem(b []byte, depth int) (item, []byte, error) {
	if depth > 16 {
		return item{}, nil, errors.New("cbor: too deep")
	}
	if len(b) == 0 {
		return item{}, nil, errShort
	}
	it := item{major: b[0] >> 5, info: b[0] & 0x1f}
	b = b[1:]
	switch {
	case it.info < 24:
		it.n = uint64(it.info)
	case it.info <= 27:
		size := 1 << (it.info - 24)
		if len(b) < size {
			return item{}, nil, errShort
		}
		var buf [8]byte
		copy(buf[8-size:], b[:size])
		it.n = binary.BigEndian.Uint64(buf[:])
		b = b[size:]
	case it.info == 31 && (it.major == 4 || it.major == 5):
	default:
		return item{}, nil, fmt.Errorf("cbor: unsupported head 0x%02x", it.major<<5|it.info)
	}
	switch it.major {
	case 0, 1, 7:
		return it, b, nil
	case 2, 3:
		if uint64(len(b)) < it.n {
			return item{}, nil, errShort
		}
		it.content, b = b[:it.n], b[it.n:]
		return it, b, nil
	case 4, 5:
		count := it.n
		if it.major == 5 {
			count *= 2
		}
		for i := uint64(0); it.indefinite() || i < count; i++ {
			if it.indefinite() {
				if len(b) == 0 {
					return item{}, nil, errShort
				}
				if b[0] == 0xff {
					return it, b[1:], nil
				}
			}
			var child item
			var err error
			child, b, err = readItem(b, depth+1)
			if err != nil {
				return item{}, nil, err
			}
			it.children = append(it.children, child)
		}
		if it.indefinite() {
			return item{}, nil, errShort
		}
		if it.major == 5 && len(it.children)%2 != 0 {
			return item{}, nil, errors.New("cbor: odd map")
		}
		return it, b, nil
	}
	return item{}, nil, fmt.Errorf("cbor: unsupported major type %d", it.major)
}

func parseItem(b []byte) (item, error) {
	it, rest, err := readItem(b, 0)
	if err != nil {
		return item{}, err
	}
	if len(rest) != 0 {
		return item{}, fmt.Errorf("cbor: %d trailing bytes", len(rest))
	}
	return it, nil
}

// mapEntry is one key/value of a map item with a text key.
type mapEntry struct {
	key   string
	value item
}

func entries(m item) []mapEntry {
	var out []mapEntry
	for i := 0; i+1 < len(m.children); i += 2 {
		out = append(out, mapEntry{key: string(m.children[i].content), value: m.children[i+1]})
	}
	return out
}
