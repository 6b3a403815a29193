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
	if got := p.Warnings(); len(got) != 0 {
		t.Errorf("Warnings() = %q, want none", got)
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
	for _, tt := range []struct {
		name string
		p    *Policy
		want int // warnings
	}{
		{"default", Default(), 2},
		{"file without kms", mustParse(t, "listeners: {}\n"), 1},
		{"file with regions only", mustParse(t, "kms:\n  regions: [eu-west-1]\nlisteners: {}\n"), 1},
		{"file with accounts", mustParse(t, "kms:\n  accounts: [\"111122223333\"]\nlisteners: {}\n"), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.p.Warnings()
			if len(w) != tt.want {
				t.Fatalf("Warnings() = %q, want %d", w, tt.want)
			}
			if tt.want > 0 && !strings.Contains(w[len(w)-1], "kms.accounts") {
				t.Errorf("the last warning %q does not name kms.accounts", w[len(w)-1])
			}
		})
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
