package policy

import (
	"strings"
	"testing"
)

// TestPinKeysRefusesEveryPatternThatPinsNoKey (review, failing test): the
// parser refuses kms.keys "key/*" because it "matches every key id and so
// pins no key", but it checks only for an id made of stars
// (checkPinnedKey: strings.Trim(id, "*") == ""). Other patterns that match
// every key id KMS makes load without a word and pin no key either: the
// account's every key, an attacker's new one included (kms:CreateKey), is
// then accepted, and the start-up warning about kms.keys being absent is
// not printed because it is not absent. The patterns below each match any
// key id KMS generates (a UUID: KMS Developer Guide, "Key identifiers
// (KeyId)"; every one holds a hyphen).
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
