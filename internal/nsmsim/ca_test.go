package nsmsim_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

func TestCASaveLoad(t *testing.T) {
	ca := newCA(t)
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	wantModes := map[string]os.FileMode{
		".":                        0o700 | os.ModeDir,
		nsmsim.RootFile:            0o644,
		nsmsim.IntermediateFile:    0o644,
		nsmsim.IntermediateKeyFile: 0o600,
	}
	for name, want := range wantModes {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s mode = %v, want %v", name, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("Save left %d files, want 3 (no temporary files, no root key)", len(entries))
	}

	// root.pem is a plain PEM certificate any tool can use.
	b, err := os.ReadFile(filepath.Join(dir, nsmsim.RootFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, ca.RootCertificate().Raw) {
		t.Fatal("root.pem does not hold the root certificate")
	}

	loaded, err := nsmsim.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.RootCertificate().Equal(ca.RootCertificate()) {
		t.Error("the loaded root differs")
	}
	// Documents from the loaded CA verify under the original root, and
	// the reverse.
	parseVerify(t, ca, attest(t, newSim(t, loaded, nsmsim.Options{}), attestation.Request{}))
	parseVerify(t, loaded, attest(t, newSim(t, ca, nsmsim.Options{}), attestation.Request{}))

	// Saving again replaces the files in place.
	other := newCA(t)
	if err := other.Save(dir); err != nil {
		t.Fatal(err)
	}
	reloaded, err := nsmsim.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reloaded.RootCertificate().Equal(other.RootCertificate()) {
		t.Error("a second Save did not replace the CA")
	}
}

func TestLoadCAErrors(t *testing.T) {
	good := t.TempDir()
	if err := newCA(t).Save(good); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(good, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	otherDir := t.TempDir()
	if err := newCA(t).Save(otherDir); err != nil {
		t.Fatal(err)
	}
	otherFile := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(otherDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256DER, err := x509.MarshalPKCS8PrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		replace map[string][]byte // file -> contents; nil contents: remove
		wantErr string
	}{
		{name: "root missing", replace: map[string][]byte{nsmsim.RootFile: nil}, wantErr: "failed to open"},
		{name: "key missing", replace: map[string][]byte{nsmsim.IntermediateKeyFile: nil}, wantErr: "failed to open"},
		{name: "root not PEM", replace: map[string][]byte{nsmsim.RootFile: []byte("hello")}, wantErr: "not a PEM CERTIFICATE"},
		{name: "root garbage DER", replace: map[string][]byte{nsmsim.RootFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x00}})}, wantErr: "failed to parse"},
		{name: "key not PEM", replace: map[string][]byte{nsmsim.IntermediateKeyFile: []byte("hello")}, wantErr: "not a PEM PRIVATE KEY"},
		{name: "key garbage", replace: map[string][]byte{nsmsim.IntermediateKeyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})}, wantErr: "failed to parse"},
		{name: "key P-256", replace: map[string][]byte{nsmsim.IntermediateKeyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p256DER})}, wantErr: "P-384"},
		{name: "key of another CA", replace: map[string][]byte{nsmsim.IntermediateKeyFile: otherFile(nsmsim.IntermediateKeyFile)}, wantErr: "does not belong"},
		{name: "intermediate of another CA", replace: map[string][]byte{nsmsim.IntermediateFile: otherFile(nsmsim.IntermediateFile), nsmsim.IntermediateKeyFile: otherFile(nsmsim.IntermediateKeyFile)}, wantErr: "not signed by"},
		{name: "root is the intermediate", replace: map[string][]byte{nsmsim.RootFile: read(nsmsim.IntermediateFile)}, wantErr: "not self-signed"},
		{name: "file past the size limit", replace: map[string][]byte{nsmsim.RootFile: append(read(nsmsim.RootFile), bytes.Repeat([]byte("\n"), 64<<10)...)}, wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range []string{nsmsim.RootFile, nsmsim.IntermediateFile, nsmsim.IntermediateKeyFile} {
				data, replaced := tt.replace[name]
				if !replaced {
					data = read(name)
				}
				if data == nil {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := nsmsim.LoadCA(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "nsmsim: ") {
				t.Fatalf("LoadCA = %v; want an nsmsim: error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Error("error contains key material")
			}
		})
	}
}
