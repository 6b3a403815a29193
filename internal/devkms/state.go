package devkms

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
)

// MaxStateFile bounds the state file devkms reads. It is devkms's own limit:
// a key takes at most about 40 KiB (a 32 KiB policy and a PKCS#8 RSA-4096
// key in base64) and typically 1-4 KiB, so 16 MiB holds at least 400 keys
// with maximal policies and thousands of ordinary ones.
const MaxStateFile = 16 << 20

// stateVersion is the version of the state file format.
const stateVersion = 1

// stateComment is written into every state file so nobody mistakes it for
// something safe to share.
const stateComment = "devkms state file: holds KMS key material IN THE CLEAR. For development and tests only; never store real secrets with devkms, never commit this file."

type stateFile struct {
	Comment   string       `json:"comment"`
	Version   int          `json:"version"`
	Region    string       `json:"region"`
	AccountID string       `json:"account_id"`
	Keys      []stateKey   `json:"keys"`
	Aliases   []stateAlias `json:"aliases"`
	Grants    []stateGrant `json:"grants,omitempty"`
}

type stateKey struct {
	KeyID       string    `json:"key_id"`
	Created     time.Time `json:"created"`
	Description string    `json:"description"`
	KeySpec     string    `json:"key_spec"`
	KeyUsage    string    `json:"key_usage"`
	Enabled     bool      `json:"enabled"`
	Policy      string    `json:"policy"`
	MaterialID  string    `json:"key_material_id"`
	// Material is the raw secret of symmetric and HMAC keys or the PKCS#8
	// DER private key of asymmetric keys (base64 in JSON).
	Material []byte `json:"material"`
}

