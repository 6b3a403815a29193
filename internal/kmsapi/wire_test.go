package kmsapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// newSDKClient returns an aws-sdk-go-v2 KMS client that talks to h, so the
// SDK's own serializers and deserializers check this package's wire forms.
func newSDKClient(t testing.TB, h http.Handler) *kms.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return kms.New(kms.Options{
		Region:       "eu-west-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  aws.AnonymousCredentials{},
		HTTPClient:   &http.Client{Transport: sdkhttp.BufferBodies(http.DefaultTransport, 0)},
		Retryer:      aws.NopRetryer{},
	})
}

func TestSDKRoundTrip(t *testing.T) {
	created := time.UnixMilli(1700000000123).UTC()
	var gotInput kms.DecryptInput
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := CheckRequest(r); err != nil {
			WriteError(w, err)
			return
		}
		op, err := Operation(r)
		if err != nil {
			WriteError(w, err)
			return
		}
		body, err := ReadBody(r, MaxRequestBody)
		if err != nil {
			WriteError(w, err)
			return
		}
		switch op {
		case "Decrypt":
			if err := DecodeInput(body, &gotInput); err != nil {
				WriteError(w, err)
				return
			}
			WriteOutput(w, &kms.DecryptOutput{
				KeyId:               aws.String("arn:aws:kms:eu-west-1:111122223333:key/k"),
				Plaintext:           []byte("secret"),
				EncryptionAlgorithm: types.EncryptionAlgorithmSpecSymmetricDefault,
			})
		case "DescribeKey":
			WriteOutput(w, &kms.DescribeKeyOutput{KeyMetadata: &types.KeyMetadata{
				KeyId:        aws.String("k"),
				Arn:          aws.String("arn:aws:kms:eu-west-1:111122223333:key/k"),
				AWSAccountId: aws.String("111122223333"),
				CreationDate: &created,
				Enabled:      true,
				KeySpec:      types.KeySpecRsa2048,
				KeyUsage:     types.KeyUsageTypeEncryptDecrypt,
				EncryptionAlgorithms: []types.EncryptionAlgorithmSpec{
					types.EncryptionAlgorithmSpecRsaesOaepSha256,
				},
			}})
		default:
			WriteError(w, Errorf(NotFound, "Key 'k' does not exist"))
		}
	})
	c := newSDKClient(t, h)
	ctx := context.Background()

	in := &kms.DecryptInput{
		CiphertextBlob:    []byte{1, 2, 3},
		KeyId:             aws.String("alias/app"),
		EncryptionContext: map[string]string{"tenant": "a"},
		Recipient: &types.RecipientInfo{
			AttestationDocument:    []byte("doc"),
			KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256,
		},
	}
	out, err := c.Decrypt(ctx, in)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	if got, want := string(out.Plaintext), "secret"; got != want {
		t.Errorf("Plaintext = %q, want %q", got, want)
	}
	opts := cmpopts.IgnoreUnexported(kms.DecryptInput{}, types.RecipientInfo{})
	if diff := cmp.Diff(in, &gotInput, opts); diff != "" {
		t.Errorf("decoded input differs (-sent +decoded):\n%s", diff)
	}

	dk, err := c.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String("k")})
	if err != nil {
		t.Fatalf("DescribeKey: %v", err)
	}
	if got := dk.KeyMetadata.CreationDate; got == nil || !got.Equal(created) {
		t.Errorf("CreationDate = %v, want %v", got, created)
	}
	if !dk.KeyMetadata.Enabled || dk.KeyMetadata.KeySpec != types.KeySpecRsa2048 {
		t.Errorf("KeyMetadata = %+v", dk.KeyMetadata)
	}

	_, err = c.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String("k")})
	var nf *types.NotFoundException
	if !errors.As(err, &nf) || nf.ErrorMessage() != "Key 'k' does not exist" {
		t.Errorf("GetPublicKey error = %v, want NotFoundException", err)
	}
}

func TestDecodeInputErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{name: "syntax", body: `{"KeyId":`, want: Serialization},
		{name: "wrong type", body: `{"KeyId":5}`, want: Serialization},
		{name: "bad base64", body: `{"CiphertextBlob":"!!"}`, want: Serialization},
		{name: "trailing", body: `{} {}`, want: Serialization},
		{name: "array", body: `[]`, want: Serialization},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in kms.DecryptInput
			err := DecodeInput([]byte(tt.body), &in)
			var ke *Error
			if !errors.As(err, &ke) || ke.Type != tt.want {
				t.Fatalf("DecodeInput(%s) = %v, want %s", tt.body, err, tt.want)
			}
			if strings.Contains(ke.Message, "!!") {
				t.Errorf("message echoes the request: %q", ke.Message)
			}
		})
	}
	var in kms.DecryptInput
	if err := DecodeInput(nil, &in); err != nil {
		t.Errorf("empty body: %v", err)
	}
}

func TestReadBodyLimit(t *testing.T) {
	for _, tt := range []struct {
		name string
		size int
		ok   bool
	}{{"at limit", MaxRequestBody, true}, {"past limit", MaxRequestBody + 1, false}} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("a", tt.size)))
			_, err := ReadBody(r, MaxRequestBody)
			if (err == nil) != tt.ok {
				t.Fatalf("ReadBody(%d bytes) error = %v, want ok=%v", tt.size, err, tt.ok)
			}
		})
	}
}

func TestOperation(t *testing.T) {
	for _, tt := range []struct{ target, want string }{
		{"TrentService.Decrypt", "Decrypt"},
		{"", ""},
		{"TrentService.", ""},
		{"Other.Decrypt", ""},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set(TargetHeader, tt.target)
		got, err := Operation(r)
		if got != tt.want || (tt.want == "") != (err != nil) {
			t.Errorf("Operation(%q) = %q, %v; want %q", tt.target, got, err, tt.want)
		}
	}
}

func TestWriteErrorHidesInternalText(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, errors.New("open /secret/path: denied"))
	if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "/secret/path") {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(rec.Body.String(), `"__type":"KMSInternalException"`) {
		t.Fatalf("body %s lacks the KMS error type", rec.Body)
	}
}
