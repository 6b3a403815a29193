package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// pinned pins two accounts and one region and sets every limit; the local
// listener restricts no key, as in the shipped policies.
const pinned = `kms:
  accounts: ["111122223333", "777788889999"]
  regions: [eu-west-1]
listeners:
  parent:
    operations: [Decrypt, GenerateDataKey, GenerateRandom]
    keys: ["alias/app-*", "arn:*:kms:*:*:key/*"]
    encryption_context: {tenant: "*"}
    without_encryption_context: [GenerateRandom]
    plaintext: true
    max_inflight: 8
    max_connections: 32
  local:
    operations: ["*"]
    plaintext: true
    metrics_all_listeners: true
`

func TestParsePin(t *testing.T) {
	p := mustParse(t, pinned)
	want := &Pin{Accounts: []string{"111122223333", "777788889999"}, Regions: []string{"eu-west-1"}}
	if diff := cmp.Diff(want, p.KMS(), cmpopts.IgnoreUnexported(Pin{})); diff != "" {
		t.Errorf("KMS() (-want +got):\n%s", diff)
	}
	if got := p.AccountsWarning(); got != "" {
		t.Errorf("AccountsWarning() = %q with accounts pinned", got)
	}
	if got := p.Warnings(); len(got) != 1 || got[0] != p.KeysWarning() {
		t.Errorf("Warnings() = %q, want only KeysWarning", got)
	}
	for _, tt := range []struct {
		name       string
		r          *Rules
		inflight   int
		conns      int
		allMetrics bool
	}{
		{"parent", p.Rules(ListenerParent), 8, 32, false},
		{"local", p.Rules(ListenerLocal), 256, DefaultMaxConnections, true},
	} {
		if got := tt.r.InflightLimit(256); got != tt.inflight {
			t.Errorf("%s: InflightLimit(256) = %d, want %d", tt.name, got, tt.inflight)
		}
		if got := tt.r.ConnectionLimit(); got != tt.conns {
			t.Errorf("%s: ConnectionLimit() = %d, want %d", tt.name, got, tt.conns)
		}
		if tt.r.MetricsAllListeners != tt.allMetrics {
			t.Errorf("%s: MetricsAllListeners = %v, want %v", tt.name, tt.r.MetricsAllListeners, tt.allMetrics)
		}
	}
	sum := p.Summary()
	if sum.KMS == nil || !cmp.Equal(sum.KMS.Accounts, want.Accounts) || !cmp.Equal(sum.KMS.Regions, want.Regions) {
		t.Errorf("Summary().KMS = %+v, want the pin", sum.KMS)
	}
}

func TestAccountsWarning(t *testing.T) {
	const key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	for _, tt := range []struct {
		name string
		p    *Policy
		want []string // a word each warning must hold, in order
	}{
		{"default", Default(), []string{"built-in default", "kms.accounts"}},
		{"file without kms", mustParse(t, "listeners: {}\n"), []string{"kms.accounts"}},
		{"file with regions only", mustParse(t, "kms:\n  regions: [eu-west-1]\nlisteners: {}\n"), []string{"kms.accounts"}},
		{"file with accounts", mustParse(t, "kms:\n  accounts: [\"111122223333\"]\nlisteners: {}\n"), []string{"kms.keys"}},
		{"file with accounts and keys", mustParse(t, "kms:\n  accounts: [\"111122223333\"]\n  keys: [\""+key+"\"]\nlisteners: {}\n"), nil},
		{"file with keys that name their account", mustParse(t, "kms:\n  keys: [\""+key+"\"]\nlisteners: {}\n"), nil},
		{"file with keys of any account", mustParse(t, "kms:\n  keys: [\"arn:aws:kms:eu-west-1:*:key/1234abcd-*\"]\nlisteners: {}\n"), []string{"kms.accounts"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.p.Warnings()
			if len(w) != len(tt.want) {
				t.Fatalf("Warnings() = %q, want %d", w, len(tt.want))
			}
			for i, word := range tt.want {
				if !strings.Contains(w[i], word) {
					t.Errorf("warning %d %q does not name %s", i, w[i], word)
				}
			}
		})
	}
	// The keys warning names the pinned accounts and who can plant keys.
	w := mustParse(t, "kms:\n  accounts: [\"111122223333\", \"777788889999\"]\nlisteners: {}\n").KeysWarning()
	for _, part := range []string{`pinned accounts "111122223333" and "777788889999" is accepted`, "kms:CreateKey", "instance role", "without KeyId"} {
		if !strings.Contains(w, part) {
			t.Errorf("KeysWarning() = %q, lacks %q", w, part)
		}
	}
}

