package policy_test

import (
	"fmt"

	"github.com/enclavekit/kmsproxy/internal/policy"
)

func ExampleParse() {
	p, err := policy.Parse([]byte(`
listeners:
  parent:
    operations: [Decrypt]
    keys: ["alias/app-*"]
    plaintext: true
`), "policy.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	parent := p.Rules(policy.ListenerParent)
	fmt.Println(parent.AllowOperation("Decrypt"))
	fmt.Println(parent.AllowKey("alias/app-orders"))
	fmt.Println(parent.AllowOperation("GenerateDataKeyPair"))
	fmt.Println(parent.AllowKey(""))
	fmt.Println(p.Rules(policy.ListenerLocal).AllowOperation("Decrypt"))
	// Output:
	// <nil>
	// <nil>
	// listener "parent" may not call GenerateDataKeyPair (policy: listeners.parent.operations)
	// listener "parent" may use only the keys the policy lists, so the request must name its key: send KeyId (a key ARN or an alias) (policy: listeners.parent.keys)
	// listener "local" may not call Decrypt: the listener is not in the policy, so it may use only healthz and readyz (policy: listeners.local)
}

func ExampleParse_error() {
	_, err := policy.Parse([]byte(`listeners:
  parent:
    plaintext: true
    operations:
      - Decrypt
      - GenerateDataKey
      - Decrpyt
`), "policy.yaml")
	fmt.Println(err)
	// Output:
	// policy.yaml:7:9: listeners.parent.operations[2]: unknown operation "Decrpyt" (did you mean "Decrypt"?)
}

func ExampleDefault() {
	p := policy.Default()
	if p.IsDefault() {
		fmt.Println("warning:", p.DefaultWarning())
	}
	// Output:
	// warning: no policy file given: using the built-in default policy, under which the parent instance can read every secret it asks for (both listeners may call every KMS operation on any key and receive the plaintext); bake a hardened policy into the enclave image and pass it with --policy (see enclave/policy.example.yaml)
}
