package devkms_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// recipientKeys are RSA keys shared by the tests of one run (generating
// them is the slow part of building a Recipient).
var (
	recipientKeyOnce sync.Once
	recipientKey     *rsa.PrivateKey
)

func sharedRecipientKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	recipientKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		recipientKey = k
	})
	return recipientKey
}

// simCA is one simulator CA shared by the tests of one run.
var (
	simCAOnce sync.Once
	simCA     *nsmsim.CA
	simCAErr  error
)

func sharedCA(t testing.TB) *nsmsim.CA {
	t.Helper()
	simCAOnce.Do(func() { simCA, simCAErr = nsmsim.NewCA() })
	if simCAErr != nil {
		t.Fatalf("nsmsim.NewCA: %v", simCAErr)
	}
	return simCA
}

// attest returns an attestation document signed by a simulator with the
// given PCRs (nil: all zero) carrying pub.
func attest(t testing.TB, ca *nsmsim.CA, pcrs map[int][]byte, pub any) []byte {
	t.Helper()
	sim, err := nsmsim.New(ca, nsmsim.Options{PCRs: pcrs})
	if err != nil {
		t.Fatalf("nsmsim.New: %v", err)
	}
	var spki []byte
	if pub != nil {
		if spki, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			t.Fatalf("MarshalPKIXPublicKey: %v", err)
		}
	}
	doc, err := sim.Attest(context.Background(), attestation.Request{PublicKey: spki})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	return doc
}

// recipient returns a Recipient for a simulated enclave with pcrs and the
// private key that opens its CiphertextForRecipient.
func recipient(t testing.TB, ca *nsmsim.CA, pcrs map[int][]byte) (*types.RecipientInfo, *rsa.PrivateKey) {
	t.Helper()
	priv := sharedRecipientKey(t)
	return &types.RecipientInfo{
		AttestationDocument:    attest(t, ca, pcrs, &priv.PublicKey),
		KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
	}, priv
}

// randomPCRs returns PCR0-PCR4 with random 48-byte values.
func randomPCRs(t testing.TB) map[int][]byte {
	t.Helper()
	pcrs := map[int][]byte{}
	for i := range 5 {
		b := make([]byte, 48)
		rand.Read(b)
		pcrs[i] = b
	}
	return pcrs
}

// apiError returns the KMS error code, message and HTTP status of err.
func apiError(t testing.TB, err error) (code, msg string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want a KMS error")
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not a KMS API error", err)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	return ae.ErrorCode(), ae.ErrorMessage(), status
}

// wantAPIError fails t unless err is the KMS error code with a message
// containing msgPart.
func wantAPIError(t testing.TB, err error, code, msgPart string) {
	t.Helper()
	gotCode, gotMsg, _ := apiError(t, err)
	if gotCode != code || !strings.Contains(gotMsg, msgPart) {
		t.Fatalf("got %s: %q\nwant %s containing %q", gotCode, gotMsg, code, msgPart)
	}
}

// requireTool returns the path of an external tool, or skips the test when
// it is absent (fails instead when KMSPROXY_REQUIRE_TOOLS=1).
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("KMSPROXY_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is required (KMSPROXY_REQUIRE_TOOLS=1) but not in PATH", name)
		}
		t.Skipf("skipping: %s not in PATH (set KMSPROXY_REQUIRE_TOOLS=1 to require it)", name)
	}
	return p
}

var ctx = context.Background()
