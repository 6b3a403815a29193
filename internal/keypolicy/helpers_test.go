package keypolicy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

const (
	testAccount = "111122223333"
	testKeyARN  = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	testUser    = "arn:aws:iam::111122223333:user/alice"
	testRole    = "arn:aws:iam::111122223333:role/app"
	testSession = "arn:aws:sts::111122223333:assumed-role/app/i-0123456789abcdef0"
	testRoot    = "arn:aws:iam::111122223333:root"
)

// cmpPolicy compares parsed policies on their exported fields.
var cmpPolicy = cmpopts.IgnoreUnexported(Principals{}, Condition{})

// document wraps statement objects (JSON text) into a 2012-10-17 key
// policy.
func document(statements ...string) string {
	return `{"Version": "2012-10-17", "Statement": [` + strings.Join(statements, ",") + `]}`
}

// mustParse parses doc and fails the test on error.
func mustParse(t testing.TB, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v\ndocument: %s", err, doc)
	}
	return p
}

// diff reports a difference between got and want as a test error.
func diff(t testing.TB, what string, got, want any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, opts...); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}
