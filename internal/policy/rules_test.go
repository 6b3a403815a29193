package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// hardened is a policy exercising every rule on the parent listener and
// leaving the local listener out.
const hardened = `listeners:
  parent:
    operations: [Decrypt, GenerateDataKey, Encrypt, ReEncrypt]
    keys:
      - "arn:aws:kms:*:111122223333:key/*"
      - "alias/app-*"
      - "mrk-????????????????????????????????"
    encryption_context:
      tenant: "*"
      env: "prod-?"
    plaintext: true
    credentials_push: false
    control: [healthz, metrics]
`

// passThroughOnly is a listener that may call anything but receive no
// plaintext.
const passThroughOnly = "listeners:\n  parent:\n    operations: [\"*\"]\n    control: [\"*\"]\n    credentials_push: true\n"

const (
	keyARN   = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	otherARN = "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	bareID   = "1234abcd-12ab-34cd-56ef-1234567890ab"
	mrkID    = "mrk-1234abcd12ab34cd56ef1234567890ab"
)

// answeredUnlisted is the denial of an answered key no key ARN pattern of
// the listener matches: it names the rule, not the key.
const answeredUnlisted = `listener "parent" may use only the keys the policy lists, and KMS answered with a key that matches none of its key ARN patterns ` +
	`(an alias or key id pattern says which names a caller may use, not which key they lead to) (policy: listeners.parent.keys)`

// answeredUnlistedByName is the denial of an answered key on a listener
// that names its keys only by alias or key id.
const answeredUnlistedByName = `listener "parent" may use only the keys the policy lists, and KMS answered with a key that matches none of them (policy: listeners.parent.keys)`

// check is one Allow call and the error it should give ("" for nil).
type check struct {
	name string
	call func(*Rules) error
	want string
}

