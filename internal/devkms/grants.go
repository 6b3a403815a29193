package devkms

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// grant is one KMS grant. Like a key, a published *grant is never modified.
//
// Grants take effect at once in devkms: the eventual consistency of real KMS
// ("there might be a brief delay, usually less than five minutes, until the
// grant is available throughout KMS", CreateGrant API reference) is not
// modelled, so a grant token is never needed to use a new grant. Tokens are
// still checked: one devkms did not issue is InvalidGrantTokenException.
type grant struct {
	id         string
	keyID      string
	name       string
	grantee    string
	retiring   string
	operations []string
	ecEquals   map[string]string
	ecSubset   map[string]string
	created    time.Time
	// issuer is the ARN of the account root of the principal that created
	// the grant (GrantListEntry.IssuingAccount).
	issuer string
}

// Limits of CreateGrant, from the KMS API reference (CreateGrant, "Length
// Constraints") and the KMS Developer Guide ("Quotas").
const (
	// MaxGrantPrincipal: GranteePrincipal and RetiringPrincipal, "Minimum
	// length of 1. Maximum length of 256."
	MaxGrantPrincipal = 256
	// MaxGrantName: Name, "Minimum length of 1. Maximum length of 256."
	MaxGrantName = 256
	// MaxGrantsPerKey: "Grants per KMS key: 50,000" (KMS quotas, resource
	// quotas).
	MaxGrantsPerKey = 50000
	// MaxConstraintPairs and MaxConstraintValue: "Each constraint value can
	// include up to 8 encryption context pairs. The encryption context value
	// in each constraint cannot exceed 384 characters." (CreateGrant,
	// Constraints)
	MaxConstraintPairs = 8
	MaxConstraintValue = 384
	// MaxListGrantsLimit: ListGrants and ListRetirableGrants Limit, "it must
	// be between 1 and 100, inclusive. If you do not include a value, it
	// defaults to 50."
	MaxListGrantsLimit     = 100
	DefaultListGrantsLimit = 50
)

