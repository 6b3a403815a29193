package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

// examplePath is enclave/policy.example.yaml relative to this package.
var examplePath = filepath.Join("..", "..", "enclave", "policy.example.yaml")

// mustParse parses a policy the test expects to be valid.
func mustParse(t testing.TB, text string) *Policy {
	t.Helper()
	p, err := Parse([]byte(text), "policy.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

// rulesOpts compares Rules including the listener name and absent mark;
// the kms: section they share is compared on its own.
var rulesOpts = cmp.Options{cmp.AllowUnexported(Rules{}), cmpopts.IgnoreFields(Rules{}, "pin")}

// parseErrorTests are invalid policies and the error each gives; FuzzParse
// uses their texts as seeds.
var parseErrorTests = []struct {
	name string
	text string
	want string
}{
	{
		name: "unknown operation with suggestion",
		text: `listeners:
  parent:
    plaintext: true
    operations:
      - Decrypt
      - GenerateDataKey
      - Decrpyt
`,
		want: `policy.yaml:7:9: listeners.parent.operations[2]: unknown operation "Decrpyt" (did you mean "Decrypt"?)`,
	},
	{
		name: "operation in the wrong case",
		text: "listeners:\n  local:\n    operations: [encrypt]\n",
		want: `policy.yaml:3:18: listeners.local.operations[0]: unknown operation "encrypt" (did you mean "Encrypt"?)`,
	},
	{
		name: "operation kmsproxyd does not serve",
		text: "listeners:\n  local:\n    operations: [ScheduleKeyDeletion]\n",
		want: `policy.yaml:3:18: listeners.local.operations[0]: unknown operation "ScheduleKeyDeletion"; known names are ` +
			`Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom, DeriveSharedSecret, Encrypt, GenerateDataKeyWithoutPlaintext, ` +
			`GenerateDataKeyPairWithoutPlaintext, ReEncrypt, DescribeKey, GetPublicKey, Sign, Verify, GenerateMac, VerifyMac, or "*" for all`,
	},
	{
		name: "operation glob is not supported",
		text: "listeners:\n  local:\n    operations: [\"Generate*\"]\n",
		want: `policy.yaml:3:18: listeners.local.operations[0]: unknown operation "Generate*"; names are exact, without wildcards: list them, or "*" alone for every operation`,
	},
	{
		name: "operation listed twice",
		text: "listeners:\n  local:\n    plaintext: true\n    operations:\n      - Decrypt\n      - Decrypt\n",
		want: `policy.yaml:6:9: listeners.local.operations[1]: operation Decrypt is listed twice (first at line 5)`,
	},
	{
		name: "wildcard combined with names",
		text: "listeners:\n  local:\n    operations: [Encrypt, \"*\"]\n",
		want: `policy.yaml:3:27: listeners.local.operations[1]: "*" allows every operation and cannot be combined with names: list either "*" or names`,
	},
	{
		name: "operation not a string",
		text: "listeners:\n  local:\n    operations: [Encrypt, 42]\n",
		want: `policy.yaml:3:27: listeners.local.operations[1]: must be a string, got int 42 (quote it for the string: "42")`,
	},
	{
		name: "operations not a list",
		text: "listeners:\n  local:\n    operations: Encrypt\n",
		want: `policy.yaml:3:17: listeners.local.operations: must be a list, got the string "Encrypt"`,
	},
	{
		name: "operations null",
		text: "listeners:\n  local:\n    operations:\n",
		want: `policy.yaml:3:16: listeners.local.operations: must be a list, got null`,
	},
	{
		name: "attested operation with plaintext omitted",
		text: "listeners:\n  parent:\n    operations: [Encrypt, GenerateDataKey]\n",
		want: `policy.yaml:3:27: listeners.parent.operations[1]: GenerateDataKey is an attested operation (its answer carries plaintext) ` +
			`but this listener omits plaintext, which then is false, so it would always be refused: set plaintext: true or remove GenerateDataKey`,
	},
	{
		name: "attested operation with plaintext false",
		text: "listeners:\n  parent:\n    plaintext: false\n    operations: [Decrypt]\n",
		want: `policy.yaml:4:18: listeners.parent.operations[0]: Decrypt is an attested operation (its answer carries plaintext) ` +
			`but plaintext is false on this listener, so it would always be refused: set plaintext: true or remove Decrypt`,
	},
	{
		name: "unknown top-level field",
		text: "listener:\n  parent: {}\n",
		want: `policy.yaml:1:1: unknown field "listener" (did you mean "listeners"?); the top level holds only kms and listeners`,
	},
	{
		name: "unknown top-level field without suggestion",
		text: "listeners: {}\nversion: 2\n",
		want: `policy.yaml:2:1: unknown field "version"; the top level holds only kms and listeners`,
	},
	{
		name: "missing listeners",
		text: "{}\n",
		want: `policy.yaml:1:1: missing listeners: a policy says what each listener (parent, local) may do`,
	},
	{
		name: "root is a list",
		text: "- listeners\n",
		want: `policy.yaml:1:1: a policy must be a mapping with a listeners key, got a list`,
	},
	{
		name: "root is a string",
		text: "hello\n",
		want: `policy.yaml:1:1: a policy must be a mapping with a listeners key, got the string "hello"`,
	},
	{
		name: "root is null",
		text: "---\n",
		want: `policy.yaml:2:1: a policy must be a mapping with a listeners key, got null`,
	},
	{
		name: "listeners null",
		text: "listeners:\n",
		want: `policy.yaml:1:11: listeners: must be a mapping, got null`,
	},
	{
		name: "listeners a list",
		text: "listeners: [parent]\n",
		want: `policy.yaml:1:12: listeners: must be a mapping, got a list`,
	},
	{
		name: "unknown listener with suggestion",
		text: "listeners:\n  parnet: {}\n",
		want: `policy.yaml:2:3: listeners: unknown listener "parnet" (did you mean "parent"?); the listeners are parent and local`,
	},
	{
		name: "unknown listener without suggestion",
		text: "listeners:\n  sidecar: {}\n",
		want: `policy.yaml:2:3: listeners: unknown listener "sidecar"; the listeners are parent and local`,
	},
	{
		name: "listener null",
		text: "listeners:\n  parent:\n",
		want: `policy.yaml:2:10: listeners.parent: must be a mapping, got null`,
	},
	{
		name: "unknown listener field",
		text: "listeners:\n  parent:\n    operation: [Encrypt]\n",
		want: `policy.yaml:3:5: listeners.parent: unknown field "operation" (did you mean "operations"?); ` +
			`a listener's fields are operations, keys, encryption_context, without_encryption_context, plaintext, credentials_push, control, max_inflight, max_connections, metrics_all_listeners, decrypt_cache`,
	},
	{
		name: "camel-case field",
		text: "listeners:\n  parent:\n    encryptionContext: {tenant: \"*\"}\n",
		want: `policy.yaml:3:5: listeners.parent: unknown field "encryptionContext" (did you mean "encryption_context"?); ` +
			`a listener's fields are operations, keys, encryption_context, without_encryption_context, plaintext, credentials_push, control, max_inflight, max_connections, metrics_all_listeners, decrypt_cache`,
	},
	{
		name: "non-string key",
		text: "listeners:\n  1: {}\n",
		want: `policy.yaml:2:3: listeners: keys must be strings, got int 1 (quote it for the string: "1")`,
	},
	{
		name: "duplicate top-level key",
		text: "listeners: {}\nlisteners: {}\n",
		want: `policy.yaml:2:1: duplicate key "listeners" (first at line 1)`,
	},
	{
		name: "duplicate listener",
		text: "listeners:\n  parent: {}\n  local: {}\n  parent: {}\n",
		want: `policy.yaml:4:3: listeners: duplicate key "parent" (first at line 2)`,
	},
	{
		name: "duplicate field",
		text: "listeners:\n  parent:\n    plaintext: true\n    control: []\n    plaintext: false\n",
		want: `policy.yaml:5:5: listeners.parent: duplicate key "plaintext" (first at line 3)`,
	},
	{
		name: "duplicate encryption context key",
		text: "listeners:\n  parent:\n    encryption_context:\n      tenant: \"*\"\n      tenant: acme\n",
		want: `policy.yaml:5:7: listeners.parent.encryption_context: duplicate key "tenant" (first at line 4)`,
	},
	{
		name: "plaintext yes",
		text: "listeners:\n  parent:\n    plaintext: yes\n",
		want: `policy.yaml:3:16: listeners.parent.plaintext: must be true or false, got the string "yes"`,
	},
	{
		name: "plaintext quoted",
		text: "listeners:\n  parent:\n    plaintext: \"true\"\n",
		want: `policy.yaml:3:16: listeners.parent.plaintext: must be true or false, got the string "true"`,
	},
	{
		name: "credentials_push number",
		text: "listeners:\n  parent:\n    credentials_push: 1\n",
		want: `policy.yaml:3:23: listeners.parent.credentials_push: must be true or false, got int 1`,
	},
	{
		name: "custom tag",
		text: "listeners:\n  parent:\n    plaintext: !yes true\n",
		want: `policy.yaml:3:16: listeners.parent.plaintext: must be true or false, got a value tagged "!yes"`,
	},
	{
		name: "unknown control endpoint",
		text: "listeners:\n  parent:\n    control: [healthz, health]\n",
		want: `policy.yaml:3:24: listeners.parent.control[1]: unknown control endpoint "health" (did you mean "healthz"?)`,
	},
	{
		name: "credentials is not a control endpoint",
		text: "listeners:\n  parent:\n    control: [credentials]\n",
		want: `policy.yaml:3:15: listeners.parent.control[0]: unknown control endpoint "credentials"; known names are healthz, readyz, metrics, info, attestation, or "*" for all`,
	},
	{
		name: "control listed twice",
		text: "listeners:\n  parent:\n    control: [metrics, readyz, metrics]\n",
		want: `policy.yaml:3:32: listeners.parent.control[2]: control endpoint metrics is listed twice (first at line 3)`,
	},
	{
		name: "control a mapping",
		text: "listeners:\n  parent:\n    control: {healthz: true}\n",
		want: `policy.yaml:3:14: listeners.parent.control: must be a list, got a mapping`,
	},
	{
		name: "keys empty",
		text: "listeners:\n  parent:\n    keys: []\n",
		want: `policy.yaml:3:11: listeners.parent.keys: empty list: omit keys to allow any key, or list the key patterns to allow`,
	},
	{
		name: "keys a string",
		text: "listeners:\n  parent:\n    keys: alias/app\n",
		want: `policy.yaml:3:11: listeners.parent.keys: must be a list, got the string "alias/app"`,
	},
	{
		name: "key pattern empty",
		text: "listeners:\n  parent:\n    keys: [\"\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "": empty pattern matches no key`,
	},
	{
		name: "key pattern with a character class",
		text: "listeners:\n  parent:\n    keys: [\"alias/app-[ab]\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "alias/app-[ab]": character '[' cannot occur in a KMS key id, key ARN or alias; patterns use only * and ? as wildcards`,
	},
	{
		name: "key pattern with a space",
		text: "listeners:\n  parent:\n    keys: [\"alias/app *\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "alias/app *": character ' ' cannot occur in a KMS key id, key ARN or alias; patterns use only * and ? as wildcards`,
	},
	{
		name: "key pattern with a non-ASCII character",
		text: "listeners:\n  parent:\n    keys: [\"alias/café\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "alias/café": character U+00E9 cannot occur in a KMS key id, key ARN or alias; patterns use only * and ? as wildcards`,
	},
	{
		name: "key pattern alias prefix alone",
		text: "listeners:\n  parent:\n    keys: [alias/]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "alias/": "alias/" alone names no alias; add a name or a wildcard ("alias/app-*")`,
	},
	{
		name: "key pattern alias prefix in the wrong case",
		text: "listeners:\n  parent:\n    keys: [\"Alias/app-*\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "Alias/app-*": not a key ARN ("arn:aws:kms:REGION:ACCOUNT:key/ID"), ` +
			`an alias ARN ("arn:aws:kms:REGION:ACCOUNT:alias/NAME"), an alias name ("alias/NAME") or a key id; the prefix is case-sensitive (did you mean "alias/app-*"?)`,
	},
	{
		name: "key pattern neither ARN, alias nor key id",
		text: "listeners:\n  parent:\n    keys: [app-key]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "app-key": not a key ARN ("arn:aws:kms:REGION:ACCOUNT:key/ID"), ` +
			`an alias ARN ("arn:aws:kms:REGION:ACCOUNT:alias/NAME"), an alias name ("alias/NAME") or a key id (key ids are lowercase hexadecimal with dashes)`,
	},
	{
		name: "key pattern uppercase key id",
		text: "listeners:\n  parent:\n    keys: [\"1234ABCD-*\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "1234ABCD-*": not a key ARN ("arn:aws:kms:REGION:ACCOUNT:key/ID"), ` +
			`an alias ARN ("arn:aws:kms:REGION:ACCOUNT:alias/NAME"), an alias name ("alias/NAME") or a key id (key ids are lowercase hexadecimal with dashes)`,
	},
	{
		name: "key pattern IAM ARN",
		text: "listeners:\n  parent:\n    keys: [\"arn:aws:iam::111122223333:role/app\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "arn:aws:iam::111122223333:role/app": ARN names the service "iam", not kms`,
	},
	{
		name: "key pattern short account",
		text: "listeners:\n  parent:\n    keys: [\"arn:aws:kms:us-east-1:1111:key/*\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "arn:aws:kms:us-east-1:1111:key/*": ARN account "1111" is not a 12-digit AWS account id`,
	},
	{
		name: "key pattern wrong resource type",
		text: "listeners:\n  parent:\n    keys: [\"arn:aws:kms:us-east-1:111122223333:grant/*\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "arn:aws:kms:us-east-1:111122223333:grant/*": ARN resource "grant/*" is neither key/ID nor alias/NAME`,
	},
	{
		name: "key pattern incomplete ARN",
		text: "listeners:\n  parent:\n    keys: [\"arn:aws:kms:us-east-1\"]\n",
		want: `policy.yaml:3:12: listeners.parent.keys[0]: bad key pattern "arn:aws:kms:us-east-1": not a complete ARN: expected a key ARN ("arn:aws:kms:REGION:ACCOUNT:key/ID"), ` +
			`an alias ARN ("arn:aws:kms:REGION:ACCOUNT:alias/NAME"), an alias name ("alias/NAME") or a key id`,
	},
	{
		name: "key pattern listed twice",
		text: "listeners:\n  parent:\n    keys:\n      - alias/a\n      - alias/b\n      - alias/a\n",
		want: `policy.yaml:6:9: listeners.parent.keys[2]: key pattern "alias/a" is listed twice (first at line 4)`,
	},
	{
		name: "encryption context a list",
		text: "listeners:\n  parent:\n    encryption_context: [tenant]\n",
		want: `policy.yaml:3:25: listeners.parent.encryption_context: must be a mapping of encryption context keys to value patterns, got a list`,
	},
	{
		name: "encryption context value a number",
		text: "listeners:\n  parent:\n    encryption_context:\n      tenant: 123\n",
		want: `policy.yaml:4:15: listeners.parent.encryption_context.tenant: must be a string, got int 123 (quote it for the string: "123")`,
	},
	{
		name: "encryption context value null",
		text: "listeners:\n  parent:\n    encryption_context:\n      tenant:\n",
		want: `policy.yaml:4:14: listeners.parent.encryption_context.tenant: must be a string, got null`,
	},
	{
		name: "encryption context value empty",
		text: "listeners:\n  parent:\n    encryption_context:\n      tenant: \"\"\n",
		want: `policy.yaml:4:15: listeners.parent.encryption_context.tenant: bad value pattern "": empty pattern matches only an empty value; use "*" for any value`,
	},
	{
		name: "encryption context value with a character class",
		text: "listeners:\n  parent:\n    encryption_context:\n      \"aws:ebs:id\": \"vol-[0-9]*\"\n",
		want: `policy.yaml:4:21: listeners.parent.encryption_context["aws:ebs:id"]: bad value pattern "vol-[0-9]*": character '[' is not supported in a pattern: ` +
			`only * and ? are wildcards, there are no character classes or escapes (use ? to match '[')`,
	},
	{
		name: "encryption context value with a backslash",
		text: "listeners:\n  parent:\n    encryption_context:\n      path: 'a\\*'\n",
		want: `policy.yaml:4:13: listeners.parent.encryption_context.path: bad value pattern "a\\*": character '\\' is not supported in a pattern: ` +
			`only * and ? are wildcards, there are no character classes or escapes (use ? to match '\\')`,
	},
	{
		name: "encryption context value with a control character",
		text: "listeners:\n  parent:\n    encryption_context:\n      tenant: \"a\\tb\"\n",
		want: `policy.yaml:4:15: listeners.parent.encryption_context.tenant: bad value pattern "a\tb": pattern holds the control character U+0009`,
	},
	{
		name: "encryption context empty key",
		text: "listeners:\n  parent:\n    encryption_context:\n      \"\": \"*\"\n",
		want: `policy.yaml:4:7: listeners.parent.encryption_context: empty encryption context key`,
	},
	{
		name: "anchor",
		text: "listeners:\n  parent: &p\n    control: []\n  local: {}\n",
		want: `policy.yaml:2:11: listeners.parent: YAML anchors (&p) are not supported in a policy: write the value out`,
	},
	{
		name: "alias",
		text: "listeners:\n  parent:\n    control: []\n  local: *p\n",
		want: `policy.yaml:4:10: YAML aliases (*p) are not supported in a policy: write the value out`,
	},
	{
		name: "anchor and alias",
		text: "listeners:\n  parent:\n    control: &c [healthz]\n  local:\n    control: *c\n",
		want: `policy.yaml:3:14: listeners.parent.control: YAML anchors (&c) are not supported in a policy: write the value out`,
	},
	{
		name: "anchor at the top level",
		text: "x: &a Decrypt\nlisteners: {}\n",
		want: `policy.yaml:1:4: x: YAML anchors (&a) are not supported in a policy: write the value out`,
	},
	{
		name: "merge key",
		text: "listeners:\n  parent:\n    <<: {control: []}\n",
		want: `policy.yaml:3:5: listeners.parent: YAML merge keys (<<) are not supported in a policy: write the fields out`,
	},
	{
		name: "bare star",
		text: "listeners:\n  local:\n    operations: [*]\n",
		want: `policy.yaml:3: invalid YAML: did not find expected alphabetic or numeric character (a bare * starts a YAML alias: quote it, "*")`,
	},
	{
		name: "bare star on the first line",
		text: "listeners: {local: {operations: [*]}}\n",
		want: `policy.yaml:1: invalid YAML: did not find expected alphabetic or numeric character (a bare * starts a YAML alias: quote it, "*")`,
	},
	{
		name: "tab indentation",
		text: "listeners:\n\tparent: {}\n",
		want: `policy.yaml:2: invalid YAML: found character that cannot start any token`,
	},
	{
		name: "second document",
		text: "listeners: {}\n---\nlisteners: {}\n",
		want: `policy.yaml:3:1: a policy file holds one YAML document, and a second one starts here`,
	},
	{
		name: "empty file",
		text: "",
		want: `policy.yaml: file is empty: a policy is a mapping with a listeners key`,
	},
	{
		name: "comments only",
		text: "# nothing here\n\n# yet\n",
		want: `policy.yaml: file is empty: a policy is a mapping with a listeners key`,
	},
	{
		name: "account unquoted",
		text: "kms:\n  accounts: [111122223333]\nlisteners: {}\n",
		want: `policy.yaml:2:14: kms.accounts[0]: must be a string, got int 111122223333 (quote it for the string: "111122223333")`,
	},
	{
		name: "account with a leading zero unquoted",
		text: "kms:\n  accounts:\n    - 012345678901\nlisteners: {}\n",
		want: `policy.yaml:3:7: kms.accounts[0]: must be a string, got float 012345678901 (quote it for the string: "012345678901")`,
	},
	{
		name: "account too short",
		text: "kms:\n  accounts: [\"11112222333\"]\nlisteners: {}\n",
		want: `policy.yaml:2:14: kms.accounts[0]: account "11112222333" is malformed: an AWS account ID is 12 digits, quoted: "111122223333"`,
	},
	{
		name: "account pattern",
		text: "kms:\n  accounts: [\"1111222233*\"]\nlisteners: {}\n",
		want: `policy.yaml:2:14: kms.accounts[0]: account "1111222233*": wildcards are not allowed here, since a pattern would pin nothing; list each account`,
	},
	{
		name: "account listed twice",
		text: "kms:\n  accounts:\n    - \"111122223333\"\n    - \"111122223333\"\nlisteners: {}\n",
		want: `policy.yaml:4:7: kms.accounts[1]: account 111122223333 is listed twice (first at line 3)`,
	},
	{
		name: "accounts empty",
		text: "kms:\n  accounts: []\nlisteners: {}\n",
		want: `policy.yaml:2:13: kms.accounts: empty list: list at least one account, or omit the field`,
	},
	{
		name: "accounts not a list",
		text: "kms:\n  accounts: \"111122223333\"\nlisteners: {}\n",
		want: `policy.yaml:2:13: kms.accounts: must be a list, got the string "111122223333"`,
	},
	{
		name: "kms empty",
		text: "kms: {}\nlisteners: {}\n",
		want: `policy.yaml:1:6: kms: empty: list the accounts whose keys kmsproxyd may use under accounts, or omit kms`,
	},
	{
		name: "kms not a mapping",
		text: "kms: [\"111122223333\"]\nlisteners: {}\n",
		want: `policy.yaml:1:6: kms: must be a mapping with accounts (and optionally regions and keys), got a list`,
	},
	{
		name: "kms unknown field",
		text: "kms:\n  account: [\"111122223333\"]\nlisteners: {}\n",
		want: `policy.yaml:2:3: kms: unknown field "account" (did you mean "accounts"?); kms holds accounts, regions and keys`,
	},
	{
		name: "kms misspelt at the top",
		text: "kmss:\n  accounts: [\"111122223333\"]\nlisteners: {}\n",
		want: `policy.yaml:1:1: unknown field "kmss" (did you mean "kms"?); the top level holds only kms and listeners`,
	},
	{
		name: "region malformed",
		text: "kms:\n  accounts: [\"111122223333\"]\n  regions: [eu-west1]\nlisteners: {}\n",
		want: `policy.yaml:3:13: kms.regions[0]: region "eu-west1" is malformed: a region name looks like eu-west-1 or us-gov-west-1`,
	},
	{
		name: "kms.keys lists an alias",
		text: "kms:\n  keys: [\"alias/app-data\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: "alias/app-data" is an alias: an alias can be moved to another key, so it cannot pin one. ` +
			`List the key ARN of the key it points to here, and the alias under a listener's keys if callers name it`,
	},
	{
		name: "kms.keys lists an alias ARN",
		text: "kms:\n  keys:\n    - \"arn:aws:kms:us-east-1:111122223333:alias/app-data\"\nlisteners: {}\n",
		want: `policy.yaml:3:7: kms.keys[0]: "arn:aws:kms:us-east-1:111122223333:alias/app-data" is an alias: an alias can be moved to another key, so it cannot pin one. ` +
			`List the key ARN of the key it points to here, and the alias under a listener's keys if callers name it`,
	},
	{
		name: "kms.keys lists every key",
		text: "kms:\n  keys: [\"arn:aws:kms:us-east-1:111122223333:key/*\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: "arn:aws:kms:us-east-1:111122223333:key/*" matches every key id and so pins no key ` +
			`(kms.accounts and kms.regions already pin the account and region): list the ARN of each key kmsproxyd may use`,
	},
	{
		name: "kms.keys lists a bare key id",
		text: "kms:\n  keys: [\"1234abcd-12ab-34cd-56ef-1234567890ab\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: "1234abcd-12ab-34cd-56ef-1234567890ab" is not ` + keyARNForm,
	},
	{
		name: "kms.keys lists an ARN cut short",
		text: "kms:\n  keys: [\"arn:aws:kms:*\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: "arn:aws:kms:*" is not ` + keyARNForm,
	},
	{
		name: "kms.keys with a wildcard service",
		text: "kms:\n  keys: [\"arn:aws:*:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: "arn:aws:*:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" names the service "*": write ` + keyARNForm,
	},
	{
		name: "kms.keys with a malformed region",
		text: "kms:\n  keys: [\"arn:aws:kms:useast1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: "arn:aws:kms:useast1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" names the region "useast1", which is no AWS region name (eu-west-1, us-gov-west-1)`,
	},
	{
		name: "kms.keys with a malformed account",
		text: "kms:\n  keys: [\"arn:aws:kms:us-east-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab\"]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: bad key ARN pattern "arn:aws:kms:us-east-1:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab": ARN account "1111" is not a 12-digit AWS account id`,
	},
	{
		name: "kms.keys names an account kms.accounts leaves out",
		text: "kms:\n  accounts: [\"111122223333\"]\n  keys: [\"arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab\"]\nlisteners: {}\n",
		want: `policy.yaml:3:10: kms.keys[0]: key ARN pattern "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab" names account 444455556666, ` +
			`which kms.accounts does not list, so it could never match: add the account to kms.accounts or correct the key ARN`,
	},
	{
		name: "kms.keys names a region kms.regions leaves out",
		text: "kms:\n  keys: [\"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"]\n  regions: [eu-west-1]\nlisteners: {}\n",
		want: `policy.yaml:2:10: kms.keys[0]: key ARN pattern "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" names region us-east-1, ` +
			`which kms.regions does not list, so it could never match: add the region to kms.regions or correct the key ARN`,
	},
	{
		name: "kms.keys twice",
		text: "kms:\n  keys:\n    - \"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\n    - \"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\nlisteners: {}\n",
		want: `policy.yaml:4:7: kms.keys[1]: key ARN pattern "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" is listed twice (first at line 3)`,
	},
	{
		name: "kms.keys empty",
		text: "kms:\n  keys: []\nlisteners: {}\n",
		want: `policy.yaml:2:9: kms.keys: empty list: list the key ARNs kmsproxyd may use, or omit the field`,
	},
	{
		name: "kms.keys a string",
		text: "kms:\n  keys: \"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\nlisteners: {}\n",
		want: `policy.yaml:2:9: kms.keys: must be a list, got the string "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"`,
	},
	{
		name: "region in capitals",
		text: "kms:\n  regions: [EU-WEST-1]\nlisteners: {}\n",
		want: `policy.yaml:2:13: kms.regions[0]: region "EU-WEST-1" is malformed: a region name looks like eu-west-1 or us-gov-west-1`,
	},
	{
		name: "context-free operation on a listener that requires a context",
		text: "listeners:\n  parent:\n    operations: [Decrypt, GenerateRandom]\n    plaintext: true\n    encryption_context: {tenant: \"*\"}\n",
		want: `policy.yaml:3:27: listeners.parent.operations[1]: GenerateRandom carries no encryption context but this listener requires one ` +
			`(encryption_context), so it would always be refused: add it to without_encryption_context to allow it without one, or remove GenerateRandom`,
	},
	{
		name: "without_encryption_context without encryption_context",
		text: "listeners:\n  parent:\n    operations: [Sign]\n    without_encryption_context: [Sign]\n",
		want: `policy.yaml:4:5: listeners.parent.without_encryption_context: means nothing without encryption_context, which this listener does not set: remove it`,
	},
	{
		name: "without_encryption_context names an operation that carries one",
		text: "listeners:\n  parent:\n    operations: [\"*\"]\n    encryption_context: {tenant: \"*\"}\n    without_encryption_context: [Decrypt]\n",
		want: `policy.yaml:5:34: listeners.parent.without_encryption_context[0]: unknown operation without encryption context "Decrypt"; ` +
			`known names are GenerateRandom, DeriveSharedSecret, DescribeKey, GetPublicKey, Sign, Verify, GenerateMac, VerifyMac, or "*" for all`,
	},
	{
		name: "max_inflight zero",
		text: "listeners:\n  parent:\n    max_inflight: 0\n",
		want: `policy.yaml:3:19: listeners.parent.max_inflight: must be a whole number from 1 to 4096, got int 0`,
	},
	{
		name: "max_connections over the limit",
		text: "listeners:\n  parent:\n    max_connections: 4097\n",
		want: `policy.yaml:3:22: listeners.parent.max_connections: must be a whole number from 1 to 4096, got int 4097`,
	},
	{
		name: "max_connections a string",
		text: "listeners:\n  parent:\n    max_connections: \"64\"\n",
		want: `policy.yaml:3:22: listeners.parent.max_connections: must be a whole number from 1 to 4096, got the string "64"`,
	},
	{
		name: "metrics_all_listeners not a boolean",
		text: "listeners:\n  parent:\n    metrics_all_listeners: yes\n",
		want: `policy.yaml:3:28: listeners.parent.metrics_all_listeners: must be true or false, got the string "yes"`,
	},
	{
		name: "decrypt_cache missing a bound",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 5m, max_entries: 10000}\n",
		want: `policy.yaml:5:20: listeners.local.decrypt_cache: missing max_uses: a decrypt cache needs all of max_age, max_uses and max_entries, ` +
			`so that every bound on it is written in the policy (for example {max_age: 5m, max_uses: 1000, max_entries: 10000})`,
	},
	{
		name: "decrypt_cache empty",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {}\n",
		want: `policy.yaml:5:20: listeners.local.decrypt_cache: missing max_age, max_uses and max_entries: a decrypt cache needs all of max_age, max_uses and max_entries, ` +
			`so that every bound on it is written in the policy (for example {max_age: 5m, max_uses: 1000, max_entries: 10000})`,
	},
	{
		name: "decrypt_cache true",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: true\n",
		want: `policy.yaml:5:20: listeners.local.decrypt_cache: must be a mapping such as {max_age: 5m, max_uses: 1000, max_entries: 10000}, got bool true`,
	},
	{
		name: "decrypt_cache misspelt field",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache:\n      max_age: 5m\n      max_use: 1000\n      max_entries: 10000\n",
		want: `policy.yaml:7:7: listeners.local.decrypt_cache: unknown field "max_use" (did you mean "max_uses"?); decrypt_cache holds max_age, max_uses and max_entries`,
	},
	{
		name: "decrypt_cache misspelt listener field",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt-cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:5:5: listeners.local: unknown field "decrypt-cache" (did you mean "decrypt_cache"?); ` +
			`a listener's fields are operations, keys, encryption_context, without_encryption_context, plaintext, credentials_push, control, max_inflight, max_connections, metrics_all_listeners, decrypt_cache`,
	},
	{
		name: "decrypt_cache max_age without a unit",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 300, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:5:30: listeners.local.decrypt_cache.max_age: must be a duration from 1s to 1h with its unit, such as 30s, 5m or 1h, got int 300`,
	},
	{
		name: "decrypt_cache max_age over an hour",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 61m, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:5:30: listeners.local.decrypt_cache.max_age: must be a duration from 1s to 1h with its unit, such as 30s, 5m or 1h, got the string "61m"`,
	},
	{
		name: "decrypt_cache max_age under a second",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 999ms, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:5:30: listeners.local.decrypt_cache.max_age: must be a duration from 1s to 1h with its unit, such as 30s, 5m or 1h, got the string "999ms"`,
	},
	{
		name: "decrypt_cache max_age malformed",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: five minutes, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:5:30: listeners.local.decrypt_cache.max_age: must be a duration from 1s to 1h with its unit, such as 30s, 5m or 1h, got the string "five minutes"`,
	},
	{
		name: "decrypt_cache max_uses zero",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 5m, max_uses: 0, max_entries: 10000}\n",
		want: `policy.yaml:5:44: listeners.local.decrypt_cache.max_uses: must be a whole number from 1 to 1000000, got int 0`,
	},
	{
		name: "decrypt_cache max_uses over the limit",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 5m, max_uses: 1000001, max_entries: 10000}\n",
		want: `policy.yaml:5:44: listeners.local.decrypt_cache.max_uses: must be a whole number from 1 to 1000000, got int 1000001`,
	},
	{
		name: "decrypt_cache max_entries over the limit",
		text: "listeners:\n  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 100001}\n",
		want: `policy.yaml:5:63: listeners.local.decrypt_cache.max_entries: must be a whole number from 1 to 100000, got int 100001`,
	},
	{
		name: "decrypt_cache on a listener without Decrypt",
		text: "listeners:\n  local:\n    operations: [GenerateDataKey]\n    plaintext: true\n    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:5:5: listeners.local.decrypt_cache: means nothing: this listener may not call Decrypt (operations); add Decrypt to operations or remove decrypt_cache`,
	},
	{
		name: "decrypt_cache on a listener without plaintext",
		text: "listeners:\n  local:\n    operations: [\"*\"]\n    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}\n",
		want: `policy.yaml:4:5: listeners.local.decrypt_cache: means nothing: Decrypt answers carry plaintext and this listener omits plaintext, which then is false; set plaintext: true or remove decrypt_cache`,
	},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range parseErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse([]byte(tt.text), "policy.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded with %+v, want error %q", p.Summary(), tt.want)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error %T %q is not a *ParseError", err, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("Parse error\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

func TestParseErrorFormat(t *testing.T) {
	tests := []struct {
		name string
		err  ParseError
		want string
	}{
		{"full", ParseError{File: "p.yaml", Line: 7, Column: 5, Path: "listeners.parent", Reason: "r"}, "p.yaml:7:5: listeners.parent: r"},
		{"no path", ParseError{File: "p.yaml", Line: 1, Column: 1, Reason: "r"}, "p.yaml:1:1: r"},
		{"no column", ParseError{File: "p.yaml", Line: 3, Reason: "r"}, "p.yaml:3: r"},
		{"whole file", ParseError{File: "p.yaml", Reason: "r"}, "p.yaml: r"},
		{"no filename", ParseError{File: "policy", Line: 2, Column: 4, Reason: "r"}, "policy:2:4: r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseFileDefaults(t *testing.T) {
	tests := []struct {
		name   string
		text   string
		parent *Rules
		local  *Rules
	}{
		{
			name:   "no listeners",
			text:   "listeners: {}\n",
			parent: &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "parent", absent: true},
			local:  &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "local", absent: true},
		},
		{
			name:   "empty listener",
			text:   "listeners:\n  parent: {}\n",
			parent: &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "parent"},
			local:  &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "local", absent: true},
		},
		{
			name:   "explicit empty lists",
			text:   "listeners:\n  local:\n    operations: []\n    control: []\n    encryption_context: {}\n",
			parent: &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "parent", absent: true},
			local:  &Rules{Operations: []string{}, Control: []string{}, listener: "local"},
		},
		{
			name:   "wildcards",
			text:   "listeners:\n  local:\n    operations: [\"*\"]\n    control: [\"*\"]\n    plaintext: true\n",
			parent: &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "parent", absent: true},
			local:  &Rules{Operations: []string{"*"}, Control: []string{"*"}, Plaintext: true, listener: "local"},
		},
		{
			name:   "pass-through operations without plaintext",
			text:   "listeners:\n  parent:\n    operations: [Encrypt, DescribeKey]\n    plaintext: false\n    credentials_push: false\n",
			parent: &Rules{Operations: []string{"Encrypt", "DescribeKey"}, Control: []string{"healthz", "readyz"}, listener: "parent"},
			local:  &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "local", absent: true},
		},
		{
			name:   "wildcard operations without plaintext",
			text:   "listeners:\n  parent:\n    operations: [\"*\"]\n",
			parent: &Rules{Operations: []string{"*"}, Control: []string{"healthz", "readyz"}, listener: "parent"},
			local:  &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "local", absent: true},
		},
		{
			name: "every field",
			text: `listeners:
  parent:
    operations: [Decrypt, GenerateRandom, Sign]
    keys: ["arn:aws:kms:*:111122223333:key/*", "alias/app-*", "mrk-*", "1234abcd-*", "*:alias/x"]
    encryption_context: {tenant: "acme-*", "aws:ebs:id": "*"}
    without_encryption_context: [GenerateRandom, Sign]
    plaintext: True
    credentials_push: TRUE
    control: [metrics]
    max_inflight: 16
    max_connections: 4096
    metrics_all_listeners: true
`,
			parent: &Rules{
				Operations:               []string{"Decrypt", "GenerateRandom", "Sign"},
				Keys:                     []string{"arn:aws:kms:*:111122223333:key/*", "alias/app-*", "mrk-*", "1234abcd-*", "*:alias/x"},
				EncryptionContext:        map[string]string{"tenant": "acme-*", "aws:ebs:id": "*"},
				WithoutEncryptionContext: []string{"GenerateRandom", "Sign"},
				Plaintext:                true,
				CredentialsPush:          true,
				Control:                  []string{"metrics"},
				MaxInflight:              16,
				MaxConnections:           4096,
				MetricsAllListeners:      true,
				listener:                 "parent",
			},
			local: &Rules{Operations: []string{}, Control: []string{"healthz", "readyz"}, listener: "local", absent: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.text)
			if p.IsDefault() {
				t.Error("IsDefault() = true for a file")
			}
			if got := p.DefaultWarning(); got != "" {
				t.Errorf("DefaultWarning() = %q for a file, want none", got)
			}
			if diff := cmp.Diff(tt.parent, p.Rules(ListenerParent), rulesOpts); diff != "" {
				t.Errorf("parent rules (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.local, p.Rules(ListenerLocal), rulesOpts); diff != "" {
				t.Errorf("local rules (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	p := Default()
	if !p.IsDefault() {
		t.Error("IsDefault() = false for Default()")
	}
	if got := p.DefaultWarning(); !strings.Contains(got, "the parent instance can read every secret it asks for") {
		t.Errorf("DefaultWarning() = %q, want it to say the parent can read every secret", got)
	}
	all := []string{"healthz", "readyz", "metrics", "info", "attestation"}
	want := map[string]*Rules{
		ListenerParent: {Operations: []string{"*"}, Plaintext: true, CredentialsPush: true, Control: all, listener: "parent"},
		ListenerLocal:  {Operations: []string{"*"}, Plaintext: true, Control: all, MetricsAllListeners: true, listener: "local"},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, p.Rules(name), rulesOpts); diff != "" {
			t.Errorf("%s rules (-want +got):\n%s", name, diff)
		}
	}
	// Every operation, key, context and endpoint is allowed on both
	// listeners (kmstool parity); only the parent may push credentials.
	for _, name := range Listeners {
		r := p.Rules(name)
		for _, op := range allOperations {
			if err := r.AllowOperation(op); err != nil {
				t.Errorf("%s: AllowOperation(%s) = %v", name, op, err)
			}
			if err := r.AllowPlaintext(op); err != nil {
				t.Errorf("%s: AllowPlaintext(%s) = %v", name, op, err)
			}
		}
		for _, c := range ControlEndpoints {
			if err := r.AllowControl(c); err != nil {
				t.Errorf("%s: AllowControl(%s) = %v", name, c, err)
			}
		}
		if r.KeysRestricted() {
			t.Errorf("%s: KeysRestricted() = true", name)
		}
		if err := r.AllowKey(""); err != nil {
			t.Errorf("%s: AllowKey(\"\") = %v", name, err)
		}
		if err := r.AllowEncryptionContext(nil); err != nil {
			t.Errorf("%s: AllowEncryptionContext(nil) = %v", name, err)
		}
	}
	if err := p.Rules(ListenerParent).AllowCredentialsPush(); err != nil {
		t.Errorf("parent: AllowCredentialsPush() = %v", err)
	}
	if err := p.Rules(ListenerLocal).AllowCredentialsPush(); err == nil {
		t.Error("local: AllowCredentialsPush() = nil, want denied")
	}
	// Each call returns a fresh policy: changing one cannot weaken another.
	p.Rules(ListenerLocal).CredentialsPush = true
	if Default().Rules(ListenerLocal).CredentialsPush {
		t.Error("Default() shares its rules between calls")
	}
}

func TestExampleFile(t *testing.T) {
	p, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	want := map[string]*Rules{
		ListenerParent: {
			Operations:        []string{"Decrypt", "GenerateDataKey"},
			Keys:              []string{"arn:aws:kms:*:111122223333:key/*", "alias/app-*"},
			EncryptionContext: map[string]string{"tenant": "*"},
			Plaintext:         true,
			CredentialsPush:   true,
			Control:           []string{"healthz", "readyz", "metrics", "attestation"},
			MaxInflight:       64,
			MaxConnections:    128,
			listener:          "parent",
		},
		ListenerLocal: {
			Operations: []string{"*"},
			Plaintext:  true,
			Control:    []string{"healthz", "readyz"},
			listener:   "local",
		},
	}
	if got := p.KMS().Accounts; !cmp.Equal(got, []string{"111122223333"}) || p.AccountsWarning() != "" {
		t.Errorf("the example pins accounts %v, want the placeholder 111122223333", got)
	}
	const placeholderKey = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	if got := p.KMS().Keys; !cmp.Equal(got, []string{placeholderKey}) || p.KeysWarning() != "" {
		t.Errorf("the example pins keys %v, want the placeholder %s", got, placeholderKey)
	}
	for name, w := range want {
		if diff := cmp.Diff(w, p.Rules(name), rulesOpts); diff != "" {
			t.Errorf("%s rules (-want +got):\n%s", name, diff)
		}
	}
	if p.IsDefault() || p.DefaultWarning() != "" {
		t.Error("the example file is reported as the built-in default")
	}
	if p.Source() != examplePath {
		t.Errorf("Source() = %q, want %q", p.Source(), examplePath)
	}
	if len(p.SHA256()) != 64 {
		t.Errorf("SHA256() = %q, want 64 hex digits", p.SHA256())
	}

	// What the hardened parent listener may and may not do.
	parent := p.Rules(ListenerParent)
	arn := placeholderKey
	ctx := map[string]string{"tenant": "acme"}
	for _, err := range []error{
		parent.AllowOperation("Decrypt"), parent.AllowPlaintext("Decrypt"),
		parent.AllowKey(arn), parent.AllowKey("alias/app-payments"),
		parent.AllowAnsweredKey("alias/app-payments", arn),
		parent.AllowEncryptionContext(ctx), parent.AllowCredentialsPush(), parent.AllowControl("attestation"),
	} {
		if err != nil {
			t.Errorf("hardened parent refused an intended request: %v", err)
		}
	}
	for _, err := range []error{
		parent.AllowOperation("GenerateDataKeyPair"), parent.AllowOperation("ReEncrypt"),
		parent.AllowKey(""), parent.AllowKey("1234abcd-12ab-34cd-56ef-1234567890ab"),
		parent.AllowKey("arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
		parent.AllowKey("alias/other"), parent.AllowEncryptionContext(nil), parent.AllowControl("info"),
		parent.AllowAnsweredKey("alias/app-payments", "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
		parent.AllowAnsweredKey("alias/app-payments", "arn:aws:kms:us-east-1:111122223333:key/0b0b0b0b-1111-4222-8333-444455556666"),
		p.Rules(ListenerLocal).AllowAnsweredKey("", "arn:aws:kms:us-east-1:111122223333:key/0b0b0b0b-1111-4222-8333-444455556666"),
		p.Rules(ListenerLocal).AllowAnsweredKey("alias/app-payments", "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
	} {
		var d *Denied
		if !errors.As(err, &d) {
			t.Errorf("hardened parent: got %v, want a *Denied", err)
		}
	}
}

func TestSizeLimit(t *testing.T) {
	const base = "listeners:\n  local:\n    operations: [\"*\"]\n    plaintext: true\n"
	pad := func(n int) []byte {
		t.Helper()
		b := []byte(base)
		for len(b) < n {
			line := "# padding comment to reach the size limit\n"
			if rest := n - len(b); rest < len(line) {
				line = "#" + strings.Repeat("x", rest-2) + "\n"
				if rest == 1 {
					line = "\n"
				}
			}
			b = append(b, line...)
		}
		if len(b) != n {
			t.Fatalf("padded to %d bytes, want %d", len(b), n)
		}
		return b
	}
	dir := t.TempDir()
	tests := []struct {
		name    string
		size    int
		wantErr string
	}{
		{"at the limit", MaxFileSize, ""},
		{"one past the limit", MaxFileSize + 1, "file is larger than the 65536-byte limit"},
		{"far past the limit", 4 * MaxFileSize, "file is larger than the 65536-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := pad(tt.size)
			path := filepath.Join(dir, fmt.Sprintf("policy-%d.yaml", tt.size))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, parse := range []struct {
				how string
				fn  func() (*Policy, error)
			}{
				{"Parse", func() (*Policy, error) { return Parse(data, "policy.yaml") }},
				{"Load", func() (*Policy, error) { return Load(path) }},
			} {
				p, err := parse.fn()
				if tt.wantErr == "" {
					if err != nil {
						t.Fatalf("%s: %v", parse.how, err)
					}
					if err := p.Rules(ListenerLocal).AllowOperation("Decrypt"); err != nil {
						t.Errorf("%s: policy at the limit lost its rules: %v", parse.how, err)
					}
					continue
				}
				var pe *ParseError
				if !errors.As(err, &pe) || pe.Line != 0 || pe.Reason != tt.wantErr {
					t.Errorf("%s: got %v, want a *ParseError %q", parse.how, err, tt.wantErr)
				}
			}
		})
	}

	// The limit leaves room: a policy listing every operation and control
	// endpoint on both listeners with a hundred key patterns is under a
	// quarter of it, as MaxFileSize's comment says.
	var b strings.Builder
	b.WriteString("listeners:\n")
	for _, l := range Listeners {
		fmt.Fprintf(&b, "  %s:\n    plaintext: true\n    credentials_push: true\n    operations:\n", l)
		for _, op := range allOperations {
			fmt.Fprintf(&b, "      - %s\n", op)
		}
		b.WriteString("    control:\n")
		for _, c := range ControlEndpoints {
			fmt.Fprintf(&b, "      - %s\n", c)
		}
		b.WriteString("    keys:\n")
		for i := range 50 {
			fmt.Fprintf(&b, "      - \"arn:aws:kms:us-east-1:111122223333:key/%08x-12ab-34cd-56ef-1234567890ab\"\n", i)
		}
	}
	big := mustParse(t, b.String())
	if n := b.Len(); n >= MaxFileSize/4 {
		t.Errorf("a large realistic policy is %d bytes, not under a quarter of MaxFileSize", n)
	}
	if got := len(big.Rules(ListenerParent).Keys); got != 50 {
		t.Errorf("parsed %d key patterns, want 50", got)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
	if _, err := Load(dir); err == nil {
		t.Error("Load(directory) succeeded")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listeners:\n  parent:\n    plaintext: maybe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(bad)
	want := bad + `:3:16: listeners.parent.plaintext: must be true or false, got the string "maybe"`
	if err == nil || err.Error() != want {
		t.Errorf("Load(bad) = %v, want %s", err, want)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		p    *Policy
	}{
		{"default", Default()},
		{"example", mustParse(t, string(example))},
		{"absent listeners", mustParse(t, "listeners: {}\n")},
		{"odd context keys", mustParse(t, "listeners:\n  parent:\n    encryption_context: {\"aws:ebs:id\": \"vol-*\", \"a b\": \"*\"}\n")},
		{"pinned, with limits", mustParse(t, pinned)},
		{"decrypt cache", mustParse(t, cachePolicy)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := yaml.Marshal(tt.p)
			if err != nil {
				t.Fatalf("yaml.Marshal: %v", err)
			}
			again, err := Parse(out, "marshalled.yaml")
			if err != nil {
				t.Fatalf("Parse(MarshalYAML output): %v\n%s", err, out)
			}
			for _, name := range Listeners {
				want, got := tt.p.Rules(name).clone(), again.Rules(name).clone()
				// A listener absent from the file is written out as its
				// deny-all rules, which are then present.
				want.absent, got.absent = false, false
				if diff := cmp.Diff(want, got, rulesOpts); diff != "" {
					t.Errorf("%s rules after a round trip (-want +got):\n%s\n%s", name, diff, out)
				}
			}
			if diff := cmp.Diff(tt.p.KMS(), again.KMS(), cmpopts.IgnoreUnexported(Pin{})); diff != "" {
				t.Errorf("kms after a round trip (-want +got):\n%s\n%s", diff, out)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	p := mustParse(t, "listeners:\n  parent:\n    operations: [Encrypt]\n    keys: [\"alias/app-*\"]\n")
	got, err := json.Marshal(p.Summary())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"source":"policy.yaml","default":false,"sha256":"` + p.SHA256() + `","listeners":{` +
		`"local":{"operations":[],"plaintext":false,"credentials_push":false,"control":["healthz","readyz"]},` +
		`"parent":{"operations":["Encrypt"],"keys":["alias/app-*"],"plaintext":false,"credentials_push":false,"control":["healthz","readyz"]}}}`
	if string(got) != want {
		t.Errorf("Summary JSON\n got: %s\nwant: %s", got, want)
	}

	d, err := json.Marshal(Default().Summary())
	if err != nil {
		t.Fatal(err)
	}
	wantDefault := `{"source":"built-in default","default":true,"listeners":{` +
		`"local":{"operations":["*"],"plaintext":true,"credentials_push":false,"control":["healthz","readyz","metrics","info","attestation"],"metrics_all_listeners":true},` +
		`"parent":{"operations":["*"],"plaintext":true,"credentials_push":true,"control":["healthz","readyz","metrics","info","attestation"]}}}`
	if string(d) != wantDefault {
		t.Errorf("default Summary JSON\n got: %s\nwant: %s", d, wantDefault)
	}

	// The summary holds copies: changing it does not change the policy.
	s := p.Summary()
	s.Listeners[ListenerParent].Operations[0] = "Decrypt"
	s.Listeners[ListenerParent].Keys[0] = "*"
	if err := p.Rules(ListenerParent).AllowOperation("Decrypt"); err == nil {
		t.Error("changing the summary changed the policy")
	}
}

func BenchmarkParseExample(b *testing.B) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data, "policy.yaml"); err != nil {
			b.Fatal(err)
		}
	}
}