func runChecks(t *testing.T, r *Rules, tests []check) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(r)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want allowed", err)
				}
				return
			}
			var d *Denied
			if !errors.As(err, &d) {
				t.Fatalf("got %v (%T), want a *Denied", err, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestAllowHardenedParent(t *testing.T) {
	r := mustParse(t, hardened).Rules(ListenerParent)
	ctx := map[string]string{"tenant": "acme", "env": "prod-1", "extra": "ignored"}
	runChecks(t, r, []check{
		// operations
		{"listed operation", func(r *Rules) error { return r.AllowOperation("Decrypt") }, ""},
		{"listed pass-through operation", func(r *Rules) error { return r.AllowOperation("ReEncrypt") }, ""},
		{"unlisted attested operation", func(r *Rules) error { return r.AllowOperation("GenerateDataKeyPair") },
			`listener "parent" may not call GenerateDataKeyPair (policy: listeners.parent.operations)`},
		{"unlisted pass-through operation", func(r *Rules) error { return r.AllowOperation("Sign") },
			`listener "parent" may not call Sign (policy: listeners.parent.operations)`},
		{"operation names are case-sensitive", func(r *Rules) error { return r.AllowOperation("decrypt") },
			`listener "parent" may not call "decrypt": not an operation kmsproxyd serves (policy: listeners.parent.operations)`},
		{"unknown operation", func(r *Rules) error { return r.AllowOperation("ScheduleKeyDeletion") },
			`listener "parent" may not call "ScheduleKeyDeletion": not an operation kmsproxyd serves (policy: listeners.parent.operations)`},
		{"empty operation", func(r *Rules) error { return r.AllowOperation("") },
			`listener "parent" may not call "": not an operation kmsproxyd serves (policy: listeners.parent.operations)`},

		// keys
		{"key ARN in the account", func(r *Rules) error { return r.AllowKey(keyARN) }, ""},
		{"key ARN in another region of the account", func(r *Rules) error {
			return r.AllowKey("arn:aws:kms:ap-south-2:111122223333:key/" + bareID)
		}, ""},
		{"alias name", func(r *Rules) error { return r.AllowKey("alias/app-payments") }, ""},
		{"alias prefix with nothing after it", func(r *Rules) error { return r.AllowKey("alias/app-") }, ""},
		{"multi-region key id", func(r *Rules) error { return r.AllowKey(mrkID) }, ""},
		{"key ARN in another account", func(r *Rules) error { return r.AllowKey(otherARN) },
			`listener "parent" may not use key "` + otherARN + `" (policy: listeners.parent.keys)`},
		{"bare key id does not match a key ARN pattern", func(r *Rules) error { return r.AllowKey(bareID) },
			`listener "parent" may not use key "` + bareID + `" (policy: listeners.parent.keys)`},
		{"alias ARN does not match an alias name pattern", func(r *Rules) error {
			return r.AllowKey("arn:aws:kms:us-east-1:111122223333:alias/app-payments")
		}, `listener "parent" may not use key "arn:aws:kms:us-east-1:111122223333:alias/app-payments" (policy: listeners.parent.keys)`},
		{"other alias", func(r *Rules) error { return r.AllowKey("alias/other") },
			`listener "parent" may not use key "alias/other" (policy: listeners.parent.keys)`},
		{"alias in the wrong case", func(r *Rules) error { return r.AllowKey("alias/App-payments") },
			`listener "parent" may not use key "alias/App-payments" (policy: listeners.parent.keys)`},
		{"multi-region key id one digit short", func(r *Rules) error { return r.AllowKey(mrkID[:len(mrkID)-1]) },
			`listener "parent" may not use key "` + mrkID[:len(mrkID)-1] + `" (policy: listeners.parent.keys)`},
		{"no key id", func(r *Rules) error { return r.AllowKey("") },
			`listener "parent" may use only the keys the policy lists, so the request must name its key: send KeyId (a key ARN or an alias) (policy: listeners.parent.keys)`},
		{"control characters are escaped", func(r *Rules) error { return r.AllowKey("alias/x\n\x00") },
			`listener "parent" may not use key "alias/x\n\x00" (policy: listeners.parent.keys)`},
		{"long key id is cut", func(r *Rules) error { return r.AllowKey("alias/" + strings.Repeat("x", 1000)) },
			`listener "parent" may not use key "alias/` + strings.Repeat("x", maxEcho-len("alias/")) + `"… (policy: listeners.parent.keys)`},

		// answered keys
		{"answered ARN matches", func(r *Rules) error { return r.AllowAnsweredKey("", keyARN) }, ""},
		{"alias resolved by KMS to a listed key", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-payments", keyARN) }, ""},
		{"alias resolved by KMS to an unlisted key", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-payments", otherARN) }, answeredUnlisted},
		{"multi-region key id resolved by KMS to a listed key", func(r *Rules) error {
			return r.AllowAnsweredKey(mrkID, "arn:aws:kms:us-east-1:111122223333:key/"+mrkID)
		}, ""},
		{"multi-region key id resolved by KMS to an unlisted key", func(r *Rules) error {
			return r.AllowAnsweredKey(mrkID, "arn:aws:kms:us-east-1:444455556666:key/"+mrkID)
		}, answeredUnlisted},
		{"requested key ARN but KMS answered another", func(r *Rules) error { return r.AllowAnsweredKey(keyARN, otherARN) }, answeredUnlisted},
		{"no requested key and an unlisted answer", func(r *Rules) error { return r.AllowAnsweredKey("", otherARN) }, answeredUnlisted},
		{"requested identifier smuggling an account through a star", func(r *Rules) error {
			return r.AllowAnsweredKey("arn:aws:kms:us-east-1:444455556666:key/x:111122223333:key/y", otherARN)
		}, answeredUnlisted},
		{"unlisted alias", func(r *Rules) error { return r.AllowAnsweredKey("alias/other", otherARN) }, answeredUnlisted},
		{"answer names no key", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-x", "") },
			`listener "parent" may use only the keys the policy lists, and KMS's answer names no key (policy: listeners.parent.keys)`},
		{"answer names no key and nothing requested", func(r *Rules) error { return r.AllowAnsweredKey("", "") },
			`listener "parent" may use only the keys the policy lists, and KMS's answer names no key (policy: listeners.parent.keys)`},

		// encryption context
		{"required context present", func(r *Rules) error { return r.AllowEncryptionContext(ctx) }, ""},
		{"empty tenant value matches *", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"tenant": "", "env": "prod-2"})
		}, ""},
		{"no context", func(r *Rules) error { return r.AllowEncryptionContext(nil) },
			`listener "parent" must send encryption context key "env" (policy: listeners.parent.encryption_context.env)`},
		{"one key missing", func(r *Rules) error { return r.AllowEncryptionContext(map[string]string{"env": "prod-1"}) },
			`listener "parent" must send encryption context key "tenant" (policy: listeners.parent.encryption_context.tenant)`},
		{"value does not match", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"tenant": "acme", "env": "prod-12"})
		}, `listener "parent" must send an encryption context value for "env" that matches "prod-?" (policy: listeners.parent.encryption_context.env)`},
		{"keys are case-sensitive", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"Tenant": "acme", "env": "prod-1"})
		}, `listener "parent" must send encryption context key "tenant" (policy: listeners.parent.encryption_context.tenant)`},
		{"values are case-sensitive", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"tenant": "acme", "env": "PROD-1"})
		}, `listener "parent" must send an encryption context value for "env" that matches "prod-?" (policy: listeners.parent.encryption_context.env)`},

		// plaintext, credentials, control
		{"plaintext allowed", func(r *Rules) error { return r.AllowPlaintext("Decrypt") }, ""},
		{"credentials push refused", func(r *Rules) error { return r.AllowCredentialsPush() },
			`listener "parent" may not push credentials (policy: listeners.parent.credentials_push)`},
		{"listed control", func(r *Rules) error { return r.AllowControl("metrics") }, ""},
		{"unlisted control", func(r *Rules) error { return r.AllowControl("readyz") },
			`listener "parent" may not use the readyz endpoint (policy: listeners.parent.control)`},
		{"unknown control", func(r *Rules) error { return r.AllowControl("credentials") },
			`listener "parent" may not use "credentials": not a control endpoint (policy: listeners.parent.control)`},
	})
	if !r.KeysRestricted() {
		t.Error("KeysRestricted() = false with keys listed")
	}
}

