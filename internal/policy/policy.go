package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Listener names, the keys under listeners: in a policy file.
const (
	// ListenerParent is the API kmsproxyd serves to the parent instance
	// (--listen-parent, vsock).
	ListenerParent = "parent"
	// ListenerLocal is the API kmsproxyd serves to apps inside the enclave
	// (--listen-local, loopback).
	ListenerLocal = "local"
)

// Listeners lists the listener names a policy file may configure.
var Listeners = []string{ListenerParent, ListenerLocal}

// AttestedOperations are the KMS operations kmsproxyd sends with the
// enclave's attestation (Recipient) and whose answer carries a secret it
// decrypts inside the enclave: Decrypt and GenerateDataKey → Plaintext,
// GenerateDataKeyPair → PrivateKeyPlaintext, GenerateRandom → Plaintext,
// DeriveSharedSecret → SharedSecret (KMS API reference, "Recipient" of each
// operation). They are the operations the plaintext rule governs.
var AttestedOperations = []string{"Decrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom", "DeriveSharedSecret"}

// PassThroughOperations are the KMS operations kmsproxyd forwards unchanged:
// none of their answers carries plaintext.
var PassThroughOperations = []string{"Encrypt", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPairWithoutPlaintext", "ReEncrypt", "DescribeKey", "GetPublicKey", "Sign", "Verify", "GenerateMac", "VerifyMac"}

// ControlEndpoints are kmsproxyd's own endpoints a policy can open to a
// listener: GET /healthz, GET /readyz, GET /metrics, GET /v1/info and
// POST /v1/attestation. PUT /v1/credentials is governed by credentials_push.
var ControlEndpoints = []string{"healthz", "readyz", "metrics", "info", "attestation"}

// defaultControl is what a listener in a policy file may use when it omits
// control: liveness and readiness only, which tell nothing about keys.
var defaultControl = []string{"healthz", "readyz"}

// ContextOperations are the operations whose request carries an
// encryption context (EncryptionContext, or for ReEncrypt
// SourceEncryptionContext and DestinationEncryptionContext; KMS API
// reference of each operation). A listener's encryption_context rule is
// checked on them; every other operation carries none, and a listener with
// that rule refuses it unless without_encryption_context names it.
var ContextOperations = []string{"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"}

// contextFreeOperations are the operations that carry no encryption
// context: the names without_encryption_context may list.
var contextFreeOperations = slices.DeleteFunc(slices.Concat(AttestedOperations, PassThroughOperations),
	func(op string) bool { return slices.Contains(ContextOperations, op) })

// Per-listener connection and request limits.
const (
	// DefaultMaxConnections is a listener's open-connection limit when the
	// policy sets no max_connections. kmsproxyd takes up about 23 KiB per
	// open connection (3,000 idle ones took it from 29 to 97 MB) and reads
	// up to a 64 KiB body on each, so 256 connections hold at most about
	// 22 MiB; 256 is also the default in-flight budget (--max-inflight),
	// and HTTP/1.1 serves one request per connection at a time.
	DefaultMaxConnections = 256
	// MaxConnectionsLimit bounds max_connections: 4096 connections may hold
	// about 350 MiB (see DefaultMaxConnections), more than a typical
	// enclave's memory.
	MaxConnectionsLimit = 4096
	// MaxInflightLimit bounds max_inflight, for the same reason.
	MaxInflightLimit = 4096
)

// Bounds of a listener's decrypt_cache. Every field is required, and each
// has an upper bound, because each is a bound on what the cache changes:
// how long a KMS decision outlives KMS, how many answers one KMS
// authorization yields, and how much plaintext kmsproxyd holds.
const (
	// MinDecryptCacheAge is the shortest max_age: below a second a cache
	// saves nothing a caller would notice.
	MinDecryptCacheAge = time.Second
	// MaxDecryptCacheAge bounds max_age, the longest a disabled key, a
	// revoked grant or a changed key policy can go unnoticed by callers
	// that kmsproxyd answers from its cache. An hour is also kmsproxyd's
	// default --key-rotation; KMS itself takes "usually less than five
	// minutes" to make a grant change take effect everywhere (KMS API
	// reference, RevokeGrant, "eventual consistency"), so an hour is twelve
	// times KMS's own lag. Longer means the application wants to keep the
	// plaintext itself, and should.
	MaxDecryptCacheAge = time.Hour
	// MaxDecryptCacheUses bounds max_uses, the answers one entry gives
	// before it is dropped and the next identical request goes to KMS
	// (and to CloudTrail) again. A million uses within MaxDecryptCacheAge
	// is about 280 a second for a whole hour from one ciphertext; an
	// application that needs more keeps the data key itself.
	MaxDecryptCacheUses = 1_000_000
	// MaxDecryptCacheEntries bounds max_entries. An entry holds the
	// encoded answer (a plaintext of at most 4096 bytes, cms.MaxPlaintext,
	// in base64, with KeyId, KeyMaterialId and EncryptionAlgorithm; at most
	// DecryptCacheEntryBytes) and its bookkeeping: about 600 bytes of heap
	// for a 32-byte data key and 6.4 KiB for a 4096-byte plaintext
	// (internal/proxy BenchmarkDecryptCacheMemory). 100,000 entries thus
	// take about 55 MiB of data keys and at most about 615 MiB: size
	// max_entries to the enclave's memory (memory_mib in run-enclave.json).
	MaxDecryptCacheEntries = 100_000
	// DecryptCacheEntryBytes bounds one cached answer: the JSON of a
	// Decrypt answer with a 4096-byte plaintext is about 5.6 KiB (5,464
	// bytes of base64, a key ARN of at most about 100 bytes, a
	// KeyMaterialId of 64, the algorithm and the member names); an answer
	// longer than this is not cached.
	DecryptCacheEntryBytes = 8 << 10
)

// DecryptCache is a listener's decrypt_cache: an opt-in cache of Decrypt
// answers inside kmsproxyd, bounded like the AWS Encryption SDK's caching
// cryptographic materials manager (maximum age, uses per entry, entries).
// kmsproxyd answers a Decrypt request from it only when the request is
// identical, in everything KMS authorized, to the one KMS answered, on the
// same listener, under the same credentials.
type DecryptCache struct {
	// MaxAge is how long an entry may answer, counted from when kmsproxyd
	// sent the request KMS answered, or just before (MinDecryptCacheAge to
	// MaxDecryptCacheAge).
	MaxAge time.Duration `json:"-" yaml:"max_age"`
	// MaxUses is how many requests an entry may answer before it is
	// dropped (1 to MaxDecryptCacheUses). The request that filled the
	// entry is not counted.
	MaxUses int `json:"max_uses" yaml:"max_uses"`
	// MaxEntries is how many entries the listener's cache holds at most
	// (1 to MaxDecryptCacheEntries); beyond it the oldest is dropped.
	MaxEntries int `json:"max_entries" yaml:"max_entries"`
}

// MarshalJSON writes max_age as a duration string ("5m0s"), as the policy
// file spells it, for /v1/info.
func (d DecryptCache) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		MaxAge     string `json:"max_age"`
		MaxUses    int    `json:"max_uses"`
		MaxEntries int    `json:"max_entries"`
	}{d.MaxAge.String(), d.MaxUses, d.MaxEntries})
}

