package devkms

import (
	"crypto/rand"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// alias is one KMS alias.
type alias struct {
	name    string // "alias/..."
	target  string // key ID
	created time.Time
	updated time.Time
}

// snapshot is one consistent view of keys, aliases and grants. Published
// snapshots are never modified; updates build a new one.
type snapshot struct {
	keys    map[string]*key // by key ID
	order   []string        // key IDs in creation order (ListKeys)
	aliases map[string]*alias
	grants  map[string]*grant // by grant ID
}

func (s *snapshot) clone() *snapshot {
	return &snapshot{
		keys:    maps.Clone(s.keys),
		order:   slices.Clone(s.order),
		aliases: maps.Clone(s.aliases),
		grants:  maps.Clone(s.grants),
	}
}

func emptySnapshot() *snapshot {
	return &snapshot{keys: map[string]*key{}, aliases: map[string]*alias{}, grants: map[string]*grant{}}
}

// store holds devkms's keys and aliases. Readers load the current snapshot
// without locking; writers serialise on wmu, build the next snapshot, write
// the state file (when there is one) and only then publish it, so a failed
// write changes nothing.
type store struct {
	region    string
	account   string
	partition string
	path      string // state file; "" for memory only

	wmu sync.Mutex
	cur atomic.Pointer[snapshot]
}

func newStore(region, account, path string) *store {
	s := &store{region: region, account: account, partition: partition(region), path: path}
	s.cur.Store(emptySnapshot())
	return s
}

func (s *store) snap() *snapshot { return s.cur.Load() }

// update applies fn to a copy of the current snapshot, persists it and
// publishes it.
func (s *store) update(fn func(next *snapshot) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	next := s.cur.Load().clone()
	if err := fn(next); err != nil {
		return err
	}
	if s.path != "" {
		if err := writeStateFile(s.path, s.encodeState(next)); err != nil {
			return err
		}
	}
	s.cur.Store(next)
	return nil
}

// KeyARN returns the ARN devkms gives a key in region and account.
func KeyARN(region, account, keyID string) string {
	return fmt.Sprintf("arn:%s:kms:%s:%s:key/%s", partition(region), region, account, keyID)
}

// AliasARN returns the ARN devkms gives an alias ("alias/...").
func AliasARN(region, account, aliasName string) string {
	return fmt.Sprintf("arn:%s:kms:%s:%s:%s", partition(region), region, account, aliasName)
}

func (s *store) keyARN(id string) string {
	return fmt.Sprintf("arn:%s:kms:%s:%s:key/%s", s.partition, s.region, s.account, id)
}

func (s *store) aliasARN(name string) string {
	return fmt.Sprintf("arn:%s:kms:%s:%s:%s", s.partition, s.region, s.account, name)
}

// newKeyID returns a random UUID (version 4), the form of KMS key IDs.
func newKeyID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var (
	// keyIDPattern: KMS key IDs are UUIDs ("Key ID:
	// 1234abcd-12ab-34cd-56ef-1234567890ab", KMS API reference, KeyId).
	keyIDPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// aliasNamePattern: "The alias name ... can contain only alphanumeric
	// characters, forward slashes (/), underscores (_), and dashes (-)"
	// after the required "alias/" prefix (CreateAlias API reference).
	aliasNamePattern = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]+$`)
	// kmsARNPattern splits arn:PARTITION:kms:REGION:ACCOUNT:RESOURCE.
	kmsARNPattern = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):kms:([a-z0-9-]+):([0-9]{12}):(key/.+|alias/.+)$`)
)

// refKind says how a request named a key.
type refKind int

const (
	refKeyID refKind = iota
	refKeyARN
	refAliasName
	refAliasARN
)

// keyRef is a parsed key identifier: "Key ID", "Key ARN", "Alias name" or
// "Alias ARN", the four forms KMS accepts (KMS API reference, KeyId).
type keyRef struct {
	raw  string
	kind refKind
	// id is the key ID (key forms) or alias name (alias forms).
	id string
	// foreign is set when an ARN names another account or region; such
	// keys do not exist in devkms.
	foreign bool
}