// TestAnsweredKeyMatchesKeyARNPatterns is an administrator of the pinned
// account moving the alias an app names its key by to a key of their own
// (once the key it pointed to is deleted, KMS deletes its aliases and the
// name is free again): a listener that lists the alias and the ARN of the
// key it means accepts only that key, whatever the alias points to; one
// that names its keys only by alias or key id accepts what the name leads
// to, and a bare key id only as the id KMS answers with.
func TestAnsweredKeyMatchesKeyARNPatterns(t *testing.T) {
	const (
		meant    = "arn:aws:kms:us-east-1:111122223333:key/0a0a0a0a-1111-4222-8333-444455556666"
		takeover = "arn:aws:kms:us-east-1:111122223333:key/0b0b0b0b-1111-4222-8333-444455556666"
	)
	bound := mustParse(t, `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    keys: ["alias/app-ledger", "`+meant+`"]
`).Rules(ListenerParent)
	runChecks(t, bound, []check{
		{"alias to the key it means", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-ledger", meant) }, ""},
		{"alias moved to another key", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-ledger", takeover) }, answeredUnlisted},
		{"the meant key by ARN", func(r *Rules) error { return r.AllowAnsweredKey(meant, meant) }, ""},
		{"no key named", func(r *Rules) error { return r.AllowAnsweredKey("", takeover) }, answeredUnlisted},
	})
	for _, tt := range []struct {
		pattern string
		names   bool
	}{
		{"arn:aws:kms:*:111122223333:key/*", true},
		{"arn:aws:kms:us-east-1:111122223333:*", true},
		{"arn:aws:kms:*", true},
		{"*", true},
		{"?rn:aws:kms:us-east-1:111122223333:key/x", true},
		{"alias/app-*", false},
		{"arn:aws:kms:us-east-1:111122223333:alias/app-*", false},
		{"*:alias/app-*", false},
		{"1234abcd-12ab-34cd-56ef-1234567890ab", false},
		{"mrk-*", false},
	} {
		if got := namesKeyARNs(tt.pattern); got != tt.names {
			t.Errorf("namesKeyARNs(%q) = %v, want %v", tt.pattern, got, tt.names)
		}
	}

	byName := mustParse(t, `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    keys: ["alias/app-*", "`+bareID+`", "mrk-*"]
`).Rules(ListenerParent)
	runChecks(t, byName, []check{
		{"alias, whatever key it leads to", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-ledger", takeover) }, ""},
		{"bare key id answered as itself", func(r *Rules) error { return r.AllowAnsweredKey(bareID, keyARN) }, ""},
		{"bare key id answered as another key", func(r *Rules) error { return r.AllowAnsweredKey(bareID, takeover) }, answeredUnlistedByName},
		{"multi-region key id answered as itself", func(r *Rules) error {
			return r.AllowAnsweredKey(mrkID, "arn:aws:kms:eu-west-1:111122223333:key/"+mrkID)
		}, ""},
		{"answer names an alias ARN", func(r *Rules) error {
			return r.AllowAnsweredKey("alias/app-ledger", "arn:aws:kms:us-east-1:111122223333:alias/app-ledger")
		}, answeredUnlistedByName},
		{"unlisted alias", func(r *Rules) error { return r.AllowAnsweredKey("alias/other", keyARN) }, answeredUnlistedByName},
	})
}

func TestAllowPassThroughOnly(t *testing.T) {
	r := mustParse(t, passThroughOnly).Rules(ListenerParent)
	var tests []check
	for _, op := range AttestedOperations {
		tests = append(tests,
			check{"operation " + op, func(r *Rules) error { return r.AllowOperation(op) }, ""},
			check{"plaintext " + op, func(r *Rules) error { return r.AllowPlaintext(op) },
				`listener "parent" may not receive plaintext, so it may not call ` + op + ` (policy: listeners.parent.plaintext)`})
	}
	for _, op := range PassThroughOperations {
		tests = append(tests,
			check{"operation " + op, func(r *Rules) error { return r.AllowOperation(op) }, ""},
			check{"plaintext " + op, func(r *Rules) error { return r.AllowPlaintext(op) }, ""})
	}
	for _, c := range ControlEndpoints {
		tests = append(tests, check{"control " + c, func(r *Rules) error { return r.AllowControl(c) }, ""})
	}
	tests = append(tests,
		check{"wildcard does not cover unknown operations", func(r *Rules) error { return r.AllowOperation("CreateKey") },
			`listener "parent" may not call "CreateKey": not an operation kmsproxyd serves (policy: listeners.parent.operations)`},
		check{"wildcard does not cover unknown control", func(r *Rules) error { return r.AllowControl("debug") },
			`listener "parent" may not use "debug": not a control endpoint (policy: listeners.parent.control)`},
		check{"credentials push", func(r *Rules) error { return r.AllowCredentialsPush() }, ""},
		check{"any key", func(r *Rules) error { return r.AllowKey(otherARN) }, ""},
		check{"no key needed", func(r *Rules) error { return r.AllowKey("") }, ""},
		check{"any answered key", func(r *Rules) error { return r.AllowAnsweredKey("", otherARN) }, ""},
		check{"no context needed", func(r *Rules) error { return r.AllowEncryptionContext(nil) }, ""},
	)
	runChecks(t, r, tests)
	if r.KeysRestricted() {
		t.Error("KeysRestricted() = true without keys")
	}
}

func TestAllowAbsentListener(t *testing.T) {
	p := mustParse(t, hardened)
	const absent = ": the listener is not in the policy, so it may use only healthz and readyz"
	for _, name := range []string{ListenerLocal, "sidecar"} {
		t.Run(name, func(t *testing.T) {
			r := p.Rules(name)
			if r == nil {
				t.Fatal("Rules returned nil")
			}
			runChecks(t, r, []check{
				{"operation", func(r *Rules) error { return r.AllowOperation("Encrypt") },
					`listener "` + name + `" may not call Encrypt` + absent + ` (policy: listeners.` + name + `)`},
				{"plaintext", func(r *Rules) error { return r.AllowPlaintext("GenerateRandom") },
					`listener "` + name + `" may not receive plaintext, so it may not call GenerateRandom` + absent + ` (policy: listeners.` + name + `)`},
				{"credentials", func(r *Rules) error { return r.AllowCredentialsPush() },
					`listener "` + name + `" may not push credentials` + absent + ` (policy: listeners.` + name + `)`},
				{"metrics", func(r *Rules) error { return r.AllowControl("metrics") },
					`listener "` + name + `" may not use the metrics endpoint` + absent + ` (policy: listeners.` + name + `)`},
				{"healthz", func(r *Rules) error { return r.AllowControl("healthz") }, ""},
				{"readyz", func(r *Rules) error { return r.AllowControl("readyz") }, ""},
			})
		})
	}
	var nilPolicy *Policy
	if err := nilPolicy.Rules(ListenerParent).AllowOperation("Decrypt"); err == nil {
		t.Error("a nil policy allowed an operation")
	}
}

func TestAllowEmptyListener(t *testing.T) {
	// Present but empty: every file default applies, and denials name the
	// field rather than the listener.
	r := mustParse(t, "listeners:\n  local: {}\n").Rules(ListenerLocal)
	runChecks(t, r, []check{
		{"operation", func(r *Rules) error { return r.AllowOperation("Encrypt") },
			`listener "local" may not call Encrypt (policy: listeners.local.operations)`},
		{"plaintext", func(r *Rules) error { return r.AllowPlaintext("Decrypt") },
			`listener "local" may not receive plaintext, so it may not call Decrypt (policy: listeners.local.plaintext)`},
		{"credentials", func(r *Rules) error { return r.AllowCredentialsPush() },
			`listener "local" may not push credentials (policy: listeners.local.credentials_push)`},
		{"info", func(r *Rules) error { return r.AllowControl("info") },
			`listener "local" may not use the info endpoint (policy: listeners.local.control)`},
		{"readyz", func(r *Rules) error { return r.AllowControl("readyz") }, ""},
		{"any key", func(r *Rules) error { return r.AllowKey(otherARN) }, ""},
	})

	none := mustParse(t, "listeners:\n  local:\n    control: []\n").Rules(ListenerLocal)
	runChecks(t, none, []check{
		{"healthz closed", func(r *Rules) error { return r.AllowControl("healthz") },
			`listener "local" may not use the healthz endpoint (policy: listeners.local.control)`},
	})
}

func TestEncryptionContextOddKeys(t *testing.T) {
	r := mustParse(t, "listeners:\n  parent:\n    encryption_context:\n      \"aws:ebs:id\": \"vol-*\"\n      \"a b\": \"*\"\n").Rules(ListenerParent)
	runChecks(t, r, []check{
		{"both present", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"aws:ebs:id": "vol-0abc", "a b": "x"})
		}, ""},
		{"quoted path for a key with a space", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"aws:ebs:id": "vol-0abc"})
		}, `listener "parent" must send encryption context key "a b" (policy: listeners.parent.encryption_context["a b"])`},
		{"quoted path for a key with colons", func(r *Rules) error {
			return r.AllowEncryptionContext(map[string]string{"aws:ebs:id": "snap-1", "a b": "x"})
		}, `listener "parent" must send an encryption context value for "aws:ebs:id" that matches "vol-*" (policy: listeners.parent.encryption_context["aws:ebs:id"])`},
	})
}

