package cms

import (
	"bytes"
	"encoding/asn1"

	"golang.org/x/crypto/cryptobyte"
)

// objectID is an OBJECT IDENTIFIER the envelope uses, with its name and its
// DER contents precomputed, so that parsing compares bytes instead of
// decoding every identifier (DER encodes an identifier one way only).
type objectID struct {
	name   string
	arcs   asn1.ObjectIdentifier
	dotted string
	der    []byte // contents octets (X.690 8.19)
}

func newOID(name string, arcs ...int) *objectID {
	o := &objectID{name: name, arcs: arcs, dotted: asn1.ObjectIdentifier(arcs).String()}
	o.der = appendBase128(nil, arcs[0]*40+arcs[1])
	for _, arc := range arcs[2:] {
		o.der = appendBase128(o.der, arc)
	}
	return o
}

// is reports whether content, the contents octets of a DER OBJECT
// IDENTIFIER, encode o.
func (o *objectID) is(content []byte) bool { return bytes.Equal(content, o.der) }

func (o *objectID) String() string { return o.name + " (" + o.dotted + ")" }

// Object identifiers of the envelope KMS writes, with their sources.
var (
	oidData          = newOID("data", 1, 2, 840, 113549, 1, 7, 1)          // id-data, RFC 5652 section 4
	oidEnvelopedData = newOID("envelopedData", 1, 2, 840, 113549, 1, 7, 3) // id-envelopedData, RFC 5652 section 6.1

	oidRSAEncryption = newOID("rsaEncryption (RSAES-PKCS1-v1_5)", 1, 2, 840, 113549, 1, 1, 1) // RFC 8017 appendix C
	oidRSAESOAEP     = newOID(nameRSAESOAEP, 1, 2, 840, 113549, 1, 1, 7)                      // id-RSAES-OAEP, RFC 4055 section 4.1
	oidMGF1          = newOID(nameMGF1, 1, 2, 840, 113549, 1, 1, 8)                           // id-mgf1, RFC 4055 section 2.2
	oidPSpecified    = newOID("pSpecified", 1, 2, 840, 113549, 1, 1, 9)                       // id-pSpecified, RFC 4055 section 4.1

	oidSHA1   = newOID("SHA-1", 1, 3, 14, 3, 2, 26)                // id-sha1, RFC 4055 section 2.1
	oidSHA224 = newOID("SHA-224", 2, 16, 840, 1, 101, 3, 4, 2, 4)  // id-sha224, RFC 4055 section 2.1
	oidSHA256 = newOID(nameSHA256, 2, 16, 840, 1, 101, 3, 4, 2, 1) // id-sha256, RFC 4055 section 2.1
	oidSHA384 = newOID("SHA-384", 2, 16, 840, 1, 101, 3, 4, 2, 2)  // id-sha384, RFC 4055 section 2.1
	oidSHA512 = newOID("SHA-512", 2, 16, 840, 1, 101, 3, 4, 2, 3)  // id-sha512, RFC 4055 section 2.1

	oidAES128CBC  = newOID("AES-128-CBC", 2, 16, 840, 1, 101, 3, 4, 1, 2)  // id-aes128-CBC, RFC 3565 section 4.1
	oidAES192CBC  = newOID("AES-192-CBC", 2, 16, 840, 1, 101, 3, 4, 1, 22) // id-aes192-CBC, RFC 3565 section 4.1
	oidAES256CBC  = newOID(nameAES256CBC, 2, 16, 840, 1, 101, 3, 4, 1, 42) // id-aes256-CBC, RFC 3565 section 4.1
	oidAES128GCM  = newOID("AES-128-GCM", 2, 16, 840, 1, 101, 3, 4, 1, 6)  // id-aes128-GCM, RFC 5084 section 3.2
	oidAES256GCM  = newOID("AES-256-GCM", 2, 16, 840, 1, 101, 3, 4, 1, 46) // id-aes256-GCM, RFC 5084 section 3.2
	oidSignedData = newOID("signedData", 1, 2, 840, 113549, 1, 7, 2)       // id-signedData, RFC 5652 section 5.1
)

// Names used in Envelope fields, error reasons and Summary.
const (
	nameRSAESOAEP = "RSAES-OAEP"
	nameMGF1      = "MGF1"
	nameSHA256    = "SHA-256"
	nameAES256CBC = "AES-256-CBC"
)

var knownOIDs = []*objectID{
	oidData, oidEnvelopedData, oidSignedData,
	oidRSAEncryption, oidRSAESOAEP, oidMGF1, oidPSpecified,
	oidSHA1, oidSHA224, oidSHA256, oidSHA384, oidSHA512,
	oidAES128CBC, oidAES192CBC, oidAES256CBC, oidAES128GCM, oidAES256GCM,
}

// describeOID names the identifier whose DER contents are content, for error
// reasons: "SHA-1 (1.3.14.3.2.26)", a dotted form, or a note that it is not
// a valid identifier.
func describeOID(content []byte) string {
	for _, o := range knownOIDs {
		if o.is(content) {
			return o.String()
		}
	}
	var b cryptobyte.Builder
	b.AddUint8(tagOID)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(content) })
	der, err := b.Bytes()
	s := cryptobyte.String(der)
	var oid asn1.ObjectIdentifier
	if err != nil || len(content) > 0x7f || !s.ReadASN1ObjectIdentifier(&oid) {
		return "an invalid OBJECT IDENTIFIER"
	}
	return oid.String()
}

// dottedName returns the name of a known identifier given in dotted form.
func dottedName(dotted string) string {
	for _, o := range knownOIDs {
		if o.dotted == dotted {
			return o.name
		}
	}
	return dotted
}

// oidNode encodes o as a primitive OBJECT IDENTIFIER element.
func oidNode(o *objectID) berNode { return primitive(tagOID, o.der) }

// appendBase128 appends v in base 128, high bit set on all but the last
// octet (X.690 8.19.2).
func appendBase128(dst []byte, v int) []byte {
	n := 1
	for x := v >> 7; x > 0; x >>= 7 {
		n++
	}
	for i := n - 1; i >= 0; i-- {
		b := byte(v>>(7*i)) & 0x7f
		if i > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
	}
	return dst
}