// Wildcard, as the only element of operations or control, allows every
// operation or endpoint.
const Wildcard = "*"

// allOperations is every operation name a policy may list.
var allOperations = slices.Concat(AttestedOperations, PassThroughOperations)

// IsAttested reports whether op is one of AttestedOperations.
func IsAttested(op string) bool { return slices.Contains(AttestedOperations, op) }

// isOperation reports whether op is an operation kmsproxyd serves.
func isOperation(op string) bool { return slices.Contains(allOperations, op) }

// Policy is a parsed policy: the Rules of each listener, and where they came
// from. It is read-only after Parse, Load or Default returns it and safe for
// concurrent use.
type Policy struct {
	// listeners holds the rules of both ListenerParent and ListenerLocal;
	// a listener absent from the file has deny-all rules here.
	listeners map[string]*Rules
	// source is the file name given to Parse or Load; "" for Default.
	source string
	// sha256 is the hex SHA-256 of the file's bytes; "" for Default.
	sha256 string
	// isDefault marks the built-in default.
	isDefault bool
	// kms is the kms: section; never nil, empty when the file has none.
	kms *Pin
}

// Rules is what one listener may do. The exported fields are the effective
// values (defaults for omitted fields already applied); they must not be
// modified once the Policy is in use. Field tags give the file's names, so a
// Rules encodes to the policy file's form (YAML) and to /v1/info (JSON).
type Rules struct {
	// Operations lists allowed operation names, or is ["*"] for all of them.
	Operations []string `json:"operations" yaml:"operations,flow"`
	// Keys lists glob patterns over request key identifiers; empty means any
	// key.
	Keys []string `json:"keys,omitempty" yaml:"keys,omitempty"`
	// EncryptionContext maps encryption context keys the request must carry
	// to globs their values must match; empty means no requirement.
	EncryptionContext map[string]string `json:"encryption_context,omitempty" yaml:"encryption_context,omitempty"`
	// Plaintext allows attested operations, whose answer carries plaintext.
	Plaintext bool `json:"plaintext" yaml:"plaintext"`
	// CredentialsPush allows PUT /v1/credentials.
	CredentialsPush bool `json:"credentials_push" yaml:"credentials_push"`
	// Control lists allowed control endpoint names, or is ["*"].
	Control []string `json:"control" yaml:"control,flow"`
	// WithoutEncryptionContext lists operations that carry no encryption
	// context (GenerateRandom, DeriveSharedSecret, Sign, ...) which the
	// listener may call although EncryptionContext requires one, or is
	// ["*"] for all of them. It means nothing without EncryptionContext.
	WithoutEncryptionContext []string `json:"without_encryption_context,omitempty" yaml:"without_encryption_context,omitempty,flow"`
	// MaxInflight bounds the listener's concurrent KMS API requests; 0
	// means kmsproxyd's --max-inflight. See InflightLimit.
	MaxInflight int `json:"max_inflight,omitempty" yaml:"max_inflight,omitempty"`
	// MaxConnections bounds the listener's open connections; 0 means
	// DefaultMaxConnections. See ConnectionLimit.
	MaxConnections int `json:"max_connections,omitempty" yaml:"max_connections,omitempty"`
	// MetricsAllListeners lets /metrics on this listener show the series of
	// every listener; otherwise it shows only this listener's own (and the
	// series that belong to no listener).
	MetricsAllListeners bool `json:"metrics_all_listeners,omitempty" yaml:"metrics_all_listeners"`
	// DecryptCache, when set, lets kmsproxyd answer a Decrypt request on
	// this listener from an earlier KMS answer to the identical request;
	// nil (the default) means every Decrypt goes to KMS.
	DecryptCache *DecryptCache `json:"decrypt_cache,omitempty" yaml:"decrypt_cache,omitempty,flow"`

	// listener is the listener these rules belong to, for Denied messages.
	listener string
	// absent marks a listener the policy file does not mention.
	absent bool
	// pin is the policy's kms: section, shared by every listener; nil or
	// empty when the policy pins nothing.
	pin *Pin
}