var (
	// grantNamePattern: Name, "Pattern: ^[a-zA-Z0-9:/_-]+$".
	grantNamePattern = regexp.MustCompile(`^[a-zA-Z0-9:/_-]+$`)
	// grantPrincipalPattern: GranteePrincipal and RetiringPrincipal,
	// "Pattern: ^[\w+=,.@:/-]+$".
	grantPrincipalPattern = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
	// grantIDPattern: devkms issues grant IDs of 64 hex digits, the form
	// of KMS's ("Grant ID Example -
	// 0123456789012345678901234567890123456789012345678901234567890123",
	// RetireGrant API reference).
	grantIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// KMS's descriptions of the grant exceptions (KMS API reference, Errors).
const (
	invalidGrantID     = "InvalidGrantIdException"
	msgInvalidGrantID  = "The request was rejected because the specified GrantId is not valid."
	msgInvalidToken    = "The request was rejected because the specified grant token is not valid."
	msgGrantNotFound   = "The request was rejected because the specified entity or resource could not be found."
	grantTokenPrefix   = "devkms-grant-token:"
	grantTokenRandSize = 16
)

// commonGrantOperations are valid in a grant for every key; the others
// depend on the key usage ("the operation must be supported on the KMS
// key", CreateGrant, Operations; KMS Developer Guide, "Grant operations").
var (
	commonGrantOperations  = []string{"CreateGrant", "RetireGrant", "DescribeKey"}
	grantOperationsByUsage = map[types.KeyUsageType][]string{
		types.KeyUsageTypeEncryptDecrypt:    {"Decrypt", "Encrypt", "ReEncryptFrom", "ReEncryptTo", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"},
		types.KeyUsageTypeSignVerify:        {"Sign", "Verify", "GetPublicKey"},
		types.KeyUsageTypeGenerateVerifyMac: {"GenerateMac", "VerifyMac"},
		types.KeyUsageTypeKeyAgreement:      {"DeriveSharedSecret", "GetPublicKey"},
	}
	// symmetricOnlyOperations take only symmetric encryption keys, not an
	// RSA key with ENCRYPT_DECRYPT (GenerateDataKey API reference: "You
	// must use a symmetric encryption KMS key").
	symmetricOnlyOperations = []string{"GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"}
)

// validGrantOperations returns the grant operations KMS accepts for k.
func validGrantOperations(k *key) []string {
	ops := append([]string(nil), commonGrantOperations...)
	for _, op := range grantOperationsByUsage[k.usage] {
		if !k.isSymmetricEncryption() && slices.Contains(symmetricOnlyOperations, op) {
			continue
		}
		ops = append(ops, op)
	}
	if k.usage == types.KeyUsageTypeEncryptDecrypt && !k.isSymmetricEncryption() {
		ops = append(ops, "GetPublicKey")
	}
	return ops
}

// constraintOperations take an EncryptionContext, so grant constraints
// apply to them when the key is a symmetric encryption key.
var constraintOperations = map[string]bool{
	"Encrypt": true, "Decrypt": true, "ReEncryptFrom": true, "ReEncryptTo": true,
	"GenerateDataKey": true, "GenerateDataKeyWithoutPlaintext": true,
	"GenerateDataKeyPair": true, "GenerateDataKeyPairWithoutPlaintext": true,
}

func (g *grant) policyGrant() keypolicy.Grant {
	return keypolicy.Grant{ID: g.id, Name: g.name, GranteePrincipal: g.grantee, Operations: g.operations,
		EncryptionContextEquals: g.ecEquals, EncryptionContextSubset: g.ecSubset}
}

// grantsFor returns the grants on key id.
func (sn *snapshot) grantsFor(keyID string) []keypolicy.Grant {
	var out []keypolicy.Grant
	for _, g := range sn.grants {
		if g.keyID == keyID {
			out = append(out, g.policyGrant())
		}
	}
	slices.SortFunc(out, func(a, b keypolicy.Grant) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (sn *snapshot) sortedGrants(keep func(*grant) bool) []*grant {
	var out []*grant
	for _, g := range sn.grants {
		if keep(g) {
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b *grant) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return out
}

func newGrantID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// grantToken returns a fresh token for grant id: every CreateGrant call
// returns a new one, "All grant tokens for the same grant ID can be used
// interchangeably" (CreateGrant, Name).
func grantToken(id string) string {
	var b [grantTokenRandSize]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString([]byte(grantTokenPrefix + id + ":" + hex.EncodeToString(b[:])))
}

// grantFromToken returns the grant ID a token names, or "".
func grantFromToken(token string) string {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return ""
	}
	rest, ok := strings.CutPrefix(string(b), grantTokenPrefix)
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, ":")
	if !ok || !grantIDPattern.MatchString(id) {
		return ""
	}
	return id
}

// checkGrantTokens applies the GrantTokens constraints and refuses a token
// devkms did not issue, or one of a grant that no longer exists.
func (s *Server) checkGrantTokens(tokens []string) error {
	if len(tokens) > MaxGrantTokens {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value at 'grantTokens' failed to satisfy constraint: Member must have length less than or equal to %d", MaxGrantTokens)
	}
	for i, t := range tokens {
		if len(t) < 1 || len(t) > MaxGrantTokenLen {
			return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value at 'grantTokens.%d.member' failed to satisfy constraint: Member must have length between 1 and %d", i+1, MaxGrantTokenLen)
		}
	}
	snap := s.store.snap()
	for _, t := range tokens {
		if id := grantFromToken(t); id == "" || snap.grants[id] == nil {
			return kmsapi.Errorf(kmsapi.InvalidGrantToken, msgInvalidToken)
		}
	}
	return nil
}

// checkGrantPrincipal validates GranteePrincipal or RetiringPrincipal.
func checkGrantPrincipal(member string, p *string, required bool) error {
	if p == nil && !required {
		return nil
	}
	if err := checkStringLen(member, p, 1, MaxGrantPrincipal); err != nil {
		return err
	}
	if !grantPrincipalPattern.MatchString(*p) {
		return kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[\\w+=,.@:/-]+$", shorten(*p), member)
	}
	if !principalPattern.MatchString(*p) && !accountPattern.MatchString(*p) {
		// KMS checks that the principal exists; devkms that it is one.
		return validationError("Invalid principal: " + shorten(*p) + " is not an AWS account, IAM user, IAM role or assumed-role ARN.")
	}
	return nil
}

// checkConstraints validates grant constraints for k.
func checkConstraints(k *key, c *types.GrantConstraints) error {
	if c == nil {
		return nil
	}
	if c.SourceArn != nil {
		return kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms does not support the SourceArn grant constraint.")
	}
	if (len(c.EncryptionContextEquals) > 0 || len(c.EncryptionContextSubset) > 0) && !k.isSymmetricEncryption() {
		// "You cannot use an encryption context grant constraint for
		// cryptographic operations with asymmetric KMS keys or HMAC KMS
		// keys." (CreateGrant, Constraints)
		return validationError("Encryption context grant constraints are supported only on symmetric encryption KMS keys.")
	}
	for member, m := range map[string]map[string]string{"constraints.encryptionContextEquals": c.EncryptionContextEquals, "constraints.encryptionContextSubset": c.EncryptionContextSubset} {
		if len(m) > MaxConstraintPairs {
			return kmsapi.Errorf(kmsapi.Validation, "%s has %d encryption context pairs; a grant constraint can include up to %d.", member, len(m), MaxConstraintPairs)
		}
		for ck, cv := range m {
			if ck == "" || cv == "" {
				return checkEncryptionContext(member, m)
			}
			if len(cv) > MaxConstraintValue {
				return kmsapi.Errorf(kmsapi.Validation, "%s: the value of %s is %d characters; a grant constraint value cannot exceed %d.", member, shorten(ck), len(cv), MaxConstraintValue)
			}
		}
	}
	return nil
}

// atLeastAsStrict reports whether a new grant's constraints are at least as
// strict as those of the grant that allowed creating it: "If a grant with an
// encryption context grant constraint includes the CreateGrant operation,
// the constraint requires that any grants created with the CreateGrant
// permission have an equally strict or stricter encryption context
// constraint" (CreateGrant, Constraints).
func atLeastAsStrict(parent keypolicy.Grant, c *types.GrantConstraints) bool {
	var eq, sub map[string]string
	if c != nil {
		eq, sub = c.EncryptionContextEquals, c.EncryptionContextSubset
	}
	contains := func(have, want map[string]string) bool {
		for k, v := range want {
			if have[k] != v {
				return false
			}
		}
		return true
	}
	if parent.EncryptionContextEquals != nil && !maps.Equal(eq, parent.EncryptionContextEquals) {
		return false
	}
	if parent.EncryptionContextSubset != nil {
		if !contains(eq, parent.EncryptionContextSubset) && !contains(sub, parent.EncryptionContextSubset) {
			return false
		}
	}
	return true
}

func (s *Server) createGrant(c *call) (any, error) {
	var in kms.CreateGrantInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if err := s.checkGrantTokens(in.GrantTokens); err != nil {
		return nil, err
	}
	if in.GranteeServicePrincipal != nil || in.RetiringServicePrincipal != nil {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms does not support grants for service principals.")
	}
	if err := checkGrantPrincipal("granteePrincipal", in.GranteePrincipal, true); err != nil {
		return nil, err
	}
	if err := checkGrantPrincipal("retiringPrincipal", in.RetiringPrincipal, false); err != nil {
		return nil, err
	}
	if len(in.Operations) == 0 {
		return nil, nullMember("operations")
	}
	for _, op := range in.Operations {
		if err := checkEnum("operations", op, types.GrantOperation("").Values()); err != nil {
			return nil, err
		}
	}
	if in.Name != nil {
		if err := checkStringLen("name", in.Name, 1, MaxGrantName); err != nil {
			return nil, err
		}
		if !grantNamePattern.MatchString(*in.Name) {
			return nil, kmsapi.Errorf(kmsapi.Validation, "1 validation error detected: Value '%s' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$", shorten(*in.Name))
		}
	}
	k, _, err := s.store.resolve(in.KeyId, keyOnly)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	ops := make([]string, 0, len(in.Operations))
	for _, op := range in.Operations {
		if !slices.Contains(ops, string(op)) {
			ops = append(ops, string(op))
		}
	}
	slices.Sort(ops)
	extra := map[string][]string{
		"kms:GranteePrincipal":      {*in.GranteePrincipal},
		"kms:GrantOperations":       ops,
		"kms:GrantIsForAWSResource": {"false"}, // no AWS service calls devkms
	}
	if in.RetiringPrincipal != nil {
		extra["kms:RetiringPrincipal"] = []string{*in.RetiringPrincipal}
	}
	if in.Constraints != nil {
		var kinds []string
		if in.Constraints.EncryptionContextEquals != nil {
			kinds = append(kinds, "EncryptionContextEquals")
		}
		if in.Constraints.EncryptionContextSubset != nil {
			kinds = append(kinds, "EncryptionContextSubset")
		}
		extra["kms:GrantConstraintType"] = kinds
	}
	a, err := s.authorizeKey(c, k, authzInput{action: "CreateGrant", extra: extra})
	if err != nil {
		return nil, err
	}
	if parent := a.DecidingGrant(); parent != nil {
		// "Principals who get CreateGrant permission from a grant have more
		// limited grant permissions" (KMS Developer Guide, "Controlling
		// access to grants"): no operation the grant does not have, and
		// constraints at least as strict.
		for _, op := range ops {
			if !slices.Contains(parent.Operations, op) {
				return nil, s.denied(c, "kms:CreateGrant", k.arn, "the grant that allows this CreateGrant ("+parent.ID+") does not allow "+op)
			}
		}
		if !atLeastAsStrict(*parent, in.Constraints) {
			return nil, s.denied(c, "kms:CreateGrant", k.arn, "the grant that allows this CreateGrant ("+parent.ID+") has encryption context constraints the new grant would loosen")
		}
	}
	if err := k.usable(); err != nil {
		return nil, err
	}
	valid := validGrantOperations(k)
	for _, op := range ops {
		if !slices.Contains(valid, op) {
			return nil, validationError("Grant operation " + op + " is not supported on a KMS key with key spec " + string(k.spec) + " and key usage " + string(k.usage) + ".")
		}
	}
	if err := checkConstraints(k, in.Constraints); err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	g := &grant{
		id: newGrantID(), keyID: k.id, name: aws.ToString(in.Name), grantee: *in.GranteePrincipal,
		retiring: aws.ToString(in.RetiringPrincipal), operations: ops,
		created: s.now().UTC().Truncate(time.Millisecond), issuer: accountRoot(c.principal, s.store.partition),
	}
	if in.Constraints != nil {
		g.ecEquals = maps.Clone(in.Constraints.EncryptionContextEquals)
		g.ecSubset = maps.Clone(in.Constraints.EncryptionContextSubset)
	}
	id := g.id
	err = s.store.update(func(next *snapshot) error {
		if next.keys[k.id] == nil {
			return kmsapi.Errorf(kmsapi.NotFound, "Key '%s' does not exist", k.arn)
		}
		n := 0
		for _, o := range next.grants {
			if o.keyID != k.id {
				continue
			}
			n++
			// "When this value is present, you can retry a CreateGrant
			// request with identical parameters; if the grant already
			// exists, the original GrantId is returned" (CreateGrant, Name).
			if g.name != "" && o.name == g.name && o.sameAs(g) {
				id = o.id
				return nil
			}
		}
		if n >= MaxGrantsPerKey {
			return kmsapi.Errorf(kmsapi.LimitExceeded, "The request was rejected because the key has %d grants, the most KMS allows.", MaxGrantsPerKey)
		}
		next.grants[g.id] = g
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &kms.CreateGrantOutput{GrantId: aws.String(id), GrantToken: aws.String(grantToken(id))}, nil
}

// sameAs reports whether two grants have the same parameters.
func (g *grant) sameAs(o *grant) bool {
	return g.keyID == o.keyID && g.grantee == o.grantee && g.retiring == o.retiring &&
		slices.Equal(g.operations, o.operations) && maps.Equal(g.ecEquals, o.ecEquals) && maps.Equal(g.ecSubset, o.ecSubset)
}

// accountRoot is the root ARN of the account of principal, or "".
func accountRoot(principal, partition string) string {
	if accountPattern.MatchString(principal) {
		return "arn:" + partition + ":iam::" + principal + ":root"
	}
	parts := strings.SplitN(principal, ":", 6)
	if len(parts) == 6 && parts[0] == "arn" && accountPattern.MatchString(parts[4]) {
		return "arn:" + parts[1] + ":iam::" + parts[4] + ":root"
	}
	return ""
}

func (g *grant) listEntry(keyARN string) types.GrantListEntry {
	e := types.GrantListEntry{
		GrantId: aws.String(g.id), KeyId: aws.String(keyARN), GranteePrincipal: aws.String(g.grantee),
		CreationDate: aws.Time(g.created), Operations: make([]types.GrantOperation, len(g.operations)),
	}
	for i, op := range g.operations {
		e.Operations[i] = types.GrantOperation(op)
	}
	if g.name != "" {
		e.Name = aws.String(g.name)
	}
	if g.retiring != "" {
		e.RetiringPrincipal = aws.String(g.retiring)
	}
	if g.issuer != "" {
		e.IssuingAccount = aws.String(g.issuer)
	}
	if g.ecEquals != nil || g.ecSubset != nil {
		e.Constraints = &types.GrantConstraints{EncryptionContextEquals: g.ecEquals, EncryptionContextSubset: g.ecSubset}
	}
	return e
}

// pageGrants returns one page of grants after the marker.
func pageGrants(all []*grant, limit *int32, marker *string, entry func(*grant) types.GrantListEntry) ([]types.GrantListEntry, *string, bool, error) {
	if err := checkIntRange("limit", limit, 1, MaxListGrantsLimit); err != nil {
		return nil, nil, false, err
	}
	n := DefaultListGrantsLimit
	if limit != nil {
		n = int(*limit)
	}
	after, err := decodeMarker(marker)
	if err != nil {
		return nil, nil, false, err
	}
	start := 0
	if after != "" {
		start = slices.IndexFunc(all, func(g *grant) bool { return g.id == after })
		if start < 0 {
			return nil, nil, false, kmsapi.Errorf(kmsapi.InvalidMarker, "The marker that specifies where pagination should next begin is not valid.")
		}
	}
	out := []types.GrantListEntry{}
	for _, g := range all[start:] {
		if len(out) == n {
			return out, encodeMarker(g.id), true, nil
		}
		out = append(out, entry(g))
	}
	return out, nil, false, nil
}

func (s *Server) listGrants(c *call) (any, error) {
	var in kms.ListGrantsInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if in.GranteeServicePrincipal != nil {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms does not support grants for service principals.")
	}
	if in.GrantId != nil && !grantIDPattern.MatchString(*in.GrantId) {
		return nil, kmsapi.Errorf(invalidGrantID, msgInvalidGrantID)
	}
	k, _, err := s.store.resolve(in.KeyId, keyOnly)
	if err != nil {
		return nil, err
	}
	c.keyID = k.id
	if _, err := s.authorizeKey(c, k, authzInput{action: "ListGrants", extra: map[string][]string{"kms:GrantIsForAWSResource": {"false"}}}); err != nil {
		return nil, err
	}
	all := s.store.snap().sortedGrants(func(g *grant) bool {
		return g.keyID == k.id && (in.GrantId == nil || g.id == *in.GrantId) &&
			(in.GranteePrincipal == nil || g.grantee == *in.GranteePrincipal)
	})
	entries, next, truncated, err := pageGrants(all, in.Limit, in.Marker, func(g *grant) types.GrantListEntry { return g.listEntry(k.arn) })
	if err != nil {
		return nil, err
	}
	return &kms.ListGrantsOutput{Grants: entries, NextMarker: next, Truncated: truncated}, nil
}

func (s *Server) listRetirableGrants(c *call) (any, error) {
	var in kms.ListRetirableGrantsInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if in.RetiringServicePrincipal != nil {
		return nil, kmsapi.Errorf(kmsapi.UnsupportedOperation, "devkms does not support grants for service principals.")
	}
	if err := checkGrantPrincipal("retiringPrincipal", in.RetiringPrincipal, true); err != nil {
		return nil, err
	}
	// "Required permissions: kms:ListRetirableGrants (IAM policy) in your
	// Amazon Web Services account ... The authorized resource in
	// ListRetirableGrants calls is the retiring principal specified in the
	// request." (ListRetirableGrants API reference)
	if err := s.authorizeIAM(c, "ListRetirableGrants", *in.RetiringPrincipal, nil); err != nil {
		return nil, err
	}
	snap := s.store.snap()
	all := snap.sortedGrants(func(g *grant) bool { return g.retiring == *in.RetiringPrincipal })
	entries, next, truncated, err := pageGrants(all, in.Limit, in.Marker, func(g *grant) types.GrantListEntry {
		return g.listEntry(s.store.keyARN(g.keyID))
	})
	if err != nil {
		return nil, err
	}
	return &kms.ListRetirableGrantsOutput{Grants: entries, NextMarker: next, Truncated: truncated}, nil
}

// findGrant resolves the grant of RetireGrant (token, or key and grant ID)
// and RevokeGrant (key and grant ID).
func (s *Server) findGrant(token, keyID, grantID *string) (*grant, error) {
	snap := s.store.snap()
	if token != nil {
		if err := checkStringLen("grantToken", token, 1, MaxGrantTokenLen); err != nil {
			return nil, err
		}
		id := grantFromToken(*token)
		if id == "" {
			return nil, kmsapi.Errorf(kmsapi.InvalidGrantToken, msgInvalidToken)
		}
		g := snap.grants[id]
		if g == nil {
			return nil, kmsapi.Errorf(kmsapi.NotFound, msgGrantNotFound)
		}
		return g, nil
	}
	if keyID == nil || grantID == nil {
		return nil, validationError("Either GrantToken, or both KeyId and GrantId, must be specified.")
	}
	if !grantIDPattern.MatchString(*grantID) {
		return nil, kmsapi.Errorf(invalidGrantID, msgInvalidGrantID)
	}
	k, _, err := s.store.resolve(keyID, keyOnly)
	if err != nil {
		return nil, err
	}
	g := snap.grants[*grantID]
	if g == nil || g.keyID != k.id {
		return nil, kmsapi.Errorf(kmsapi.NotFound, msgGrantNotFound)
	}
	return g, nil
}

func (s *Server) deleteGrant(id string) error {
	return s.store.update(func(next *snapshot) error {
		if next.grants[id] == nil {
			return kmsapi.Errorf(kmsapi.NotFound, msgGrantNotFound)
		}
		delete(next.grants, id)
		return nil
	})
}

func (s *Server) retireGrant(c *call) (any, error) {
	var in kms.RetireGrantInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	g, err := s.findGrant(in.GrantToken, in.KeyId, in.GrantId)
	if err != nil {
		return nil, err
	}
	c.keyID = g.keyID
	k := s.store.snap().keys[g.keyID]
	if k == nil {
		return nil, kmsapi.Errorf(kmsapi.NotFound, msgGrantNotFound)
	}
	// "This operation can be called by the retiring principal for a grant,
	// by the grantee principal if the grant allows the RetireGrant
	// operation, and by the Amazon Web Services account in which the grant
	// is created. It can also be called by principals to whom permission
	// for retiring a grant is delegated." (RetireGrant API reference)
	allowed := keypolicy.PrincipalNames(g.retiring, c.principal) ||
		(slices.Contains(g.operations, "RetireGrant") && keypolicy.PrincipalNames(g.grantee, c.principal)) ||
		(g.issuer != "" && c.principal == g.issuer)
	if !allowed {
		if _, err := s.authorizeKey(c, k, authzInput{action: "RetireGrant"}); err != nil {
			return nil, err
		}
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	if err := s.deleteGrant(g.id); err != nil {
		return nil, err
	}
	return &kms.RetireGrantOutput{}, nil
}

func (s *Server) revokeGrant(c *call) (any, error) {
	var in kms.RevokeGrantInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	if in.GrantId == nil {
		return nil, nullMember("grantId")
	}
	if in.KeyId == nil {
		return nil, nullMember("keyId")
	}
	g, err := s.findGrant(nil, in.KeyId, in.GrantId)
	if err != nil {
		return nil, err
	}
	c.keyID = g.keyID
	k := s.store.snap().keys[g.keyID]
	if k == nil {
		return nil, kmsapi.Errorf(kmsapi.NotFound, msgGrantNotFound)
	}
	if _, err := s.authorizeKey(c, k, authzInput{action: "RevokeGrant", extra: map[string][]string{"kms:GrantIsForAWSResource": {"false"}}}); err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	if err := s.deleteGrant(g.id); err != nil {
		return nil, err
	}
	return &kms.RevokeGrantOutput{}, nil
}