func TestDeniedFields(t *testing.T) {
	err := mustParse(t, hardened).Rules(ListenerParent).AllowOperation("GenerateDataKeyPair")
	var got *Denied
	if !errors.As(err, &got) {
		t.Fatalf("got %v, want a *Denied", err)
	}
	want := &Denied{Listener: "parent", Rule: "listeners.parent.operations", Reason: "may not call GenerateDataKeyPair"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Denied (-want +got):\n%s", diff)
	}
}

func TestEcho(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"short", "alias/x", `"alias/x"`},
		{"exactly the limit", strings.Repeat("a", maxEcho), `"` + strings.Repeat("a", maxEcho) + `"`},
		{"one past the limit", strings.Repeat("a", maxEcho+1), `"` + strings.Repeat("a", maxEcho) + `"…`},
		{"cut on a character boundary", strings.Repeat("a", maxEcho-1) + "é", `"` + strings.Repeat("a", maxEcho-1) + `"…`},
		{"invalid UTF-8", "\xff", `"\xff"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := echo(tt.in); got != tt.want {
				t.Errorf("echo = %s, want %s", got, tt.want)
			}
		})
	}
}

// BenchmarkAllowRequest is the policy's per-request cost in kmsproxyd: every
// check a Decrypt on the hardened parent listener goes through.
func BenchmarkAllowRequest(b *testing.B) {
	r := mustParse(b, hardened).Rules(ListenerParent)
	ctx := map[string]string{"tenant": "acme", "env": "prod-1"}
	b.ReportAllocs()
	for b.Loop() {
		if r.AllowOperation("Decrypt") != nil || r.AllowPlaintext("Decrypt") != nil ||
			r.AllowKey("alias/app-payments") != nil || r.AllowEncryptionContext(ctx) != nil ||
			r.AllowAnsweredKey("alias/app-payments", keyARN) != nil {
			b.Fatal("denied")
		}
	}
}

// BenchmarkAllowDenied is the cost of a refusal, which builds a message.
func BenchmarkAllowDenied(b *testing.B) {
	r := mustParse(b, hardened).Rules(ListenerParent)
	b.ReportAllocs()
	for b.Loop() {
		if r.AllowKey(otherARN) == nil {
			b.Fatal("allowed")
		}
	}
}