// InflightLimit returns the listener's in-flight budget: MaxInflight, or
// flagDefault (kmsproxyd's --max-inflight) when the policy sets none.
func (r *Rules) InflightLimit(flagDefault int) int {
	if r.MaxInflight > 0 {
		return r.MaxInflight
	}
	return flagDefault
}

// ConnectionLimit returns the listener's open-connection limit:
// MaxConnections, or DefaultMaxConnections when the policy sets none.
func (r *Rules) ConnectionLimit() int {
	if r.MaxConnections > 0 {
		return r.MaxConnections
	}
	return DefaultMaxConnections
}

// Listener returns the name of the listener the rules belong to.
func (r *Rules) Listener() string { return r.listener }

// denyAll returns the rules of a listener a policy does not configure: no
// operation, no plaintext, no credentials, healthz and readyz only.
func denyAll(listener string) *Rules {
	return &Rules{
		Operations: []string{},
		Control:    slices.Clone(defaultControl),
		listener:   listener,
		absent:     true,
	}
}

// Default returns the built-in policy kmsproxyd uses when it is given no
// policy file. Both listeners may call every operation on any key, receive
// plaintext and use every control endpoint; the parent may push credentials.
// That is the behaviour of AWS's kmstool-enclave-cli, which decrypts whatever
// the parent sends it, and it means the parent instance can read every secret
// the enclave's keys protect: see DefaultWarning.
//
// It pins no account (see AccountsWarning), and /metrics on the parent
// listener shows only the parent's own series, as in a file that omits
// metrics_all_listeners; the local listener's shows every listener's.
func Default() *Policy {
	pin := &Pin{}
	all := func(listener string, parent bool) *Rules {
		return &Rules{
			Operations:          []string{Wildcard},
			Plaintext:           true,
			CredentialsPush:     parent,
			Control:             slices.Clone(ControlEndpoints),
			MetricsAllListeners: !parent,
			listener:            listener,
			pin:                 pin,
		}
	}
	return &Policy{
		listeners: map[string]*Rules{
			ListenerParent: all(ListenerParent, true),
			ListenerLocal:  all(ListenerLocal, false),
		},
		isDefault: true,
		kms:       pin,
	}
}

