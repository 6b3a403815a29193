package mission

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

func TestMissionThroughKmsproxyd(t *testing.T) {
	env := enclavetest.Start(t, enclavetest.Options{})
	ctx := context.Background()
	agreement := env.CreateKey(t, devkms.SeedKey{KeySpec: "ECC_NIST_P256", KeyUsage: "KEY_AGREEMENT"})
	pk, err := env.Operator(t).GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(agreement)})
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	peerSPKI, err := x509.MarshalPKIXPublicKey(peer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	wantShared, err := SharedSecret(peer, pk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("the mission's secret")
	ec := map[string]string{"tenant": "acme"}
	enc, err := env.Operator(t).Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(env.KeyID), Plaintext: secret, EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(ctx, env.ParentAddr)
	if err != nil {
		t.Fatal(err)
	}
	in := Input{KeyID: "alias/app-data", Ciphertext: enc.CiphertextBlob, EncryptionContext: ec,
		AgreementKeyID: agreement, PeerPublicKey: peerSPKI, RandomBytes: 48}
	r, err := Run(ctx, c, in)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := Want{Plaintext: secret, SharedSecret: wantShared, RandomBytes: 48}
	if err := r.Check(want); err != nil {
		t.Errorf("Check: %v", err)
	}
	if n := len(r.Secrets()); n != 5 {
		t.Errorf("Secrets names %d values, want 5", n)
	}

	// Check notices each kind of wrong answer.
	bad := *r
	bad.Plaintext = []byte("something else")
	bad.DataKeyDecrypted = make([]byte, 32)
	bad.PairPublicKey = pk.PublicKey
	bad.Random = make([]byte, 48)
	bad.SharedSecret = r.DataKey
	err = bad.Check(want)
	for _, op := range []string{"Decrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom", "DeriveSharedSecret"} {
		if err == nil || !strings.Contains(err.Error(), "wrong "+op+" answer") {
			t.Errorf("Check of a wrong %s answer: %v", op, err)
		}
	}
}
