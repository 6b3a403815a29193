package credentials_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/credentials"
)

func ExamplePush() {
	p := credentials.NewPush(nil)
	if _, err := p.Retrieve(context.Background()); err != nil {
		fmt.Println(err)
	}

	// The body of PUT /v1/credentials, as `aws configure export-credentials`
	// prints it.
	body := `{"Version": 1, "AccessKeyId": "ASIAIOSFODNN7EXAMPLE",
	  "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	  "SessionToken": "IQoJb3JpZ2luX2VjEXAMPLE", "Expiration": "2099-01-02T03:04:05Z"}`
	c, err := credentials.DecodePush(strings.NewReader(body))
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := p.Set(c); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("ready:", p.Status().Ready)
	fmt.Printf("%v\n", c) // secrets are redacted whatever the verb
	// Output:
	// credentials: no credentials pushed yet: run kmsproxyctl credentials push
	// ready: true
	// PushedCredentials{AccessKeyId:ASIA…MPLE SecretAccessKey:REDACTED(40 bytes) SessionToken:REDACTED(23 bytes) Expiration:2099-01-02T03:04:05Z}
}
