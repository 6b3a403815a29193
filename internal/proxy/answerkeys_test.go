package proxy

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

// outputs holds a zero output of every operation kmsproxyd serves, by name.
var outputs = map[string]any{
	"Decrypt": &kms.DecryptOutput{}, "GenerateDataKey": &kms.GenerateDataKeyOutput{}, "GenerateDataKeyPair": &kms.GenerateDataKeyPairOutput{},
	"GenerateRandom": &kms.GenerateRandomOutput{}, "DeriveSharedSecret": &kms.DeriveSharedSecretOutput{}, "Encrypt": &kms.EncryptOutput{},
	"GenerateDataKeyWithoutPlaintext": &kms.GenerateDataKeyWithoutPlaintextOutput{}, "GenerateDataKeyPairWithoutPlaintext": &kms.GenerateDataKeyPairWithoutPlaintextOutput{},
	"ReEncrypt": &kms.ReEncryptOutput{}, "DescribeKey": &kms.DescribeKeyOutput{}, "GetPublicKey": &kms.GetPublicKeyOutput{},
	"Sign": &kms.SignOutput{}, "Verify": &kms.VerifyOutput{}, "GenerateMac": &kms.GenerateMacOutput{}, "VerifyMac": &kms.VerifyMacOutput{},
}

// inputs holds a zero input of every operation kmsproxyd serves, by name.
var inputs = map[string]any{
	"Decrypt": &kms.DecryptInput{}, "GenerateDataKey": &kms.GenerateDataKeyInput{}, "GenerateDataKeyPair": &kms.GenerateDataKeyPairInput{},
	"GenerateRandom": &kms.GenerateRandomInput{}, "DeriveSharedSecret": &kms.DeriveSharedSecretInput{}, "Encrypt": &kms.EncryptInput{},
	"GenerateDataKeyWithoutPlaintext": &kms.GenerateDataKeyWithoutPlaintextInput{}, "GenerateDataKeyPairWithoutPlaintext": &kms.GenerateDataKeyPairWithoutPlaintextInput{},
	"ReEncrypt": &kms.ReEncryptInput{}, "DescribeKey": &kms.DescribeKeyInput{}, "GetPublicKey": &kms.GetPublicKeyInput{},
	"Sign": &kms.SignInput{}, "Verify": &kms.VerifyInput{}, "GenerateMac": &kms.GenerateMacInput{}, "VerifyMac": &kms.VerifyMacInput{},
}

func testServer(t testing.TB, pol *policy.Policy) *Server {
	t.Helper()
	s := &Server{cfg: Config{Policy: pol}, log: slog.New(slog.DiscardHandler), home: policy.HomeOf("us-east-1")}
	s.metrics = newMetrics(s)
	return s
}

// TestEveryAnswerNamesItsKey: for every operation but GenerateRandom,
// kmsproxyd finds a key in KMS's answer to check; an answer that names none
// is refused when accounts are pinned, whatever the request named.
func TestEveryAnswerNamesItsKey(t *testing.T) {
	pol, err := policy.Parse([]byte("kms:\n  accounts: [\"111122223333\"]\nlisteners:\n  local:\n    operations: [\"*\"]\n    plaintext: true\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := testServer(t, pol)
	if len(outputs) != len(operations) || len(inputs) != len(operations) {
		t.Fatalf("the test knows %d outputs and %d inputs, kmsproxyd serves %d operations", len(outputs), len(inputs), len(operations))
	}
	for op, out := range outputs {
		t.Run(op, func(t *testing.T) {
			rq := &request{op: op, listener: "local", rules: pol.Rules("local")}
			if err := checkInput(rq, inputs[op]); err != nil {
				t.Fatal(err)
			}
			err := s.checkAnswer(rq, out)
			if op == "GenerateRandom" {
				if err != nil {
					t.Fatalf("GenerateRandom: %v", err)
				}
				return
			}
			ke, ok := err.(*kmsapi.Error)
			if !ok || ke.Type != kmsapi.AccessDenied || !strings.Contains(ke.Message, "names no key ARN") {
				t.Fatalf("an answer without a key: %v, want AccessDeniedException", err)
			}
			// The same answer naming a key of the pinned account passes.
			v := reflect.ValueOf(out).Elem()
			arn := "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
			if op == "DescribeKey" {
				v.FieldByName("KeyMetadata").Set(reflect.ValueOf(&types.KeyMetadata{Arn: aws.String(arn), AWSAccountId: aws.String("111122223333")}))
			} else {
				for _, f := range []string{"KeyId", "SourceKeyId"} {
					if fv := v.FieldByName(f); fv.IsValid() {
						fv.Set(reflect.ValueOf(aws.String(arn)))
					}
				}
			}
			if err := s.checkAnswer(rq, out); err != nil {
				t.Fatalf("an answer naming a pinned key: %v", err)
			}
		})
	}
}

func TestDescribeKeyAccounts(t *testing.T) {
	const arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	for _, tt := range []struct {
		name string
		meta *types.KeyMetadata
		want string
	}{
		{"consistent", &types.KeyMetadata{Arn: aws.String(arn), AWSAccountId: aws.String("111122223333")}, arn},
		{"no account field", &types.KeyMetadata{Arn: aws.String(arn)}, arn},
		{"two accounts", &types.KeyMetadata{Arn: aws.String(arn), AWSAccountId: aws.String("444455556666")}, ""},
		{"no metadata", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := answeredKeys(&request{requested: [3]string{"alias/x"}}, &kms.DescribeKeyOutput{KeyMetadata: tt.meta})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([][2]string{{"alias/x", tt.want}}, got); diff != "" {
				t.Errorf("answeredKeys (-want +got):\n%s", diff)
			}
		})
	}
}
