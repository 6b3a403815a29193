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
