package devkms

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/yamlfile"
)

// MaxSeedFile bounds the seed file devkms reads; devkms's own limit (a seed
// with inline policies of the maximum 32 KiB each still fits over a hundred).
const MaxSeedFile = 4 << 20

// Seed declares keys, aliases and key policies devkms creates at start. It is
// applied idempotently: keys are found by their fixed IDs, existing keys keep
// their material, and seeded descriptions, states, policies and aliases are
// set to what the seed says. A seed file looks like this:
//
//	keys:
//	  - id: 2b9e6c1a-1c6e-4c0b-9d3b-7f2f9c2f6a11   # fixed, so scripts can name it
//	    description: app data key
//	    key_spec: SYMMETRIC_DEFAULT                  # default
//	    key_usage: ENCRYPT_DECRYPT                   # default for symmetric keys
//	    policy_file: enclave-policy.json             # or policy: | {...}; default key policy otherwise
//	    aliases: [alias/app]
//	  - id: 5d0f4a53-8d2e-4f7e-9a5c-0c1b2d3e4f50
//	    key_spec: ECC_NIST_P256
//	    key_usage: SIGN_VERIFY
//	aliases:
//	  - name: alias/signer
//	    target_key_id: 5d0f4a53-8d2e-4f7e-9a5c-0c1b2d3e4f50
//
// policy_file is relative to the seed file. Seeds bypass the key policy
// lockout check: they are the operator's own configuration.
type Seed struct {
	Keys    []SeedKey   `yaml:"keys"`
	Aliases []SeedAlias `yaml:"aliases"`
}

// SeedKey is one key of a Seed.
type SeedKey struct {
	ID          string `yaml:"id"`
	Description string `yaml:"description"`
	KeySpec     string `yaml:"key_spec"`
	KeyUsage    string `yaml:"key_usage"`
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled"`
	// Policy is an inline key policy; PolicyFile names a file holding one.
	// With neither, a new key gets the default key policy and an existing
	// key keeps its policy.
	Policy     string   `yaml:"policy"`
	PolicyFile string   `yaml:"policy_file"`
	Aliases    []string `yaml:"aliases"`
}

// SeedAlias is one alias of a Seed.
type SeedAlias struct {
	Name        string `yaml:"name"`
	TargetKeyID string `yaml:"target_key_id"`
}

// LoadSeed reads a seed file and the policy files it names. Errors name
// the file, the line and the field.
func LoadSeed(path string) (Seed, error) {
	seed, _, err := loadSeed(path)
	return seed, err
}

// loadSeed is LoadSeed that also returns where each value of the file is,
// so that ApplySeed's errors can point at their line.
func loadSeed(path string) (Seed, yamlfile.Positions, error) {
	b, err := readLimited(path, MaxSeedFile)
	if err != nil {
		return Seed{}, yamlfile.Positions{}, fmt.Errorf("failed to read seed file: %w", err)
	}
	var seed Seed
	pos, err := yamlfile.DecodePositions(path, b, &seed)
	if err != nil {
		return Seed{}, pos, err
	}
	for i := range seed.Keys {
		k := &seed.Keys[i]
		if k.PolicyFile == "" {
			continue
		}
		field := fmt.Sprintf("keys[%d].policy_file", i)
		if k.Policy != "" {
			return Seed{}, pos, pos.Errorf(field, "give policy or policy_file, not both")
		}
		pf := k.PolicyFile
		if !filepath.IsAbs(pf) {
			pf = filepath.Join(filepath.Dir(path), pf)
		}
		// One byte more than the largest policy, so keypolicy reports an
		// oversized policy as KMS would (LimitExceededException).
		pb, err := readLimited(pf, keypolicy.MaxPolicySize+1)
		if err != nil {
			return Seed{}, pos, pos.Errorf(field, "failed to read the policy file: %v", err)
		}
		k.Policy, k.PolicyFile = string(pb), ""
	}
	return seed, pos, nil
}

// ParseSeed parses the YAML of a seed file named file; policy_file entries
// are left for LoadSeed to read.
func ParseSeed(file string, b []byte) (Seed, error) {
	var seed Seed
	if err := yamlfile.Decode(file, b, &seed); err != nil {
		return Seed{}, err
	}
	return seed, nil
}

// seedError is a problem with one value of a seed, named by its path in the
// seed file ("keys[0].key_spec").
type seedError struct {
	path, reason string
}

func (e *seedError) Error() string { return "seed " + e.path + ": " + e.reason }

func seedErrorf(path, format string, args ...any) *seedError {
	return &seedError{path: path, reason: fmt.Sprintf(format, args...)}
}

// kmsMessage is the message of a KMS-shaped error, or the error's text.
func kmsMessage(err error) string {
	var ke *kmsapi.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return err.Error()
}

