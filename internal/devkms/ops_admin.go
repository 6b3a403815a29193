package devkms

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// lockoutMessage is KMS's answer when a new key policy would not let the
// caller change it again: "MalformedPolicyDocumentException: The new key
// policy will not allow you to update the key policy in the future." The
// CreateKey API reference describes the check: "The key policy must allow
// the calling principal to make a subsequent PutKeyPolicy request on the KMS
// key ... (To omit this condition, set BypassPolicyLockoutSafetyCheck to
// true.)"
const lockoutMessage = "The new key policy will not allow you to update the key policy in the future."

// parsePolicy parses a key policy document and maps keypolicy's errors to
// the KMS exceptions they stand for.
func parsePolicy(doc string) (*keypolicy.Policy, error) {
	p, err := keypolicy.Parse([]byte(doc))
	if err != nil {
		var pe *keypolicy.ParseError
		if errors.As(err, &pe) {
			return nil, kmsapi.Errorf(pe.Exception, "%s", pe.Message())
		}
		return nil, kmsapi.Errorf(kmsapi.MalformedPolicyDocument, "The key policy is not valid.")
	}
	return p, nil
}

// checkLockout applies KMS's policy lockout safety check: the new policy p
// must let the caller make a later PutKeyPolicy request on the key ("the key
// policy must allow the calling principal to make a subsequent PutKeyPolicy
// request on the KMS key", PutKeyPolicy API reference, Policy), with the
// caller's IAM policies counted as they would be then. bypass is
// BypassPolicyLockoutSafetyCheck.
func (s *Server) checkLockout(c *call, p *keypolicy.Policy, keyARN string, bypass bool) error {
	if bypass {
		return nil
	}
	a := keypolicy.Authorize(keypolicy.Input{
		Request: keypolicy.Request{
			Principal: c.principal,
			Action:    "kms:PutKeyPolicy",
			Resource:  keyARN,
			Context:   s.requestContext(c, nil, authzInput{extra: bypassContext(false)}),
		},
		KeyPolicy:     p,
		IdentityKnown: true,
		Identity:      s.iam.forPrincipal(c.principal),
	})
	if !a.Allowed {
		c.denial = "lockout safety check: the new key policy would not allow the caller a later PutKeyPolicy: " + a.Reason()
		return kmsapi.Errorf(kmsapi.MalformedPolicyDocument, lockoutMessage)
	}
	return nil
}

// bypassContext is the kms:BypassPolicyLockoutSafetyCheck condition key of
// CreateKey and PutKeyPolicy requests (KMS Developer Guide, "AWS KMS
// condition keys").
func bypassContext(bypass bool) map[string][]string {
	return map[string][]string{"kms:BypassPolicyLockoutSafetyCheck": {strconv.FormatBool(bypass)}}
}

// keyParams are the properties of a key to create (CreateKey and seeds).
type keyParams struct {
	id          string // "" for a new random ID
	spec        types.KeySpec
	usage       types.KeyUsageType
	description string
	policy      string // "" for the default key policy
	enabled     bool
}

// checkSpecUsage validates a key spec and usage the way CreateKey does.
func checkSpecUsage(spec types.KeySpec, usage types.KeyUsageType) (types.KeyUsageType, error) {
	if err := checkEnum("keySpec", spec, types.KeySpec("").Values()); err != nil {
		return "", err
	}
	if reason, ok := unsupportedSpecs[spec]; ok {
		return "", kmsapi.Errorf(kmsapi.UnsupportedOperation, "KeySpec %s is not supported by devkms: %s.", spec, reason)
	}
	if err := checkEnum("keyUsage", usage, types.KeyUsageType("").Values()); err != nil {
		return "", err
	}
	info := specs[spec]
	if usage == "" {
		// "The default value is ENCRYPT_DECRYPT. This parameter is
		// optional when you are creating a symmetric encryption KMS key;
		// otherwise, it is required." (CreateKey, KeyUsage)
		if spec != types.KeySpecSymmetricDefault {
			return "", validationError("You must specify a KeyUsage value for all KMS keys except symmetric encryption keys.")
		}
		usage = types.KeyUsageTypeEncryptDecrypt
	}
	if !slices.Contains(info.usages, usage) {
		return "", kmsapi.Errorf(kmsapi.Validation, "KeyUsage %s is not compatible with KeySpec %s", usage, spec)
	}
	return usage, nil
}