// pinnedKeys pins two keys of the account: one key ARN, and the replicas
// of one multi-Region key in every region.
const pinnedKeys = `kms:
  accounts: ["111122223333"]
  keys:
    - "arn:aws:kms:eu-west-1:111122223333:key/0a0a0a0a-1111-4222-8333-444455556666"
    - "arn:aws:kms:*:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
listeners:
  parent:
    operations: ["*"]
    plaintext: true
  local:
    operations: ["*"]
    plaintext: true
`

// TestAllowAnsweredKeyPinnedKeys is the parent instance, holding the
// instance role's credentials, creating a key of its own in the pinned
// account and planting a ciphertext under it for an enclave app that
// decrypts without KeyId (or a moved alias leading there): with kms.keys,
// every answer naming another key of the account is refused, on every
// listener, whatever the request named.
func TestAllowAnsweredKeyPinnedKeys(t *testing.T) {
	p := mustParse(t, pinnedKeys)
	const (
		own     = "arn:aws:kms:eu-west-1:111122223333:key/0a0a0a0a-1111-4222-8333-444455556666"
		replica = "arn:aws:kms:ap-south-2:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
		planted = "arn:aws:kms:eu-west-1:111122223333:key/0b0b0b0b-1111-4222-8333-444455556666"
		foreign = "arn:aws:kms:eu-west-1:444455556666:key/0a0a0a0a-1111-4222-8333-444455556666"
	)
	otherKey := "may use only the keys the policy names, and KMS answered with another key: a request that names its key by alias, " +
		"by bare key id or not at all (Decrypt) is answered with whichever key the alias or the ciphertext names, " +
		"which anyone who may create keys or move aliases in the account can choose (policy: kms.keys)"
	wrongAccount := "may use only keys of the accounts the policy names, and KMS answered with a key of another account: " +
		"the credentials kmsproxyd was given (by IMDS or a push from the parent instance) belong to an account the policy does not name (policy: kms.accounts)"
	for _, listener := range Listeners {
		prefix := `listener "` + listener + `" `
		runChecks(t, p.Rules(listener), []check{
			{"pinned key, nothing requested", func(r *Rules) error { return r.AllowAnsweredKey("", own) }, ""},
			{"pinned key by alias", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-data", own) }, ""},
			{"replica of the pinned multi-Region key", func(r *Rules) error { return r.AllowAnsweredKey("", replica) }, ""},
			{"planted key, nothing requested", func(r *Rules) error { return r.AllowAnsweredKey("", planted) }, prefix + otherKey},
			{"planted key by alias", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-data", planted) }, prefix + otherKey},
			{"planted key by ARN", func(r *Rules) error { return r.AllowAnsweredKey(planted, planted) }, prefix + otherKey},
			{"pinned key id in another account", func(r *Rules) error { return r.AllowAnsweredKey("", foreign) }, prefix + wrongAccount},
		})
	}
	// Keys alone pin the accounts their ARNs name.
	alone := mustParse(t, "kms:\n  keys: [\""+own+"\"]\nlisteners:\n  local:\n    operations: [\"*\"]\n    plaintext: true\n")
	runChecks(t, alone.Rules(ListenerLocal), []check{
		{"pinned key", func(r *Rules) error { return r.AllowAnsweredKey("", own) }, ""},
		{"same id in another account", func(r *Rules) error { return r.AllowAnsweredKey("", foreign) }, `listener "local" ` + otherKey},
		{"answer names no key", func(r *Rules) error { return r.AllowAnsweredKey("", "") },
			`listener "local" may use only keys of the accounts and regions the policy names, and KMS's answer names no key ARN, so kmsproxyd cannot tell whose key it used (policy: kms.keys)`},
	})
	if sum := p.Summary(); sum.KMS == nil || len(sum.KMS.Keys) != 2 {
		t.Errorf("Summary().KMS = %+v, want both keys", sum.KMS)
	}
}

func TestHome(t *testing.T) {
	for _, tt := range []struct {
		region, partition string
	}{
		{"us-east-1", "aws"},
		{"eu-central-2", "aws"},
		{"il-central-1", "aws"},
		{"cn-northwest-1", "aws-cn"},
		{"us-gov-west-1", "aws-us-gov"},
		{"us-iso-east-1", "aws-iso"},
		{"us-isob-east-1", "aws-iso-b"},
		{"eu-isoe-west-1", "aws-iso-e"},
		{"us-isof-south-1", "aws-iso-f"},
		{"eusc-de-east-1", "aws-eusc"},
	} {
		if got := HomeOf(tt.region); got != (Home{Partition: tt.partition, Region: tt.region}) {
			t.Errorf("HomeOf(%s) = %+v, want partition %s", tt.region, got, tt.partition)
		}
	}
	h := HomeOf("us-gov-west-1")
	for _, tt := range []struct {
		arn  string
		want bool
	}{
		{"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", true},
		{"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", true},
		{"arn:aws-us-gov:kms:us-gov-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", false},
		{"arn:aws:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", false},
		{"arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/app", false},
		{"", false},
	} {
		if got := h.Contains(tt.arn); got != tt.want {
			t.Errorf("Home(us-gov-west-1).Contains(%q) = %v, want %v", tt.arn, got, tt.want)
		}
	}
}

// TestAllowAnsweredKeyPinned is the check that keeps the parent instance
// from choosing the account: whatever the request named, a key KMS answered
// with is refused unless its ARN is in a pinned account and region, on
// every listener, keys rule or not.
func TestAllowAnsweredKeyPinned(t *testing.T) {
	p := mustParse(t, pinned)
	const (
		own     = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		second  = "arn:aws:kms:eu-west-1:777788889999:key/mrk-1234abcd12ab34cd56ef1234567890ab"
		foreign = "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		region  = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		cnARN   = "arn:aws-cn:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	)
	wrongAccount := "may use only keys of the accounts the policy names, and KMS answered with a key of another account: " +
		"the credentials kmsproxyd was given (by IMDS or a push from the parent instance) belong to an account the policy does not name (policy: kms.accounts)"
	wrongRegion := "may use only keys in the regions the policy names, and KMS answered with a key in another region (policy: kms.regions)"
	noARN := "may use only keys of the accounts and regions the policy names, and KMS's answer names no key ARN, so kmsproxyd cannot tell whose key it used (policy: kms.accounts)"
	for _, listener := range Listeners {
		r := p.Rules(listener)
		prefix := `listener "` + listener + `" `
		runChecks(t, r, []check{
			{"own account by alias", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-data", own) }, ""},
			{"second pinned account by ARN", func(r *Rules) error { return r.AllowAnsweredKey(second, second) }, ""},
			{"own account, no key requested", func(r *Rules) error { return r.AllowAnsweredKey("", own) }, ""},
			{"own account, another partition", func(r *Rules) error { return r.AllowAnsweredKey("", cnARN) }, ""},
			{"foreign account by alias", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-data", foreign) }, prefix + wrongAccount},
			{"foreign account by bare id", func(r *Rules) error {
				return r.AllowAnsweredKey("1234abcd-12ab-34cd-56ef-1234567890ab", foreign)
			}, prefix + wrongAccount},
			{"foreign account by alias ARN", func(r *Rules) error {
				return r.AllowAnsweredKey("arn:aws:kms:eu-west-1:111122223333:alias/app-data", foreign)
			}, prefix + wrongAccount},
			{"foreign account by key ARN", func(r *Rules) error { return r.AllowAnsweredKey(foreign, foreign) }, prefix + wrongAccount},
			{"foreign account, no key requested", func(r *Rules) error { return r.AllowAnsweredKey("", foreign) }, prefix + wrongAccount},
			{"own account in another region", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-data", region) }, prefix + wrongRegion},
			{"answer names no key", func(r *Rules) error { return r.AllowAnsweredKey("alias/app-data", "") }, prefix + noARN},
			{"answer names an alias", func(r *Rules) error {
				return r.AllowAnsweredKey("alias/app-data", "arn:aws:kms:eu-west-1:111122223333:alias/app-data")
			}, prefix + noARN},
			{"answer names a bare key id", func(r *Rules) error {
				return r.AllowAnsweredKey("alias/app-data", "1234abcd-12ab-34cd-56ef-1234567890ab")
			}, prefix + noARN},
			{"answer with the account smuggled in", func(r *Rules) error {
				return r.AllowAnsweredKey("", "arn:aws:kms:eu-west-1:444455556666:key/x:111122223333:key/y")
			}, prefix + noARN},
		})
	}
	// The refusal never repeats the key or account KMS answered with.
	err := p.Rules(ListenerLocal).AllowAnsweredKey("alias/app-data", foreign)
	if err == nil || strings.Contains(err.Error(), "444455556666") {
		t.Errorf("refusal %q names the answered account", err)
	}
}

func TestAllowRegion(t *testing.T) {
	p := mustParse(t, pinned)
	if err := p.AllowRegion("eu-west-1", "--region"); err != nil {
		t.Errorf("AllowRegion(eu-west-1) = %v", err)
	}
	err := p.AllowRegion("us-east-1", "IMDS (placement/region)")
	want := `policy.yaml:3:12: kms.regions: IMDS (placement/region) names region "us-east-1", but the policy allows only "eu-west-1"; ` +
		`kmsproxyd uses only the regions its policy names: run it in one of them, or add us-east-1 to kms.regions and rebuild the enclave image`
	if err == nil || err.Error() != want {
		t.Errorf("AllowRegion(us-east-1)\n got: %v\nwant: %s", err, want)
	}
	for _, p := range []*Policy{Default(), mustParse(t, "kms:\n  accounts: [\"111122223333\"]\nlisteners: {}\n")} {
		if err := p.AllowRegion("ap-south-2", "--region"); err != nil {
			t.Errorf("AllowRegion without kms.regions = %v", err)
		}
	}
}

func TestWithoutEncryptionContext(t *testing.T) {
	p := mustParse(t, `listeners:
  parent:
    operations: ["*"]
    plaintext: true
    encryption_context: {tenant: "*"}
    without_encryption_context: [GetPublicKey]
  local:
    operations: ["*"]
    plaintext: true
    encryption_context: {tenant: "*"}
    without_encryption_context: ["*"]
`)
	parent, local := p.Rules(ListenerParent), p.Rules(ListenerLocal)
	for _, op := range allOperations {
		carries := strings.Contains(" "+strings.Join(ContextOperations, " ")+" ", " "+op+" ")
		err := parent.AllowOperation(op)
		switch {
		case carries || op == "GetPublicKey":
			if err != nil {
				t.Errorf("parent: AllowOperation(%s) = %v", op, err)
			}
		default:
			want := `listener "parent" must send an encryption context, and ` + op + ` carries none: ` +
				`name it under without_encryption_context to allow it on this listener anyway (policy: listeners.parent.encryption_context)`
			if err == nil || err.Error() != want {
				t.Errorf("parent: AllowOperation(%s)\n got: %v\nwant: %s", op, err, want)
			}
		}
		if err := local.AllowOperation(op); err != nil {
			t.Errorf("local: AllowOperation(%s) = %v", op, err)
		}
	}
	// Without an encryption_context rule nothing changes.
	r := mustParse(t, "listeners:\n  parent:\n    operations: [\"*\"]\n    plaintext: true\n").Rules(ListenerParent)
	for _, op := range allOperations {
		if err := r.AllowOperation(op); err != nil {
			t.Errorf("no context rule: AllowOperation(%s) = %v", op, err)
		}
	}
}

// TestPinKeysRefusesEveryPatternThatPinsNoKey: kms.keys refuses not only
// "key/*" but every pattern that matches any key id KMS generates (a UUID:
// KMS Developer Guide, "Key identifiers (KeyId)"; or a multi-Region key's
// mrk- id): the account's every key, an attacker's new one included
// (kms:CreateKey), would be accepted, and the start-up warning about
// kms.keys being absent would not be printed because it is not absent.
func TestPinKeysRefusesEveryPatternThatPinsNoKey(t *testing.T) {
	const attackersNewKey = "arn:aws:kms:us-east-1:111122223333:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	for _, id := range []string{"?*", "*?", "*-*", "????????-????-????-????-????????????", "*?*"} {
		t.Run(id, func(t *testing.T) {
			text := "kms:\n  accounts: [\"111122223333\"]\n  keys: [\"arn:aws:kms:us-east-1:111122223333:key/" + id + "\"]\nlisteners: {}\n"
			p, err := Parse([]byte(text), "policy.yaml")
			if err == nil {
				denied := p.Rules("parent").AllowAnsweredKey("", attackersNewKey)
				t.Fatalf("kms.keys key/%s loaded (a new key of the account is then allowed: %v), want the error that it matches every key id and so pins no key", id, denied == nil)
			}
			if !strings.Contains(err.Error(), "pins no key") {
				t.Errorf("error %q does not say that the pattern pins no key", err)
			}
		})
	}
}

// TestRegionsOfEveryPartition: kms.regions takes the region names of every
// partition, the European Sovereign Cloud's four-letter prefix included.
func TestRegionsOfEveryPartition(t *testing.T) {
	text := "kms:\n  accounts: [\"111122223333\"]\n  regions: [eu-west-1, us-gov-west-1, cn-northwest-1, us-isob-east-1, eusc-de-east-1]\nlisteners: {}\n"
	if _, err := Parse([]byte(text), "policy.yaml"); err != nil {
		t.Fatal(err)
	}
}
