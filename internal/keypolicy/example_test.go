package keypolicy_test

import (
	"fmt"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
)

// A key policy that lets one role decrypt only from an enclave whose image
// digest (PCR0) is 0x01 0x02 0x03, written in uppercase hex.
const examplePolicy = `{
  "Version": "2012-10-17",
  "Statement": [{
    "Sid": "Enclave decrypt",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::111122223333:role/enclave"},
    "Action": "kms:Decrypt",
    "Resource": "*",
    "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": "010203"}}
  }]
}`

func ExampleParse() {
	p, err := keypolicy.Parse([]byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	s := p.Statements[0]
	fmt.Println(s.Sid, s.Effect, s.Principal.AWS, s.Action)
	fmt.Println(s.Conditions[0].Base, s.Conditions[0].Key, s.Conditions[0].Values)

	_, err = keypolicy.Parse([]byte(`{"Statement": {"Effect": "Permit", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}}`))
	fmt.Println(err)
	// Output:
	// Enclave decrypt Allow [arn:aws:iam::111122223333:role/enclave] [kms:Decrypt]
	// StringEqualsIgnoreCase kms:RecipientAttestation:ImageSha384 [010203]
	// keypolicy: statement 0: Effect "Permit" is not valid: it must be "Allow" or "Deny"
}

func ExamplePolicy_Evaluate() {
	p, err := keypolicy.Parse([]byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	session := "arn:aws:sts::111122223333:assumed-role/enclave/i-0123456789abcdef0"
	key := "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	for _, pcr0 := range [][]byte{{1, 2, 3}, {1, 2, 4}} {
		req := keypolicy.Request{
			Principal: session,
			Action:    "kms:Decrypt",
			Resource:  key,
			Context: keypolicy.MergeContext(
				keypolicy.AttestationContext(map[int][]byte{0: pcr0}),
				keypolicy.CallerContext(session),
			),
		}
		d := p.Evaluate(req)
		if d.Allowed {
			fmt.Println("allowed")
		} else {
			fmt.Println("AccessDeniedException:", d.AccessDeniedMessage(req))
		}
	}
	// Output:
	// allowed
	// AccessDeniedException: User: arn:aws:sts::111122223333:assumed-role/enclave/i-0123456789abcdef0 is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab because no resource-based policy allows the kms:Decrypt action
}

func ExampleDecision_Explain() {
	p, err := keypolicy.Parse([]byte(examplePolicy))
	if err != nil {
		fmt.Println(err)
		return
	}
	d := p.Evaluate(keypolicy.Request{
		Principal: "arn:aws:iam::111122223333:role/enclave",
		Action:    "kms:Decrypt",
		Resource:  "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		Context:   keypolicy.AttestationContext(map[int][]byte{0: {0xff}}),
	})
	fmt.Print(d.Explain())
	// Output:
	// DENIED (implicit deny): no statement allows it
	// request: principal arn:aws:iam::111122223333:role/enclave, action kms:Decrypt, resource arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab
	// statement 0 (Sid "Enclave decrypt") (Allow): does not apply
	//   principal: matches
	//   action:    matches
	//   resource:  matches
	//   condition StringEqualsIgnoreCase kms:RecipientAttestation:ImageSha384: FAILED: request value "ff" does not match policy value "010203"
}

// Authorize combines the key policy with the caller's IAM policies: a
// statement for the account only delegates to them, and an explicit Deny
// anywhere wins.
func ExampleAuthorize() {
	key, err := keypolicy.Parse([]byte(`{"Version": "2012-10-17", "Statement": [
	  {"Sid": "Account", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
	  {"Sid": "NoDecrypt", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	admin, err := keypolicy.ParseIdentity([]byte(`{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, action := range []string{"kms:DescribeKey", "kms:Decrypt"} {
		req := keypolicy.Request{
			Principal: "arn:aws:sts::111122223333:assumed-role/admin/alice",
			Action:    action,
			Resource:  "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		}
		// Without the caller's IAM policies: conditional.
		fmt.Println(keypolicy.Authorize(keypolicy.Input{Request: req, KeyPolicy: key}).Summary())
		// With them.
		fmt.Println(keypolicy.Authorize(keypolicy.Input{Request: req, KeyPolicy: key, IdentityKnown: true,
			Identity: []keypolicy.IdentityPolicy{{Name: "admin", Policy: admin}}}).Summary())
	}
	// Output:
	// ALLOWED only if an IAM policy also allows it: statement 0 (Sid "Account") of the key policy allows the caller's account, which delegates the decision to the caller's identity-based (IAM) policies
	// ALLOWED: statement 0 (Sid "Account") of the key policy delegates to IAM, and statement 0 of the identity-based policy "admin" allows it
	// DENIED (explicit deny): statement 1 (Sid "NoDecrypt") of the key policy denies it
	// DENIED (explicit deny): statement 1 (Sid "NoDecrypt") of the key policy denies it
}