// newKey builds a key with fresh material; the caller stores it.
func (s *Server) newKey(p keyParams) (*key, error) {
	id := p.id
	if id == "" {
		id = newKeyID()
	}
	doc := p.policy
	if doc == "" {
		doc = defaultPolicy(s.store.partition, s.cfg.AccountID)
	}
	pol, err := parsePolicy(doc)
	if err != nil {
		return nil, err
	}
	k := &key{
		id: id, arn: s.store.keyARN(id), created: s.now().UTC().Truncate(time.Millisecond),
		description: p.description, spec: p.spec, usage: p.usage, enabled: p.enabled,
		policyDoc: doc, policy: pol,
	}
	if err := k.generate(p.spec); err != nil {
		return nil, err
	}
	return k, nil
}

func (s *Server) createKeyOp(c *call) (any, error) {
	var in kms.CreateKeyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	//lint:ignore SA1019 KMS still accepts the deprecated CustomerMasterKeySpec.
	cmkSpec := in.CustomerMasterKeySpec
	if in.KeySpec != "" && cmkSpec != "" {
		return nil, validationError("You cannot specify KeySpec and CustomerMasterKeySpec in the same request. CustomerMasterKeySpec is deprecated.")
	}
	spec := in.KeySpec
	if spec == "" {
		spec = types.KeySpec(cmkSpec)
	}
	if spec == "" {
		spec = types.KeySpecSymmetricDefault
	}
	usage, err := checkSpecUsage(spec, in.KeyUsage)
	if err != nil {
		return nil, err
	}
	if err := checkEnum("origin", in.Origin, types.OriginType("").Values()); err != nil {
		return nil, err
	}
	if in.Origin != "" && in.Origin != types.OriginTypeAwsKms {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms creates keys only with Origin AWS_KMS, not %s.", in.Origin)
	}
	if in.CustomKeyStoreId != nil || in.XksKeyId != nil {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms has no custom key stores.")
	}
	if in.MultiRegion != nil && *in.MultiRegion {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms does not create multi-Region keys.")
	}
	if err := checkStringLen("description", in.Description, 0, MaxDescription); err != nil {
		return nil, err
	}
	if in.Policy != nil && *in.Policy == "" {
		return nil, checkStringLen("policy", in.Policy, 1, keypolicy.MaxPolicySize)
	}
	// CreateKey is authorized by IAM policies alone: there is no key yet.
	createCtx := bypassContext(in.BypassPolicyLockoutSafetyCheck)
	createCtx["kms:KeySpec"] = []string{string(spec)}
	createCtx["kms:KeyUsage"] = []string{string(usage)}
	createCtx["kms:KeyOrigin"] = []string{string(types.OriginTypeAwsKms)}
	createCtx["kms:MultiRegion"] = []string{"false"}
	if err := s.authorizeIAM(c, "CreateKey", "*", createCtx); err != nil {
		return nil, err
	}
	p := keyParams{spec: spec, usage: usage, description: aws.ToString(in.Description), policy: aws.ToString(in.Policy), enabled: true}
	k, err := s.newKey(p)
	if err != nil {
		return nil, err
	}
	if in.Policy != nil {
		if err := s.checkLockout(c, k.policy, k.arn, in.BypassPolicyLockoutSafetyCheck); err != nil {
			return nil, err
		}
		s.logPolicyWarnings(c, k.id, k.policy)
	}
	// Tags are accepted and not kept: devkms implements no tag operations.
	if err := s.store.update(func(next *snapshot) error {
		next.keys[k.id] = k
		next.order = append(next.order, k.id)
		return nil
	}); err != nil {
		return nil, err
	}
	c.keyID = k.id
	return &kms.CreateKeyOutput{KeyMetadata: k.metadata(s.cfg.AccountID)}, nil
}

// keyOnly resolves identifiers for operations that accept only a key ID or
// key ARN.
var keyOnly = resolveOptions{member: "keyId"}

// anyKeyID resolves identifiers for operations that also accept aliases.
var anyKeyID = resolveOptions{member: "keyId", allowAlias: true}

func (s *Server) describeKey(c *call) (any, error) {
	var in kms.DescribeKeyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	k, _, err := s.store.resolve(in.KeyId, anyKeyID)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	if err := s.authorize(c, k, authzInput{action: "DescribeKey"}); err != nil {
		return nil, err
	}
	return &kms.DescribeKeyOutput{KeyMetadata: k.metadata(s.cfg.AccountID)}, nil
}

// markerPrefix makes list markers opaque-looking and recognisable.
const markerPrefix = "devkms:"

func encodeMarker(name string) *string {
	return aws.String(base64.RawURLEncoding.EncodeToString([]byte(markerPrefix + name)))
}

