package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// instanceMeasurements returns the PCRs nitro-tpm-pcr-compute computes for
// a made-up Attestable AMI (PCR4, PCR7, PCR12) and a file holding them in
// its output form.
func instanceMeasurements(t *testing.T) (map[int][]byte, string) {
	t.Helper()
	measured := map[int][]byte{4: randomPCR(t), 7: randomPCR(t), 12: randomPCR(t)}
	b, err := nitrotpmsim.MarshalMeasurements(measured)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "instance-measurements.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return measured, path
}

// handWrittenInstancePolicy is the NitroTPM key policy docs/deployment.md
// showed before `policy generate --kind nitrotpm` existed: the account
// root with kms:* (every principal whose IAM policy allows an action may do
// it), the role allowed the attested operations with matching PCR4 and
// PCR12, and Deny statements for the role alone. The attack tests run
// against it to show the holes it left.
func handWrittenInstancePolicy(pcr4, pcr12 []byte) string {
	attested := []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair", "kms:GenerateRandom", "kms:DeriveSharedSecret"}
	role := map[string]string{"AWS": testRoleARN}
	values := map[string]string{
		"kms:RecipientAttestation:NitroTPMPCR4":  fmt.Sprintf("%x", pcr4),
		"kms:RecipientAttestation:NitroTPMPCR12": fmt.Sprintf("%x", pcr12),
	}
	statements := []map[string]any{
		{"Sid": "AllowKeyAdministrationByTheAccount", "Effect": "Allow", "Principal": map[string]string{"AWS": "arn:aws:iam::" + testAccount + ":root"}, "Action": "kms:*", "Resource": "*"},
		{"Sid": "AllowAttestedInstanceUse", "Effect": "Allow", "Principal": role, "Action": attested, "Resource": "*",
			"Condition": map[string]any{"StringEqualsIgnoreCase": values}},
	}
	for _, k := range []string{"kms:RecipientAttestation:NitroTPMPCR4", "kms:RecipientAttestation:NitroTPMPCR12"} {
		statements = append(statements, map[string]any{
			"Sid": "DenyRoleUnless" + strings.TrimPrefix(k, "kms:RecipientAttestation:") + "Matches", "Effect": "Deny", "Principal": role,
			"Action": append(append([]string(nil), attested...), "kms:ReEncrypt*"), "Resource": "*",
			"Condition": map[string]any{"StringNotEqualsIgnoreCase": map[string]string{k: values[k]}},
		})
	}
	b, err := json.Marshal(map[string]any{"Version": "2012-10-17", "Id": "kmsproxy-instance-key-policy", "Statement": statements})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestGeneratedInstancePolicyAttacks runs the attacker's steps against a
// key bound to an instance's NitroTPM PCRs: the hand-written policy the
// deployment guide used to show leaves the same holes the old enclave
// policy did (an administrator decrypts without attestation, the role
// grants the key or moves its alias, ...); the policy `policy generate
// --kind nitrotpm` writes refuses every attack but an administrator
// replacing an unlocked policy, and --lock closes that; the attested
// instance keeps working under each.
func TestGeneratedInstancePolicyAttacks(t *testing.T) {
	measured, mfile := instanceMeasurements(t)
	generate := func(extra ...string) string {
		t.Helper()
		code, out, stderr := runCLI(t, "", append([]string{"policy", "generate", "--kind", "nitrotpm", "--measurements", mfile, "--role", testRoleARN}, extra...)...)
		if code != 0 {
			t.Fatalf("policy generate: status %d: %s", code, stderr)
		}
		return out
	}
	runPolicyAttacks(t, attestation.KindNitroTPM, measured, []attackedPolicy{
		{"hand-written instance policy", handWrittenInstancePolicy(measured[4], measured[12]), attacksOnAnAccountWidePolicy, true},
		{"generated instance policy", generate(), map[string]bool{
			"admin/PutKeyPolicy (the default policy), then Decrypt": true,
		}, false},
		{"generated instance policy with --lock", generate("--lock"), nil, false},
	})
}

// TestGeneratedInstancePolicyInDevKMS is the proof that `policy generate
// --kind nitrotpm` binds a key to exactly the measured boot: under its
// output devkms lets the instance role decrypt with a NitroTPM document of
// that boot, from any instance, and refuses a document with any measured
// PCR off by one bit, one where nothing was measured, an enclave's document
// carrying the same values in its PCRs, and a call without attestation;
// policy check agrees.
func TestGeneratedInstancePolicyInDevKMS(t *testing.T) {
	measured, mfile := instanceMeasurements(t)
	code, policy, stderr := runCLI(t, "", "policy", "generate", "--kind", "nitrotpm", "--measurements", mfile, "--role", testRoleARN)
	if code != 0 {
		t.Fatalf("policy generate: status %d: %s", code, stderr)
	}
	ca, err := nsmsim.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(ca.RootCertificate()),
		devkmstest.WithConfig(func(c *devkms.Config) { c.AccountID = testAccount }),
		devkmstest.WithCredentials(
			devkms.Credential{AccessKeyID: testRoleKeyID, SecretAccessKey: testRoleSecret, Principal: testSessionARN},
			devkms.Credential{AccessKeyID: testAdminKeyID, SecretAccessKey: testAdminSecret, Principal: "arn:aws:iam::" + testAccount + ":root"},
		))
	keyID := kmsd.CreateKey(t, policy)
	role := kmsd.ClientFor(t, testRoleKeyID)
	ctx := context.Background()
	secret := []byte("the instance's database password")
	enc, err := kmsd.ClientFor(t, testAdminKeyID).Encrypt(ctx, &kms.EncryptInput{KeyId: &keyID, Plaintext: secret})
	if err != nil {
		t.Fatalf("the administrator cannot encrypt: %v", err)
	}
	recipientKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&recipientKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	document := func(opts nsmsim.Options) []byte {
		t.Helper()
		sim, err := nsmsim.New(ca, opts)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	instance := func(changes map[int][]byte) nsmsim.Options {
		pcrs := nitrotpmsim.DefaultPCRs(measured)
		for i, v := range changes {
			pcrs[i] = v
		}
		return nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: pcrs}
	}
	offByOneBit := func(i int) []byte {
		v := bytes.Clone(measured[i])
		v[0] ^= 0x80
		return v
	}
	tests := []struct {
		name  string
		opts  *nsmsim.Options // nil: no Recipient at all
		allow bool
	}{
		{name: "measured boot", opts: ptr(instance(nil)), allow: true},
		{name: "measured boot on another instance", opts: ptr(func() nsmsim.Options {
			o := instance(map[int][]byte{10: randomPCR(t)})
			o.ModuleID = "i-0fedcba9876543210-tpm0000000000000000"
			return o
		}()), allow: true},
		{name: "PCR4 one bit off", opts: ptr(instance(map[int][]byte{4: offByOneBit(4)}))},
		{name: "PCR7 one bit off", opts: ptr(instance(map[int][]byte{7: offByOneBit(7)}))},
		{name: "PCR12 one bit off", opts: ptr(instance(map[int][]byte{12: offByOneBit(12)}))},
		{name: "nothing measured", opts: &nsmsim.Options{Kind: attestation.KindNitroTPM, PCRs: nitrotpmsim.DefaultPCRs(nil)}},
		{name: "an enclave's document with the boot's values in its PCRs", opts: &nsmsim.Options{PCRs: measured}},
		{name: "no attestation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob}
			if tt.opts != nil {
				in.Recipient = &types.RecipientInfo{AttestationDocument: document(*tt.opts), KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}
			}
			out, err := role.Decrypt(ctx, in)
			if !tt.allow {
				var apiErr smithy.APIError
				if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "AccessDeniedException" || !strings.Contains(apiErr.ErrorMessage(), "explicit deny") {
					t.Fatalf("Decrypt = %v, want AccessDeniedException from the generated policy's explicit deny", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decrypt with the measured boot's document: %v", err)
			}
			got, err := cms.Decrypt(out.CiphertextForRecipient, recipientKey)
			if err != nil || !bytes.Equal(got, secret) || out.Plaintext != nil {
				t.Fatalf("envelope: %v; plaintext outside it: %d bytes", err, len(out.Plaintext))
			}
		})
	}

	// policy check tells the same story from the same policy.
	pfile := filepath.Join(t.TempDir(), "instance-policy.json")
	if err := os.WriteFile(pfile, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"--kind", "nitrotpm", "--measurements", mfile}, 0},
		{[]string{"--kind", "nitrotpm", "--measurements", mfile, "--pcr", fmt.Sprintf("7=%x", offByOneBit(7))}, 1},
		{[]string{"--pcr", fmt.Sprintf("4=%x", measured[4]), "--pcr", fmt.Sprintf("7=%x", measured[7]), "--pcr", fmt.Sprintf("12=%x", measured[12])}, 1},
		{[]string{"--unattested"}, 1},
	} {
		args := append([]string{"policy", "check", "--key-policy", pfile, "--principal", testSessionARN, "--action", "kms:Decrypt", "--key-arn", kmsd.KeyARN(keyID)}, c.args...)
		code, out, stderr := runCLI(t, "", args...)
		if code != c.want {
			t.Errorf("policy check %s: status %d, want %d:\n%s%s", strings.Join(c.args, " "), code, c.want, out, stderr)
		}
	}
}

func ptr[T any](v T) *T { return &v }