func (s *store) parseRef(raw string) (keyRef, error) {
	if strings.HasPrefix(raw, "arn:") {
		m := kmsARNPattern.FindStringSubmatch(raw)
		if m == nil {
			// "NotFoundException: Invalid arn" is how KMS answers an
			// identifier that starts like an ARN but is not a KMS one
			// (reported in coreos/coreos-kubernetes issue 688).
			return keyRef{}, kmsapi.Errorf(kmsapi.NotFound, "Invalid arn")
		}
		foreign := m[1] != s.partition || m[2] != s.region || m[3] != s.account
		res := m[4]
		if id, ok := strings.CutPrefix(res, "key/"); ok {
			if !keyIDPattern.MatchString(id) {
				return keyRef{}, kmsapi.Errorf(kmsapi.NotFound, "Invalid arn")
			}
			return keyRef{raw: raw, kind: refKeyARN, id: id, foreign: foreign}, nil
		}
		return keyRef{raw: raw, kind: refAliasARN, id: res, foreign: foreign}, nil
	}
	if strings.HasPrefix(raw, "alias/") {
		return keyRef{raw: raw, kind: refAliasName, id: raw}, nil
	}
	if keyIDPattern.MatchString(raw) {
		return keyRef{raw: raw, kind: refKeyID, id: raw}, nil
	}
	// "NotFoundException ... Invalid keyId alias/nonexistent" and
	// "Invalid keyId <value>" are KMS's answers to identifiers of no known
	// form (moto reproduces the message from AWS).
	return keyRef{}, kmsapi.Errorf(kmsapi.NotFound, "Invalid keyId %s", shorten(raw))
}

// resolveOptions says which identifier forms an operation accepts.
type resolveOptions struct {
	member     string // KMS member name for validation messages
	allowAlias bool
}

// resolve finds the key a request names. It answers NotFoundException in
// KMS's words: "Key 'arn:aws:kms:...:key/ID' does not exist" for a missing
// key and "Alias arn:aws:kms:...:alias/NAME is not found." for a missing
// alias (both as reported from real KMS in boto/botocore issue 2107 and
// cloudposse/docs issue 152).
func (s *store) resolve(raw *string, opt resolveOptions) (*key, keyRef, error) {
	if err := checkStringLen(opt.member, raw, 1, MaxKeyID); err != nil {
		return nil, keyRef{}, err
	}
	ref, err := s.parseRef(*raw)
	if err != nil {
		return nil, ref, err
	}
	snap := s.snap()
	switch ref.kind {
	case refAliasName, refAliasARN:
		if !opt.allowAlias {
			if ref.kind == refAliasARN {
				// "InvalidArnException ... Key Aliases are not supported
				// for this operation" (KMS, quoted in
				// ministryofjustice/modernisation-platform PR 8298).
				return nil, ref, kmsapi.Errorf(kmsapi.InvalidArn, "Key Aliases are not supported for this operation")
			}
			return nil, ref, kmsapi.Errorf(kmsapi.NotFound, "Invalid keyId %s", shorten(ref.raw))
		}
		a := snap.aliases[ref.id]
		if a == nil || ref.foreign {
			name := s.aliasARN(ref.id)
			if ref.kind == refAliasARN {
				name = ref.raw
			}
			return nil, ref, kmsapi.Errorf(kmsapi.NotFound, "Alias %s is not found.", shorten(name))
		}
		k := snap.keys[a.target]
		if k == nil {
			return nil, ref, kmsapi.Errorf(kmsapi.NotFound, "Alias %s is not found.", s.aliasARN(ref.id))
		}
		return k, ref, nil
	default:
		k := snap.keys[ref.id]
		if k == nil || ref.foreign {
			arn := s.keyARN(ref.id)
			if ref.kind == refKeyARN {
				arn = ref.raw
			}
			return nil, ref, kmsapi.Errorf(kmsapi.NotFound, "Key '%s' does not exist", arn)
		}
		return k, ref, nil
	}
}