func decodeMarker(m *string) (string, error) {
	if m == nil {
		return "", nil
	}
	if err := checkStringLen("marker", m, 1, MaxMarker); err != nil {
		return "", err
	}
	b, err := base64.RawURLEncoding.DecodeString(*m)
	name, ok := strings.CutPrefix(string(b), markerPrefix)
	if err != nil || !ok || name == "" {
		// InvalidMarkerException: "The request was rejected because the
		// marker that specifies where pagination should next begin is not
		// valid." (KMS API reference)
		return "", kmsapi.Errorf(kmsapi.InvalidMarker, "The marker that specifies where pagination should next begin is not valid.")
	}
	return name, nil
}

func (s *Server) listKeys(c *call) (any, error) {
	var in kms.ListKeysInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.authorizeIAM(c, "ListKeys", "*", nil); err != nil {
		return nil, err
	}
	if err := checkIntRange("limit", in.Limit, 1, MaxListKeysLimit); err != nil {
		return nil, err
	}
	limit := DefaultListKeysLimit
	if in.Limit != nil {
		limit = int(*in.Limit)
	}
	after, err := decodeMarker(in.Marker)
	if err != nil {
		return nil, err
	}
	snap := s.store.snap()
	start := 0
	if after != "" {
		i := slices.Index(snap.order, after)
		if i < 0 {
			return nil, kmsapi.Errorf(kmsapi.InvalidMarker, "The marker that specifies where pagination should next begin is not valid.")
		}
		start = i
	}
	out := &kms.ListKeysOutput{Keys: []types.KeyListEntry{}}
	for i := start; i < len(snap.order); i++ {
		if len(out.Keys) == limit {
			out.Truncated = true
			out.NextMarker = encodeMarker(snap.order[i])
			break
		}
		k := snap.keys[snap.order[i]]
		out.Keys = append(out.Keys, types.KeyListEntry{KeyId: aws.String(k.id), KeyArn: aws.String(k.arn)})
	}
	return out, nil
}

func (s *Server) setEnabled(c *call, action string, enabled bool) error {
	var in kms.EnableKeyInput // DisableKeyInput has the same single member
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return err
	}
	k, _, err := s.store.resolve(in.KeyId, keyOnly)
	if err != nil {
		return err
	}
	c.keyID = k.id
	if err := s.authorize(c, k, authzInput{action: action}); err != nil {
		return err
	}
	return s.store.update(func(next *snapshot) error {
		cur := next.keys[k.id]
		nk := cur.copyKey()
		nk.enabled = enabled
		next.keys[k.id] = nk
		return nil
	})
}

func (s *Server) enableKey(c *call) (any, error) {
	if err := s.setEnabled(c, "EnableKey", true); err != nil {
		return nil, err
	}
	return &kms.EnableKeyOutput{}, nil
}

func (s *Server) disableKey(c *call) (any, error) {
	if err := s.setEnabled(c, "DisableKey", false); err != nil {
		return nil, err
	}
	return &kms.DisableKeyOutput{}, nil
}

// checkAliasName applies CreateAlias's rules for AliasName.
func checkAliasName(name *string) error {
	if err := checkStringLen("aliasName", name, 1, MaxAliasName); err != nil {
		return err
	}
	n := *name
	if !strings.HasPrefix(n, "alias/") {
		// local-kms reproduces KMS's wording for a missing prefix.
		return validationError(`Alias must start with the prefix "alias/". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html`)
	}
	if strings.HasPrefix(n, "alias/aws/") {
		// "The alias name cannot begin with alias/aws/. The alias/aws/
		// prefix is reserved for AWS managed keys." (CreateAlias)
		return kmsapi.Errorf(kmsapi.InvalidAliasName, "Alias names cannot begin with alias/aws/: the prefix is reserved for AWS managed keys.")
	}
	if !aliasNamePattern.MatchString(n) {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%s' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^alias/[a-zA-Z0-9/_-]+$", shorten(n))
	}
	return nil
}