// IsDefault reports whether p is the built-in default rather than a file.
func (p *Policy) IsDefault() bool { return p != nil && p.isDefault }

// defaultWarning is the text of DefaultWarning.
const defaultWarning = "no policy file given: using the built-in default policy, under which " +
	"the parent instance can read every secret it asks for (both listeners may call every " +
	"KMS operation on any key and receive the plaintext); bake a hardened policy into the " +
	"enclave image and pass it with --policy (see enclave/policy.example.yaml)"

// DefaultWarning returns the warning kmsproxyd logs once at start when it
// runs under the built-in default, or "" for a policy read from a file.
func (p *Policy) DefaultWarning() string {
	if !p.IsDefault() {
		return ""
	}
	return defaultWarning
}

// accountsWarning is the text of AccountsWarning.
const accountsWarning = "the policy pins no AWS account (kms.accounts): the parent instance supplies " +
	"kmsproxyd's credentials and region, so it chooses the account kmsproxyd talks to, and a request " +
	"that names its key by alias or bare key id can be answered with a key of an account the parent's " +
	"owner controls (a data key, ciphertext or signature the parent can use on its own); name the " +
	"accounts whose keys kmsproxyd may use under kms.accounts (see enclave/policy.example.yaml)"

// AccountsWarning returns the warning kmsproxyd logs once at start when the
// policy (the built-in default included) names no account, under
// kms.accounts or through the key ARNs of kms.keys, or "" when it does.
func (p *Policy) AccountsWarning() string {
	if p.KMS().Pinned() {
		return ""
	}
	return accountsWarning
}

// KeysWarning returns the warning kmsproxyd logs once at start when the
// policy pins accounts but names no key under kms.keys: any key of those
// accounts is accepted, and whoever may create keys there can have an
// enclave app decrypt a ciphertext they made or use a key they hold. It
// returns "" when kms.keys is set, or when no account is pinned
// (AccountsWarning then says more).
func (p *Policy) KeysWarning() string {
	k := p.KMS()
	if len(k.Keys) > 0 || !k.Pinned() {
		return ""
	}
	accounts := "account"
	if len(k.Accounts) > 1 {
		accounts = "accounts"
	}
	return fmt.Sprintf("the policy pins no key (kms.keys): any key of the pinned %s %s is accepted, so whoever may create keys there "+
		"(kms:CreateKey in an IAM policy, the instance role included if it has it: the parent instance holds its credentials) "+
		"can plant a ciphertext under a key of their own that an enclave app decrypting without KeyId takes for its own data; "+
		"list the key ARNs kmsproxyd may use under kms.keys (see enclave/policy.example.yaml)", accounts, quoteList(k.Accounts))
}