type stateAlias struct {
	Name        string    `json:"name"`
	TargetKeyID string    `json:"target_key_id"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
}

type stateGrant struct {
	GrantID                 string            `json:"grant_id"`
	KeyID                   string            `json:"key_id"`
	Name                    string            `json:"name,omitempty"`
	GranteePrincipal        string            `json:"grantee_principal"`
	RetiringPrincipal       string            `json:"retiring_principal,omitempty"`
	Operations              []string          `json:"operations"`
	EncryptionContextEquals map[string]string `json:"encryption_context_equals,omitempty"`
	EncryptionContextSubset map[string]string `json:"encryption_context_subset,omitempty"`
	Created                 time.Time         `json:"created"`
	IssuingAccount          string            `json:"issuing_account,omitempty"`
}

// StateError says why a state file was refused. devkms never overwrites a
// file it refused.
type StateError struct {
	Path   string
	Reason string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("devkms: state file %s is not a valid devkms state file (%s); refusing to start and leaving it untouched: fix it or move it away", e.Path, e.Reason)
}

func (s *store) encodeState(sn *snapshot) *stateFile {
	st := &stateFile{Comment: stateComment, Version: stateVersion, Region: s.region, AccountID: s.account,
		Keys: []stateKey{}, Aliases: []stateAlias{}}
	for _, id := range sn.order {
		k := sn.keys[id]
		sk := stateKey{KeyID: k.id, Created: k.created.UTC(), Description: k.description, KeySpec: string(k.spec),
			KeyUsage: string(k.usage), Enabled: k.enabled, Policy: k.policyDoc, MaterialID: k.materialID}
		switch {
		case k.secret != nil:
			sk.Material = k.secret
		case k.signer() != nil:
			// MarshalPKCS8PrivateKey cannot fail for the RSA and ECDSA
			// keys devkms generates.
			der, err := x509.MarshalPKCS8PrivateKey(k.signer())
			if err == nil {
				sk.Material = der
			}
		}
		st.Keys = append(st.Keys, sk)
	}
	for _, a := range sortedAliases(sn) {
		st.Aliases = append(st.Aliases, stateAlias{Name: a.name, TargetKeyID: a.target, Created: a.created.UTC(), Updated: a.updated.UTC()})
	}
	for _, g := range sn.sortedGrants(func(*grant) bool { return true }) {
		st.Grants = append(st.Grants, stateGrant{GrantID: g.id, KeyID: g.keyID, Name: g.name, GranteePrincipal: g.grantee,
			RetiringPrincipal: g.retiring, Operations: g.operations, EncryptionContextEquals: g.ecEquals,
			EncryptionContextSubset: g.ecSubset, Created: g.created.UTC(), IssuingAccount: g.issuer})
	}
	return st
}

// writeStateFile replaces path atomically: the document goes to a temporary
// file in the same directory, which is synced and renamed over path, and the
// directory is synced, so a crash leaves either the old or the new file,
// never a half-written one.
func writeStateFile(path string, st *stateFile) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode state: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to write state file: %w", err)
	}
	tmpName := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	// The file holds key material: owner only.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("failed to write state file: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("failed to write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("failed to sync state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write state file: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("failed to replace state file: %w", err)
	}
	committed = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: some file systems refuse to sync directories
		d.Close()
	}
	return nil
}

// loadState reads the state file at s.path into the store. A missing file is
// an empty state; anything unreadable or invalid is a *StateError.
func (s *store) loadState() error {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to open state file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxStateFile+1))
	if err != nil {
		return fmt.Errorf("failed to read state file: %w", err)
	}
	if len(b) > MaxStateFile {
		return &StateError{Path: s.path, Reason: fmt.Sprintf("larger than %d bytes", MaxStateFile)}
	}
	sn, err := s.decodeState(b)
	if err != nil {
		return &StateError{Path: s.path, Reason: err.Error()}
	}
	s.cur.Store(sn)
	return nil
}

func (s *store) decodeState(b []byte) (*snapshot, error) {
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("bad JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("data after the JSON document")
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	if st.Region != s.region || st.AccountID != s.account {
		return nil, fmt.Errorf("written for region %q and account %q, but devkms runs with --region %q --account-id %q (key ARNs would change)", st.Region, st.AccountID, s.region, s.account)
	}
	sn := emptySnapshot()
	for i, sk := range st.Keys {
		k, err := s.decodeKey(sk)
		if err != nil {
			return nil, fmt.Errorf("key %d: %v", i, err)
		}
		if sn.keys[k.id] != nil {
			return nil, fmt.Errorf("key %d: duplicate key ID %s", i, k.id)
		}
		sn.keys[k.id] = k
		sn.order = append(sn.order, k.id)
	}
	for i, sa := range st.Aliases {
		if !aliasNamePattern.MatchString(sa.Name) || len(sa.Name) > MaxAliasName {
			return nil, fmt.Errorf("alias %d: invalid alias name %q", i, shorten(sa.Name))
		}
		if sn.aliases[sa.Name] != nil {
			return nil, fmt.Errorf("alias %d: duplicate alias %s", i, sa.Name)
		}
		if sn.keys[sa.TargetKeyID] == nil {
			return nil, fmt.Errorf("alias %s: target key %q is not in the file", sa.Name, shorten(sa.TargetKeyID))
		}
		sn.aliases[sa.Name] = &alias{name: sa.Name, target: sa.TargetKeyID, created: sa.Created, updated: sa.Updated}
	}
	for i, sg := range st.Grants {
		switch {
		case !grantIDPattern.MatchString(sg.GrantID):
			return nil, fmt.Errorf("grant %d: grant ID %q is not 64 hex digits", i, shorten(sg.GrantID))
		case sn.grants[sg.GrantID] != nil:
			return nil, fmt.Errorf("grant %d: duplicate grant ID %s", i, sg.GrantID)
		case sn.keys[sg.KeyID] == nil:
			return nil, fmt.Errorf("grant %s: key %q is not in the file", sg.GrantID, shorten(sg.KeyID))
		case len(sg.Operations) == 0:
			return nil, fmt.Errorf("grant %s: no operations", sg.GrantID)
		case checkGrantPrincipal("grantee_principal", &sg.GranteePrincipal, true) != nil:
			return nil, fmt.Errorf("grant %s: invalid grantee principal %q", sg.GrantID, shorten(sg.GranteePrincipal))
		}
		for _, op := range sg.Operations {
			if !slices.Contains(types.GrantOperation("").Values(), types.GrantOperation(op)) {
				return nil, fmt.Errorf("grant %s: unknown operation %q", sg.GrantID, shorten(op))
			}
		}
		sn.grants[sg.GrantID] = &grant{id: sg.GrantID, keyID: sg.KeyID, name: sg.Name, grantee: sg.GranteePrincipal,
			retiring: sg.RetiringPrincipal, operations: sg.Operations, ecEquals: sg.EncryptionContextEquals,
			ecSubset: sg.EncryptionContextSubset, created: sg.Created, issuer: sg.IssuingAccount}
	}
	return sn, nil
}

func (s *store) decodeKey(sk stateKey) (*key, error) {
	if !keyIDPattern.MatchString(sk.KeyID) {
		return nil, fmt.Errorf("key ID %q is not a UUID", shorten(sk.KeyID))
	}
	spec := types.KeySpec(sk.KeySpec)
	info, ok := specs[spec]
	if !ok {
		return nil, fmt.Errorf("key %s: unsupported key spec %q", sk.KeyID, shorten(sk.KeySpec))
	}
	usage := types.KeyUsageType(sk.KeyUsage)
	if !slices.Contains(info.usages, usage) {
		return nil, fmt.Errorf("key %s: key usage %q is not valid for %s", sk.KeyID, shorten(sk.KeyUsage), spec)
	}
	pol, err := keypolicy.Parse([]byte(sk.Policy))
	if err != nil {
		return nil, fmt.Errorf("key %s: key policy: %v", sk.KeyID, err)
	}
	if len(sk.MaterialID) != 64 {
		return nil, fmt.Errorf("key %s: key_material_id is not 64 hex digits", sk.KeyID)
	}
	k := &key{id: sk.KeyID, arn: s.keyARN(sk.KeyID), created: sk.Created, description: sk.Description,
		spec: spec, usage: usage, enabled: sk.Enabled, policyDoc: sk.Policy, policy: pol, materialID: sk.MaterialID}
	switch {
	case info.symmetricBytes > 0:
		if len(sk.Material) != info.symmetricBytes {
			return nil, fmt.Errorf("key %s: %s material is %d bytes, want %d", sk.KeyID, spec, len(sk.Material), info.symmetricBytes)
		}
		k.secret = sk.Material
	default:
		priv, err := x509.ParsePKCS8PrivateKey(sk.Material)
		if err != nil {
			return nil, fmt.Errorf("key %s: material is not a PKCS#8 private key: %v", sk.KeyID, err)
		}
		switch p := priv.(type) {
		case *rsa.PrivateKey:
			if info.rsaBits == 0 || p.N.BitLen() != info.rsaBits {
				return nil, fmt.Errorf("key %s: material is an RSA-%d key, not %s", sk.KeyID, p.N.BitLen(), spec)
			}
			k.rsa = p
		case *ecdsa.PrivateKey:
			if info.curve == nil || p.Curve != info.curve {
				return nil, fmt.Errorf("key %s: material is an ECDSA %s key, not %s", sk.KeyID, p.Curve.Params().Name, spec)
			}
			k.ec = p
		default:
			return nil, fmt.Errorf("key %s: material is a %T, not %s", sk.KeyID, priv, spec)
		}
	}
	return k, nil
}
