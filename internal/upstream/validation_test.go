package upstream

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// TestSDKInputValidationIsValidationException: input the SDK refuses
// before sending is the caller's error, answered as KMS answers input that
// fails its constraints: 400 ValidationException naming the members.
func TestSDKInputValidationIsValidationException(t *testing.T) {
	c := kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String("https://127.0.0.1:1"), Credentials: aws.AnonymousCredentials{}})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		call func() error
		want string
	}{
		{"missing KeyId", func() error {
			_, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{})
			return err
		}, "1 validation error detected: missing required field, GenerateDataKeyInput.KeyId"},
		{"two missing members", func() error {
			_, err := c.Sign(ctx, &kms.SignInput{})
			return err
		}, "3 validation errors detected: missing required field, SignInput.KeyId; missing required field, SignInput.Message; missing required field, SignInput.SigningAlgorithm"},
		{"a valid input that cannot be sent stays kmsproxyd's fault", func() error {
			_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)}, func(o *kms.Options) { o.Retryer = aws.NopRetryer{} })
			return err
		}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			ke := ToKMSError(err)
			if tt.want == "" {
				if ke.Type != kmsapi.KMSInternal {
					t.Fatalf("ToKMSError(%v) = %+v, want KMSInternalException", err, ke)
				}
				return
			}
			if ke.Type != kmsapi.Validation || ke.Status != 400 {
				t.Fatalf("ToKMSError(%v) = %+v, want a 400 ValidationException", err, ke)
			}
			if ke.Message != tt.want {
				t.Errorf("message\n got: %s\nwant: %s", ke.Message, tt.want)
			}
			if strings.Contains(ke.Message, "127.0.0.1") {
				t.Errorf("message names the endpoint: %s", ke.Message)
			}
		})
	}
}
