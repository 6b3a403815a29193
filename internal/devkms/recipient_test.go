package devkms_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// fakeClock is a settable clock for devkms and the simulator.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// docAt returns a document carrying pub signed by a simulator whose clock
// reads at. A leaf certificate is first issued at issued, so documents dated
// after it still chain to a certificate valid at devkms's time.
func docAt(t *testing.T, ca *nsmsim.CA, issued, at time.Time, pub []byte) []byte {
	t.Helper()
	clk := &fakeClock{t: issued}
	sim, err := nsmsim.New(ca, nsmsim.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sim.Attest(ctx, attestation.Request{PublicKey: pub}); err != nil {
		t.Fatal(err)
	}
	clk.Set(at)
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func spki(t *testing.T, pub any) []byte {
	t.Helper()
	doc := attest(t, sharedCA(t), nil, pub)
	d, err := attestation.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return d.PublicKey
}

func TestRecipientChecks(t *testing.T) {
	ca := sharedCA(t)
	now := time.Now().UTC().Truncate(time.Second).Add(500 * time.Millisecond)
	clk := &fakeClock{t: now}
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithConfig(func(c *devkms.Config) { c.Now = clk.Now }),
	)
	c := kmsd.Client(t)
	priv := sharedRecipientKey(t)
	rsaPub := spki(t, &priv.PublicKey)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	age := devkms.DefaultMaxAttestationAge
	good := docAt(t, ca, now, now, rsaPub)
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0x01

	tests := []struct {
		name string
		doc  []byte
		alg  types.KeyEncryptionMechanism
		want string // "" for success
	}{
		{"fresh", good, "RSAES_OAEP_SHA_256", ""},
		{"algorithm omitted", good, "", ""},
		{"exactly the maximum age", docAt(t, ca, now.Add(-age), now.Add(-age), rsaPub), "RSAES_OAEP_SHA_256", ""},
		{"1ms older than the maximum age", docAt(t, ca, now.Add(-age-time.Millisecond), now.Add(-age-time.Millisecond), rsaPub), "RSAES_OAEP_SHA_256",
			"Invalid Recipient: the attestation document is too old: it was created at"},
		{"at the clock skew limit", docAt(t, ca, now, now.Add(devkms.MaxAttestationClockSkew), rsaPub), "RSAES_OAEP_SHA_256", ""},
		{"beyond the clock skew limit", docAt(t, ca, now, now.Add(devkms.MaxAttestationClockSkew+time.Millisecond), rsaPub), "RSAES_OAEP_SHA_256",
			"Invalid Recipient: the attestation document's timestamp"},
		{"untrusted root", docAt(t, otherCA, now, now, rsaPub), "RSAES_OAEP_SHA_256",
			"Invalid Recipient: the Nitro Enclave attestation document does not verify: attestation: untrusted certificate chain"},
		{"bad signature", badSig, "RSAES_OAEP_SHA_256", "Invalid Recipient: the Nitro Enclave attestation document does not verify: attestation: bad signature"},
		{"ECDSA public key", docAt(t, ca, now, now, spki(t, &ecKey.PublicKey)), "RSAES_OAEP_SHA_256",
			"Invalid Recipient: the Nitro Enclave attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: public_key is a ECDSA key; KMS encrypts to RSA keys only"},
		{"RSA-1024 public key", docAt(t, ca, now, now, spki(t, &small.PublicKey)), "RSAES_OAEP_SHA_256",
			"Invalid Recipient: the Nitro Enclave attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: public_key is an RSA-1024 key; want 2048, 3072 or 4096 bits"},
		{"no public key", docAt(t, ca, now, now, nil), "RSAES_OAEP_SHA_256", "Invalid Recipient: the Nitro Enclave attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: the document has no public_key"},
		{"public key not DER", docAt(t, ca, now, now, []byte("not a key")), "RSAES_OAEP_SHA_256",
			"Invalid Recipient: the Nitro Enclave attestation document's public_key cannot receive KMS's answer: attestation: unusable recipient public key: public_key (9 bytes) is not a DER SubjectPublicKeyInfo"},
		{"not an attestation document", []byte{0xa0}, "RSAES_OAEP_SHA_256", "Invalid Recipient: the attestation document is malformed: attestation: "},
		{"empty document", []byte{}, "RSAES_OAEP_SHA_256", "Value at 'recipient.attestationDocument' failed to satisfy constraint: Member must have length greater than or equal to 1"},
		{"other key encryption algorithm", good, "RSAES_OAEP_SHA_1", "Value 'RSAES_OAEP_SHA_1' at 'recipient.keyEncryptionAlgorithm' failed to satisfy constraint: Member must satisfy enum value set: [RSAES_OAEP_SHA_256]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16),
				Recipient: &types.RecipientInfo{AttestationDocument: tt.doc, KeyEncryptionAlgorithm: tt.alg}})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("GenerateRandom: %v", err)
				}
				if b, err := cms.Decrypt(out.CiphertextForRecipient, priv); err != nil || len(b) != 16 {
					t.Fatalf("envelope: %v", err)
				}
				return
			}
			wantAPIError(t, err, "ValidationException", tt.want)
		})
	}

	t.Run("Decrypt refuses a bad document before answering", func(t *testing.T) {
		id := kmsd.CreateKey(t, "")
		enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob, Recipient: &types.RecipientInfo{AttestationDocument: badSig}})
		wantAPIError(t, err, "ValidationException", "Invalid Recipient: the Nitro Enclave attestation document does not verify")
	})

	t.Run("cached documents are still checked for freshness", func(t *testing.T) {
		doc := docAt(t, ca, now, now, rsaPub)
		r := &types.RecipientInfo{AttestationDocument: doc}
		if _, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(1), Recipient: r}); err != nil {
			t.Fatalf("first use: %v", err)
		}
		clk.Set(now.Add(age + time.Second))
		defer clk.Set(now)
		_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(1), Recipient: r})
		wantAPIError(t, err, "ValidationException", "too old")
	})
}
