package upstream

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// TestEmbeddedRootsHoldAmazonTrustServices: AWS endpoints present
// certificates issued under Amazon Trust Services, whose roots are Amazon
// Root CA 1-4, cross-signed by Starfield Services Root CA - G2
// (https://www.amazontrust.com/repository/). The embedded pool must hold
// them, since an enclave has no system roots.
func TestEmbeddedRootsHoldAmazonTrustServices(t *testing.T) {
	pool, err := rootPool(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"Amazon Root CA 1": false, "Amazon Root CA 2": false, "Amazon Root CA 3": false, "Amazon Root CA 4": false,
		"Starfield Services Root Certificate Authority - G2": false,
	}
	for r := range bundle.Roots() {
		cert, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := want[cert.Subject.CommonName]; !ok {
			continue
		}
		// A root verifies against a pool that contains it.
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s is not trusted by the pool: %v", cert.Subject.CommonName, err)
		}
		want[cert.Subject.CommonName] = true
	}
	for name, found := range want {
		if !found {
			t.Errorf("%s is not in the embedded bundle", name)
		}
	}
}

func TestRootPoolExtraPEM(t *testing.T) {
	f := newFakeKMS(t, false)
	two := append(append([]byte{}, f.caPEM...), f.caPEM...)
	tests := []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"one certificate", f.caPEM, ""},
		{"two certificates", two, ""},
		{"text around blocks", append([]byte("# devkms CA\n"), f.caPEM...), ""},
		{"whitespace only", []byte(" \n"), ""},
		{"trailing garbage", append(append([]byte{}, f.caPEM...), "garbage"...), "data after PEM block 1"},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}}), `"CERTIFICATE REQUEST", want CERTIFICATE`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rootPool(tt.pem)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("rootPool: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("rootPool error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
