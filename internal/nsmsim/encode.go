package nsmsim

import (
	"encoding/binary"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

// The payload is written by hand rather than by a generic encoder so that
// its bytes follow NSM's exactly: keys in NSM's order (module_id, digest,
// timestamp, pcrs, certificate, cabundle, public_key, user_data, nonce, as
// in every real document in internal/attestation/testdata/real), an indefinite-length outer
// map (0xbf ... 0xff) as documents since 2025 use (base/nitro-validator
// pull requests #23 and #24: "AWS Nitro attestation documents use the
// indefinite-length form for the top-level attestation map" while "AWS
// always uses definite-length inner structures"), a definite pcrs map with
// keys 0-15 in order, a definite cabundle array, shortest-form heads, and
// CBOR null for absent optional fields.

// CBOR major types (RFC 8949 §3.1).
const (
	majorUint  = 0
	majorBytes = 2
	majorText  = 3
	majorArray = 4
	majorMap   = 5
)

const (
	cborIndefMap = 0xbf
	cborBreak    = 0xff
	cborNull     = 0xf6
)

// appendHead appends a CBOR head in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|27), n)
	}
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majorText, uint64(len(s))), s...)
}

func appendBytes(b, v []byte) []byte {
	return append(appendHead(b, majorBytes, uint64(len(v))), v...)
}

// appendOptional writes nil as null and anything else, empty included, as
// a byte string: NSM maps the request's None to null and Some(empty) to an
// empty byte string (nitrite-2021-debug.cbor has public_key h”).
func appendOptional(b, v []byte) []byte {
	if v == nil {
		return append(b, cborNull)
	}
	return appendBytes(b, v)
}

// encodeStatic writes the fields that never change for a simulator:
// module_id and digest (the head of the map) and the PCR entry, whose key
// is pcrsField ("pcrs" or a NitroTPM's "nitrotpm_pcrs", which real
// NitroTPM documents write in the same place).
func encodeStatic(moduleID, pcrsField string, pcrs [][]byte) (head, pcrsEntry []byte) {
	head = append(head, cborIndefMap)
	head = appendText(head, "module_id")
	head = appendText(head, moduleID)
	head = appendText(head, "digest")
	head = appendText(head, "SHA384")

	pcrsEntry = appendText(pcrsEntry, pcrsField)
	pcrsEntry = appendHead(pcrsEntry, majorMap, uint64(len(pcrs)))
	for i, v := range pcrs {
		pcrsEntry = appendHead(pcrsEntry, majorUint, uint64(i))
		pcrsEntry = appendBytes(pcrsEntry, v)
	}
	return head, pcrsEntry
}

// encodeChain writes the certificate and cabundle entries for a leaf.
func encodeChain(leaf []byte, bundle [][]byte) []byte {
	var b []byte
	b = appendText(b, "certificate")
	b = appendBytes(b, leaf)
	b = appendText(b, "cabundle")
	b = appendHead(b, majorArray, uint64(len(bundle)))
	for _, c := range bundle {
		b = appendBytes(b, c)
	}
	return b
}

// encodePayload assembles the attestation map.
func encodePayload(head, pcrsEntry, chain []byte, ms uint64, req attestation.Request) []byte {
	n := len(head) + len(pcrsEntry) + len(chain) + len(req.PublicKey) + len(req.UserData) + len(req.Nonce) + 64
	b := make([]byte, 0, n)
	b = append(b, head...)
	b = appendText(b, "timestamp")
	b = appendHead(b, majorUint, ms)
	b = append(b, pcrsEntry...)
	b = append(b, chain...)
	b = appendText(b, "public_key")
	b = appendOptional(b, req.PublicKey)
	b = appendText(b, "user_data")
	b = appendOptional(b, req.UserData)
	b = appendText(b, "nonce")
	b = appendOptional(b, req.Nonce)
	return append(b, cborBreak)
}