// ApplySeed creates or updates the seed's keys and aliases in one atomic
// change (persisted when there is a state file).
func (s *Server) ApplySeed(seed Seed) error {
	type planned struct {
		p   keyParams
		pol *keypolicy.Policy
	}
	plans := make([]planned, 0, len(seed.Keys))
	ids := map[string]int{}
	for i, sk := range seed.Keys {
		at := fmt.Sprintf("keys[%d]", i)
		if !keyIDPattern.MatchString(sk.ID) {
			return seedErrorf(at+".id", "%q must be a key ID (UUID), e.g. 2b9e6c1a-1c6e-4c0b-9d3b-7f2f9c2f6a11", shorten(sk.ID))
		}
		if j, dup := ids[sk.ID]; dup {
			return seedErrorf(at+".id", "key %s appears twice (first as keys[%d])", sk.ID, j)
		}
		ids[sk.ID] = i
		if sk.PolicyFile != "" {
			return seedErrorf(at+".policy_file", "policy_file must be read with LoadSeed")
		}
		spec := types.KeySpec(sk.KeySpec)
		if spec == "" {
			spec = types.KeySpecSymmetricDefault
		}
		usage, err := checkSpecUsage(spec, types.KeyUsageType(sk.KeyUsage))
		if err != nil {
			field := ".key_spec"
			if msg := kmsMessage(err); strings.Contains(msg, "'keyUsage'") || strings.Contains(msg, "KeyUsage") {
				field = ".key_usage" // the usage is missing or does not suit the spec
			}
			return seedErrorf(at+field, "%s", kmsMessage(err))
		}
		if len(sk.Description) > MaxDescription {
			return seedErrorf(at+".description", "longer than %d bytes", MaxDescription)
		}
		pl := planned{p: keyParams{id: sk.ID, spec: spec, usage: usage, description: sk.Description, policy: sk.Policy, enabled: true}}
		if sk.Enabled != nil {
			pl.p.enabled = *sk.Enabled
		}
		if sk.Policy != "" {
			if pl.pol, err = parsePolicy(sk.Policy); err != nil {
				return seedErrorf(at+".policy", "not a valid key policy: %s", kmsMessage(err))
			}
			for _, w := range pl.pol.Warnings() {
				s.log.Warn("key policy warning", "key", sk.ID, "seed", at, "warning", w.String())
			}
		}
		for j, a := range sk.Aliases {
			if err := checkAliasName(&a); err != nil {
				return seedErrorf(fmt.Sprintf("%s.aliases[%d]", at, j), "%s", kmsMessage(err))
			}
		}
		plans = append(plans, pl)
	}
	for i, a := range seed.Aliases {
		if err := checkAliasName(&a.Name); err != nil {
			return seedErrorf(fmt.Sprintf("aliases[%d].name", i), "%s", kmsMessage(err))
		}
	}
	// Generate material for new keys before taking the store's lock: RSA
	// key generation can take a second.
	existing := s.store.snap().keys
	fresh := map[string]*key{}
	for _, pl := range plans {
		if existing[pl.p.id] != nil {
			continue
		}
		k, err := s.newKey(pl.p)
		if err != nil {
			return seedErrorf(fmt.Sprintf("keys[%d]", ids[pl.p.id]), "%s", kmsMessage(err))
		}
		fresh[k.id] = k
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	return s.store.update(func(next *snapshot) error {
		for _, pl := range plans {
			cur := next.keys[pl.p.id]
			if cur == nil {
				k := fresh[pl.p.id]
				if k == nil { // created concurrently since the check above
					return fmt.Errorf("seed key %s was created while the seed was applied", pl.p.id)
				}
				next.keys[k.id] = k
				next.order = append(next.order, k.id)
				continue
			}
			if cur.spec != pl.p.spec || cur.usage != pl.p.usage {
				return seedErrorf(fmt.Sprintf("keys[%d]", ids[pl.p.id]), "key %s exists as %s/%s, but the seed says %s/%s; a key's spec and usage cannot change",
					cur.id, cur.spec, cur.usage, pl.p.spec, pl.p.usage)
			}
			nk := cur.copyKey()
			nk.description, nk.enabled = pl.p.description, pl.p.enabled
			if pl.pol != nil {
				nk.policyDoc, nk.policy = pl.p.policy, pl.pol
			}
			next.keys[nk.id] = nk
		}
		setAlias := func(path, name, target string) error {
			if next.keys[target] == nil {
				return seedErrorf(path, "target key %s of %s does not exist", shorten(target), name)
			}
			if a := next.aliases[name]; a != nil {
				if a.target != target {
					na := *a
					na.target, na.updated = target, now
					next.aliases[name] = &na
				}
				return nil
			}
			next.aliases[name] = &alias{name: name, target: target, created: now, updated: now}
			return nil
		}
		for i, sk := range seed.Keys {
			for j, a := range sk.Aliases {
				if err := setAlias(fmt.Sprintf("keys[%d].aliases[%d]", i, j), a, sk.ID); err != nil {
					return err
				}
			}
		}
		for i, a := range seed.Aliases {
			if err := setAlias(fmt.Sprintf("aliases[%d].target_key_id", i), a.Name, a.TargetKeyID); err != nil {
				return err
			}
		}
		return nil
	})
}