// Warnings returns every warning kmsproxyd logs at start for this policy:
// DefaultWarning, AccountsWarning and KeysWarning, when they apply.
func (p *Policy) Warnings() []string {
	var w []string
	for _, s := range []string{p.DefaultWarning(), p.AccountsWarning(), p.KeysWarning()} {
		if s != "" {
			w = append(w, s)
		}
	}
	return w
}

// KMS returns the policy's kms: section (empty when it has none). It must
// not be modified.
func (p *Policy) KMS() *Pin {
	if p == nil || p.kms == nil {
		return &Pin{}
	}
	return p.kms
}

// Source returns the file name the policy was parsed from, or "" for the
// built-in default.
func (p *Policy) Source() string { return p.source }

// SHA256 returns the hex SHA-256 of the policy file's bytes, or "" for the
// built-in default. Operators compare it with the file they baked into the
// image.
func (p *Policy) SHA256() string { return p.sha256 }

// Rules returns the rules of the named listener. It never returns nil: a
// listener the policy does not configure, or a name that is no listener,
// gets deny-all rules (healthz and readyz only).
func (p *Policy) Rules(listener string) *Rules {
	if p != nil {
		if r, ok := p.listeners[listener]; ok {
			return r
		}
	}
	r := denyAll(listener)
	r.pin = p.KMS()
	return r
}

// Summary is the effective policy as kmsproxyd reports it on /v1/info. It
// holds no secrets: a policy names operations, key identifiers and context
// keys, all of which KMS itself logs in CloudTrail.
type Summary struct {
	// Source is the policy file name, or "built-in default".
	Source string `json:"source"`
	// Default is true under the built-in default policy.
	Default bool `json:"default"`
	// SHA256 is the hex SHA-256 of the policy file; absent for the default.
	SHA256 string `json:"sha256,omitempty"`
	// KMS is the kms: section: the accounts, regions and keys kmsproxyd's
	// keys must belong to; absent when the policy pins none.
	KMS *Pin `json:"kms,omitempty"`
	// Listeners holds the effective rules of every listener, including
	// deny-all rules for a listener the file leaves out.
	Listeners map[string]*Rules `json:"listeners"`
}

// Summary returns the effective policy for /v1/info. The Rules in it are
// copies.
func (p *Policy) Summary() Summary {
	s := Summary{
		Source:    p.source,
		Default:   p.IsDefault(),
		SHA256:    p.sha256,
		Listeners: make(map[string]*Rules, len(Listeners)),
	}
	if s.Default {
		s.Source = "built-in default"
	}
	s.KMS = p.KMS().clone()
	for _, name := range Listeners {
		s.Listeners[name] = p.Rules(name).clone()
	}
	return s
}

// policyFile is the shape of a policy file, for MarshalYAML.
type policyFile struct {
	KMS       *Pin              `yaml:"kms,omitempty"`
	Listeners map[string]*Rules `yaml:"listeners"`
}

// MarshalYAML implements yaml.Marshaler: it writes the effective policy in
// the policy file's format with every field explicit, so that parsing the
// output gives the same rules (a listener the file left out is written as
// its deny-all rules).
func (p *Policy) MarshalYAML() (any, error) {
	f := policyFile{Listeners: make(map[string]*Rules, len(Listeners))}
	f.KMS = p.KMS().clone()
	for _, name := range Listeners {
		f.Listeners[name] = p.Rules(name).clone()
	}
	return f, nil
}

// clone returns a deep copy of r with non-nil Operations and Control.
func (r *Rules) clone() *Rules {
	c := *r
	c.Operations = append([]string{}, r.Operations...)
	c.Control = append([]string{}, r.Control...)
	c.Keys = slices.Clone(r.Keys)
	c.WithoutEncryptionContext = slices.Clone(r.WithoutEncryptionContext)
	if r.DecryptCache != nil {
		dc := *r.DecryptCache
		c.DecryptCache = &dc
	}
	if r.EncryptionContext != nil {
		c.EncryptionContext = make(map[string]string, len(r.EncryptionContext))
		for k, v := range r.EncryptionContext {
			c.EncryptionContext[k] = v
		}
	}
	return &c
}
