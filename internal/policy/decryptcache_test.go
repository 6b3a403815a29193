package policy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// cachePolicy is the decrypt_cache shape the documentation and the
// benchmark use.
const cachePolicy = `listeners:
  local:
    operations: [Decrypt, GenerateDataKey]
    plaintext: true
    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}
`

func TestParseDecryptCache(t *testing.T) {
	tests := []struct {
		name string
		text string
		want map[string]*DecryptCache
	}{
		{
			name: "the documented shape",
			text: cachePolicy,
			want: map[string]*DecryptCache{ListenerLocal: {MaxAge: 5 * time.Minute, MaxUses: 1000, MaxEntries: 10000}},
		},
		{
			name: "block style, every operation, the upper bounds",
			text: "listeners:\n  parent:\n    operations: [\"*\"]\n    plaintext: true\n    decrypt_cache:\n      max_entries: 100000\n      max_uses: 1000000\n      max_age: 1h\n",
			want: map[string]*DecryptCache{ListenerParent: {MaxAge: time.Hour, MaxUses: MaxDecryptCacheUses, MaxEntries: MaxDecryptCacheEntries}},
		},
		{
			name: "the lower bounds",
			text: "listeners:\n  parent:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 1s, max_uses: 1, max_entries: 1}\n",
			want: map[string]*DecryptCache{ListenerParent: {MaxAge: time.Second, MaxUses: 1, MaxEntries: 1}},
		},
		{
			name: "both listeners, each its own",
			text: "listeners:\n  parent:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 90s, max_uses: 10, max_entries: 50}\n" +
				"  local:\n    operations: [Decrypt]\n    plaintext: true\n    decrypt_cache: {max_age: 1h0m0s, max_uses: 1000, max_entries: 10000}\n",
			want: map[string]*DecryptCache{
				ListenerParent: {MaxAge: 90 * time.Second, MaxUses: 10, MaxEntries: 50},
				ListenerLocal:  {MaxAge: time.Hour, MaxUses: 1000, MaxEntries: 10000},
			},
		},
		{
			name: "omitted: no cache",
			text: "listeners:\n  parent:\n    operations: [Decrypt]\n    plaintext: true\n",
			want: map[string]*DecryptCache{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustParse(t, tt.text)
			for _, l := range Listeners {
				if diff := cmp.Diff(tt.want[l], p.Rules(l).DecryptCache); diff != "" {
					t.Errorf("%s decrypt_cache (-want +got):\n%s", l, diff)
				}
			}
		})
	}
	for _, l := range Listeners {
		if dc := Default().Rules(l).DecryptCache; dc != nil {
			t.Errorf("the built-in default caches on %s: %+v", l, dc)
		}
	}
}

// TestDecryptCacheShown checks that /v1/info's summary and the YAML form
// show the cache as the file wrote it, and that the YAML form parses back
// to the same bounds.
func TestDecryptCacheShown(t *testing.T) {
	p := mustParse(t, cachePolicy)
	b, err := json.Marshal(p.Summary().Listeners[ListenerLocal])
	if err != nil {
		t.Fatal(err)
	}
	if want := `"decrypt_cache":{"max_age":"5m0s","max_uses":1000,"max_entries":10000}`; !strings.Contains(string(b), want) {
		t.Errorf("summary of the local listener = %s, want it to contain %s", b, want)
	}
	if b, _ := json.Marshal(p.Summary().Listeners[ListenerParent]); strings.Contains(string(b), "decrypt_cache") {
		t.Errorf("summary of the parent listener, which has no cache, = %s", b)
	}
	out, err := yaml.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := "decrypt_cache: {max_age: 5m0s, max_uses: 1000, max_entries: 10000}"; !strings.Contains(string(out), want) {
		t.Errorf("YAML form:\n%s\nwant it to contain %s", out, want)
	}
	again := mustParse(t, string(out))
	if diff := cmp.Diff(p.Rules(ListenerLocal).DecryptCache, again.Rules(ListenerLocal).DecryptCache); diff != "" {
		t.Errorf("decrypt_cache after a round trip (-want +got):\n%s", diff)
	}

	// The summary holds a copy.
	p.Summary().Listeners[ListenerLocal].DecryptCache.MaxUses = 1
	if got := p.Rules(ListenerLocal).DecryptCache.MaxUses; got != 1000 {
		t.Errorf("changing the summary changed the policy's max_uses to %d", got)
	}
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second: "1s", time.Hour: "1h", 5 * time.Minute: "5m", 90 * time.Minute: "1h30m", 61 * time.Second: "1m1s",
	} {
		if got := fmtDuration(d); got != want {
			t.Errorf("fmtDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
