package proxy_test

import (
	"bytes"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

// TestReviewAliasMovedWithinThePinnedAccount is an administrator of the
// pinned account taking over the alias an enclave app names its key by.
//
// The operator binds the local listener to one key, listing the alias the
// app uses and the key it points to:
//
//	keys: ["alias/app-ledger", "arn:aws:kms:us-east-1:111122223333:key/A"]
//
// The generated key policy denies UpdateAlias and DeleteAlias on key A, but
// leaves kms:ScheduleKeyDeletion to the account's administrators, also with
// --lock (cmd/kmsproxyctl/policy.go adminActions; --lock removes only
// kms:PutKeyPolicy). When A's waiting period ends KMS deletes "all aliases
// that refer to it" (ScheduleKeyDeletion API reference), and the
// administrator creates alias/app-ledger again for key B, whose policy they
// wrote. devkms has no ScheduleKeyDeletion, so the test frees the alias with
// DeleteAlias under a permissive policy on A: the state KMS reaches after
// the deletion.
//
// From then on the app's GenerateDataKey by alias is answered with key B. B
// is in the pinned account, so kms.accounts passes, and
// policy.Rules.AllowAnsweredKey accepts any answered key once the requested
// alias matched a pattern, although the listener names the one key ARN it
// means. The administrator decrypts the CiphertextBlob the app stored with
// key B and holds the app's data key. kmsproxyd must refuse the answer: an
// answered key ARN that matches none of the listener's key ARN patterns,
// when it lists some, is not the key the policy binds.
func TestReviewAliasMovedWithinThePinnedAccount(t *testing.T) {
	const idA = "0a0a0a0a-1111-4222-8333-444455556666"
	arnA := "arn:aws:kms:" + enclavetest.Region + ":" + enclavetest.Account + ":key/" + idA
	p, err := policy.Parse([]byte(`kms:
  accounts: ["`+enclavetest.Account+`"]
listeners:
  local:
    operations: ["*"]
    keys: ["alias/app-ledger", "`+arnA+`"]
    plaintext: true
`), "bound.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := enclavetest.Start(t, enclavetest.Options{Policy: p})
	permissive := `{"Version":"2012-10-17","Statement":[
	  {"Effect":"Allow","Principal":{"AWS":"` + enclavetest.OperatorARN + `"},"Action":"kms:*","Resource":"*"},
	  {"Effect":"Allow","Principal":{"AWS":"` + enclavetest.RoleARN + `"},"Action":["kms:GenerateDataKey","kms:Decrypt"],"Resource":"*"}]}`
	keyA := e.CreateKey(t, devkms.SeedKey{ID: idA, Policy: permissive, Aliases: []string{"alias/app-ledger"}})
	app := e.Client(t, e.LocalAddr)
	if out, err := app.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-ledger"), KeySpec: types.DataKeySpecAes256}); err != nil {
		t.Fatalf("before the takeover: %v", err)
	} else if got := aws.ToString(out.KeyId); got != e.DevKMS.KeyARN(keyA) {
		t.Fatalf("before the takeover the alias names %s, want key A", got)
	}

	// The administrator's key B and the alias freed and created again.
	op := e.Operator(t)
	keyB := e.CreateKey(t, devkms.SeedKey{Policy: permissive})
	if _, err := op.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String("alias/app-ledger")}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app-ledger"), TargetKeyId: &keyB}); err != nil {
		t.Fatal(err)
	}

	out, err := app.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: aws.String("alias/app-ledger"), KeySpec: types.DataKeySpecAes256})
	if err == nil {
		stolen, derr := op.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: out.CiphertextBlob})
		if derr == nil && bytes.Equal(stolen.Plaintext, out.Plaintext) {
			t.Fatalf("the app got a data key under %s (not the key ARN the listener lists), and the administrator decrypts it with that key without any enclave", aws.ToString(out.KeyId))
		}
		t.Fatalf("GenerateDataKey by the moved alias answered with %s; want AccessDeniedException (listeners.local.keys)", aws.ToString(out.KeyId))
	}
	wantCode(t, err, "AccessDeniedException")
}
