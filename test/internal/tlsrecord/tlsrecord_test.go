package tlsrecord

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// recordingConn keeps a copy of every byte written to the connection.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordingConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestParseRealTLS records both directions of a real TLS 1.3 exchange and
// finds only records: in TLS 1.3 the only handshake record in the clear is
// each side's hello, everything after it is application_data (with at most
// one compatibility change_cipher_spec).
func TestParseRealTLS(t *testing.T) {
	cert := selfSigned(t)
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	a, b := net.Pipe()
	clientSide := &recordingConn{Conn: a}
	serverSide := &recordingConn{Conn: b}
	secret := []byte("a secret the parent must not read")

	var wg sync.WaitGroup
	wg.Go(func() {
		s := tls.Server(serverSide, &tls.Config{Certificates: []tls.Certificate{cert}})
		defer s.Close()
		buf := make([]byte, len(secret))
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Errorf("server read: %v", err)
			return
		}
		if _, err := s.Write(buf); err != nil {
			t.Errorf("server write: %v", err)
		}
	})
	c := tls.Client(clientSide, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if _, err := c.Write(secret); err != nil {
		t.Fatalf("client write: %v", err)
	}
	echo := make([]byte, len(secret))
	if _, err := io.ReadFull(c, echo); err != nil {
		t.Fatalf("client read: %v", err)
	}
	c.Close()
	wg.Wait()

	for _, s := range []struct {
		name   string
		stream []byte
	}{{"client", clientSide.written()}, {"server", serverSide.written()}} {
		recs, err := Parse(s.stream)
		if err != nil {
			t.Fatalf("%s stream: %v", s.name, err)
		}
		if len(recs) < 2 || recs[0].Type != Handshake {
			t.Fatalf("%s stream: %d records, first %v; want a handshake record first", s.name, len(recs), recs)
		}
		for _, r := range recs[1:] {
			if r.Type == Handshake {
				t.Errorf("%s stream: a second handshake record in the clear at %d (not TLS 1.3?)", s.name, r.Offset)
			}
		}
		if bytes.Contains(s.stream, secret) {
			t.Errorf("%s stream holds the secret in the clear", s.name)
		}
	}
}

func header(typ byte, version uint16, length int) []byte {
	return []byte{typ, byte(version >> 8), byte(version), byte(length >> 8), byte(length)}
}

func TestParseMalformed(t *testing.T) {
	appData := append(header(23, VersionTLS12, 3), 1, 2, 3)
	tests := []struct {
		name       string
		stream     []byte
		wantRecs   int
		wantOffset int
	}{
		{"http request", []byte("POST / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, 0},
		{"kms json", []byte(`{"CiphertextBlob":"AAAA"}`), 0, 0},
		{"content type 24 (heartbeat)", append(header(24, VersionTLS12, 1), 0), 0, 0},
		{"content type 19", append(header(19, VersionTLS12, 1), 0), 0, 0},
		{"version 0x0302", append(header(22, 0x0302, 1), 0), 0, 0},
		{"version 0x0304", append(header(23, 0x0304, 1), 0), 0, 0},
		{"sslv3", append(header(22, 0x0300, 1), 0), 0, 0},
		{"short header", []byte{23, 3, 3, 0}, 0, 0},
		{"body one byte short", header(23, VersionTLS12, 4), 0, 0},
		{"garbage after a record", append(bytes.Clone(appData), 'G', 'E', 'T', ' ', '/'), 1, len(appData)},
		{"record one past the limit", append(header(23, VersionTLS12, MaxRecordLength+1), make([]byte, MaxRecordLength+1)...), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := Parse(tt.stream)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %d records, %v; want an *Error", len(recs), err)
			}
			if pe.Offset != tt.wantOffset || len(recs) != tt.wantRecs {
				t.Errorf("Parse: error at %d after %d records (%v), want at %d after %d", pe.Offset, len(recs), err, tt.wantOffset, tt.wantRecs)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	atLimit := append(header(23, VersionTLS12, MaxRecordLength), make([]byte, MaxRecordLength)...)
	recs, err := Parse(atLimit)
	if err != nil || len(recs) != 1 || recs[0].Length != MaxRecordLength {
		t.Errorf("a record at the length limit: %v, %v", recs, err)
	}
	recs, err = Parse(nil)
	if err != nil || len(recs) != 0 {
		t.Errorf("empty stream: %v, %v", recs, err)
	}
	hello := append(header(22, VersionTLS10, 2), 1, 0)
	recs, err = Parse(append(hello, append(header(20, VersionTLS12, 1), 1)...))
	if err != nil || len(recs) != 2 || recs[0].Version != VersionTLS10 || recs[1].Type != ChangeCipherSpec || recs[1].Offset != 7 {
		t.Errorf("ClientHello with 0x0301 then change_cipher_spec: %+v, %v", recs, err)
	}
}