func (s *Server) createAlias(c *call) (any, error) {
	var in kms.CreateAliasInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := checkAliasName(in.AliasName); err != nil {
		return nil, err
	}
	k, _, err := s.store.resolve(in.TargetKeyId, resolveOptions{member: "targetKeyId"})
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	// "To create an alias, the principal needs the following permissions
	// for both the alias and for the associated KMS key": kms:CreateAlias
	// on the alias in an IAM policy, and on the key in the key policy (KMS
	// Developer Guide, "Controlling access to aliases").
	name := *in.AliasName
	if err := s.authorizeIAM(c, "CreateAlias", s.store.aliasARN(name), nil); err != nil {
		return nil, err
	}
	if err := s.authorize(c, k, authzInput{action: "CreateAlias"}); err != nil {
		return nil, err
	}
	err = s.store.update(func(next *snapshot) error {
		if next.aliases[name] != nil {
			// "An alias with the name arn:aws:kms:...:alias/x already
			// exists" (AlreadyExistsException; local-kms and moto agree).
			return kmsapi.Errorf(kmsapi.AlreadyExists, "An alias with the name %s already exists", s.store.aliasARN(name))
		}
		if next.keys[k.id] == nil {
			return kmsapi.Errorf(kmsapi.NotFound, "Key '%s' does not exist", k.arn)
		}
		now := s.now().UTC().Truncate(time.Millisecond)
		next.aliases[name] = &alias{name: name, target: k.id, created: now, updated: now}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &kms.CreateAliasOutput{}, nil
}

// keyKind is the family UpdateAlias compares: "The current and new KMS key
// must be the same type (both symmetric or both asymmetric or both HMAC),
// and they must have the same key usage" (UpdateAlias API reference).
func keyKind(k *key) string {
	switch {
	case k.usage == types.KeyUsageTypeGenerateVerifyMac:
		return "HMAC"
	case k.isSymmetricEncryption():
		return "symmetric"
	}
	return "asymmetric"
}

// existingAlias resolves an AliasName of UpdateAlias and DeleteAlias.
func (s *Server) existingAlias(name *string) (*alias, *key, error) {
	if err := checkAliasName(name); err != nil {
		return nil, nil, err
	}
	snap := s.store.snap()
	a := snap.aliases[*name]
	if a == nil || snap.keys[a.target] == nil {
		return nil, nil, kmsapi.Errorf(kmsapi.NotFound, "Alias %s is not found.", s.store.aliasARN(*name))
	}
	return a, snap.keys[a.target], nil
}

func (s *Server) updateAlias(c *call) (any, error) {
	var in kms.UpdateAliasInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	a, cur, err := s.existingAlias(in.AliasName)
	if err != nil {
		return nil, err
	}
	next, _, err := s.store.resolve(in.TargetKeyId, resolveOptions{member: "targetKeyId"})
	if err != nil {
		return nil, err
	}
	c.keyID = next.id
	// Required permissions: kms:UpdateAlias on the alias (IAM policy), on
	// the current KMS key (key policy) and on the new KMS key (key policy)
	// (UpdateAlias API reference).
	if err := s.authorizeIAM(c, "UpdateAlias", s.store.aliasARN(a.name), nil); err != nil {
		return nil, err
	}
	if err := s.authorize(c, cur, authzInput{action: "UpdateAlias"}); err != nil {
		return nil, err
	}
	if err := s.authorize(c, next, authzInput{action: "UpdateAlias"}); err != nil {
		return nil, err
	}
	if keyKind(cur) != keyKind(next) || cur.usage != next.usage {
		return nil, validationError(fmt.Sprintf("%s points to a %s key with key usage %s; the new key must be of the same type and key usage, not %s with %s. To move the alias to another type of key, delete it and create it again.",
			a.name, keyKind(cur), cur.usage, keyKind(next), next.usage))
	}
	now := s.now().UTC().Truncate(time.Millisecond)
	err = s.store.update(func(snap *snapshot) error {
		cur := snap.aliases[a.name]
		if cur == nil {
			return kmsapi.Errorf(kmsapi.NotFound, "Alias %s is not found.", s.store.aliasARN(a.name))
		}
		if snap.keys[next.id] == nil {
			return kmsapi.Errorf(kmsapi.NotFound, "Key '%s' does not exist", next.arn)
		}
		na := *cur
		na.target, na.updated = next.id, now
		snap.aliases[a.name] = &na
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &kms.UpdateAliasOutput{}, nil
}

func (s *Server) deleteAlias(c *call) (any, error) {
	var in kms.DeleteAliasInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	a, k, err := s.existingAlias(in.AliasName)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	// Required permissions: kms:DeleteAlias on the alias (IAM policy) and
	// on the KMS key (key policy) (DeleteAlias API reference).
	if err := s.authorizeIAM(c, "DeleteAlias", s.store.aliasARN(a.name), nil); err != nil {
		return nil, err
	}
	if err := s.authorize(c, k, authzInput{action: "DeleteAlias"}); err != nil {
		return nil, err
	}
	err = s.store.update(func(snap *snapshot) error {
		if snap.aliases[a.name] == nil {
			return kmsapi.Errorf(kmsapi.NotFound, "Alias %s is not found.", s.store.aliasARN(a.name))
		}
		delete(snap.aliases, a.name)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &kms.DeleteAliasOutput{}, nil
}

func sortedAliases(sn *snapshot) []*alias {
	out := make([]*alias, 0, len(sn.aliases))
	for _, a := range sn.aliases {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b *alias) int { return strings.Compare(a.name, b.name) })
	return out
}

func (s *Server) listAliases(c *call) (any, error) {
	var in kms.ListAliasesInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.authorizeIAM(c, "ListAliases", "*", nil); err != nil {
		return nil, err
	}
	if err := checkIntRange("limit", in.Limit, 1, MaxListAliasesLimit); err != nil {
		return nil, err
	}
	limit := DefaultListAliasesLimit
	if in.Limit != nil {
		limit = int(*in.Limit)
	}
	after, err := decodeMarker(in.Marker)
	if err != nil {
		return nil, err
	}
	filter := ""
	if in.KeyId != nil {
		k, _, err := s.store.resolve(in.KeyId, keyOnly)
		if err != nil {
			return nil, err
		}
		filter = k.id
	}
	all := sortedAliases(s.store.snap())
	start := 0
	if after != "" {
		start = slices.IndexFunc(all, func(a *alias) bool { return a.name == after })
		if start < 0 {
			return nil, kmsapi.Errorf(kmsapi.InvalidMarker, "The marker that specifies where pagination should next begin is not valid.")
		}
	}
	out := &kms.ListAliasesOutput{Aliases: []types.AliasListEntry{}}
	for _, a := range all[start:] {
		if filter != "" && a.target != filter {
			continue
		}
		if len(out.Aliases) == limit {
			out.Truncated = true
			out.NextMarker = encodeMarker(a.name)
			break
		}
		created, updated := a.created, a.updated
		out.Aliases = append(out.Aliases, types.AliasListEntry{
			AliasName: aws.String(a.name), AliasArn: aws.String(s.store.aliasARN(a.name)),
			TargetKeyId: aws.String(a.target), CreationDate: &created, LastUpdatedDate: &updated,
		})
	}
	return out, nil
}

// checkPolicyName: "PolicyName ... The only valid name is default." A
// different name is answered as moto (checked against AWS) does:
// NotFoundException "No such policy exists".
func checkPolicyName(name *string) error {
	if name == nil {
		return nil
	}
	if err := checkStringLen("policyName", name, 1, MaxPolicyName); err != nil {
		return err
	}
	if *name != "default" {
		return kmsapi.Errorf(kmsapi.NotFound, "No such policy exists")
	}
	return nil
}

func (s *Server) putKeyPolicy(c *call) (any, error) {
	var in kms.PutKeyPolicyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := checkPolicyName(in.PolicyName); err != nil {
		return nil, err
	}
	if in.Policy == nil || *in.Policy == "" {
		return nil, checkStringLen("policy", in.Policy, 1, keypolicy.MaxPolicySize)
	}
	k, _, err := s.store.resolve(in.KeyId, keyOnly)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	if err := s.authorize(c, k, authzInput{action: "PutKeyPolicy", extra: bypassContext(in.BypassPolicyLockoutSafetyCheck)}); err != nil {
		return nil, err
	}
	pol, err := parsePolicy(*in.Policy)
	if err != nil {
		return nil, err
	}
	if err := s.checkLockout(c, pol, k.arn, in.BypassPolicyLockoutSafetyCheck); err != nil {
		return nil, err
	}
	s.logPolicyWarnings(c, k.id, pol)
	err = s.store.update(func(next *snapshot) error {
		cur := next.keys[k.id]
		if cur == nil {
			return kmsapi.Errorf(kmsapi.NotFound, "Key '%s' does not exist", k.arn)
		}
		nk := cur.copyKey()
		nk.policyDoc, nk.policy = *in.Policy, pol
		next.keys[k.id] = nk
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &kms.PutKeyPolicyOutput{}, nil
}

func (s *Server) getKeyPolicy(c *call) (any, error) {
	var in kms.GetKeyPolicyInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := checkPolicyName(in.PolicyName); err != nil {
		return nil, err
	}
	k, _, err := s.store.resolve(in.KeyId, keyOnly)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	if err := s.authorize(c, k, authzInput{action: "GetKeyPolicy"}); err != nil {
		return nil, err
	}
	return &kms.GetKeyPolicyOutput{Policy: aws.String(k.policyDoc), PolicyName: aws.String("default")}, nil
}
