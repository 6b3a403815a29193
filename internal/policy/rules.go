package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Denied is a request the policy refuses. Its message is written for the
// caller, who gets it in an AccessDeniedException: it names the listener and
// the rule so the operator knows which line of the policy to change, and it
// never carries request data beyond an operation name, a key identifier or
// an encryption context key (KMS logs all three in CloudTrail; the AWS KMS
// API reference warns against putting confidential data in them).
type Denied struct {
	// Listener is the listener the request came in on.
	Listener string
	// Rule is the policy path that refused it, e.g.
	// "listeners.parent.operations".
	Rule string
	// Reason says what the listener may not do, e.g. "may not call
	// GenerateDataKeyPair".
	Reason string
}

// Error implements error: `listener "parent" may not call
// GenerateDataKeyPair (policy: listeners.parent.operations)`.
func (d *Denied) Error() string {
	return fmt.Sprintf("listener %q %s (policy: %s)", d.Listener, d.Reason, d.Rule)
}

// maxEcho bounds how much of a caller-supplied identifier a Denied message
// repeats. An alias ARN, the longest identifier KMS accepts, is at most
// about 320 bytes: a 256-character alias name ("Create aliases", AWS KMS
// Developer Guide) after "arn:aws-us-gov:kms:REGION:ACCOUNT:" and "alias/".
// Anything longer is not a KMS identifier and is cut.
const maxEcho = 320

// echo quotes a caller-supplied string for a message, cut at maxEcho bytes
// on a character boundary. %q escaping keeps control characters out.
func echo(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

// path returns the policy path of one of r's fields.
func (r *Rules) path(field string) string {
	if r.absent || field == "" {
		return "listeners." + r.listener
	}
	return "listeners." + r.listener + "." + field
}

// deny builds a Denied for field. For a listener absent from the policy
// file the reason says so, since there is no line to point at.
func (r *Rules) deny(field, reason string) *Denied {
	if r.absent {
		reason += ": the listener is not in the policy, so it may use only healthz and readyz"
	}
	return &Denied{Listener: r.listener, Rule: r.path(field), Reason: reason}
}

// AllowOperation returns nil when the listener may call op, the KMS operation
// name from X-Amz-Target ("TrentService.<op>"), or a *Denied naming the
// operations rule. "*" allows every name in AttestedOperations and
// PassThroughOperations and nothing else.
func (r *Rules) AllowOperation(op string) error {
	if !isOperation(op) {
		return r.deny("operations", fmt.Sprintf("may not call %s: not an operation kmsproxyd serves", echo(op)))
	}
	if !slices.Contains(r.Operations, Wildcard) && !slices.Contains(r.Operations, op) {
		return r.deny("operations", "may not call "+op)
	}
	if len(r.EncryptionContext) > 0 && !slices.Contains(ContextOperations, op) && !r.contextFreeAllowed(op) {
		return r.deny("encryption_context", fmt.Sprintf("must send an encryption context, and %s carries none: "+
			"name it under without_encryption_context to allow it on this listener anyway", op))
	}
	return nil
}

// contextFreeAllowed reports whether without_encryption_context names op.
func (r *Rules) contextFreeAllowed(op string) bool {
	return slices.Contains(r.WithoutEncryptionContext, Wildcard) || slices.Contains(r.WithoutEncryptionContext, op)
}

// KeysRestricted reports whether the listener's keys rule lists patterns, in
// which case every request that uses a key must name it (KeyId) and the name
// must match.
func (r *Rules) KeysRestricted() bool { return len(r.Keys) > 0 }

// AllowKey returns nil when the listener may use the key a request names, or
// a *Denied naming the keys rule. keyID is the request's KeyId (or, for
// ReEncrypt, each of SourceKeyId and DestinationKeyId) as the caller wrote
// it: a key id, key ARN, alias name or alias ARN. It matches when it matches
// any pattern as a whole string; an alias pattern does not match the key the
// alias points to, nor a key ARN pattern a bare key id, since the policy
// cannot resolve either. Operations that take no key (GenerateRandom) are
// not subject to this rule.
//
// An empty keyID is refused when keys are restricted: KMS lets Decrypt of a
// symmetric ciphertext omit KeyId and then uses whichever key the ciphertext
// names (KMS API reference, Decrypt: "If the ciphertext was encrypted under a
// symmetric encryption KMS key, the KeyId parameter is optional"), which the
// policy could only check after the fact. See AllowAnsweredKey for the check
// on KMS's answer.
func (r *Rules) AllowKey(keyID string) error {
	if !r.KeysRestricted() {
		return nil
	}
	if keyID == "" {
		return r.deny("keys", "may use only the keys the policy lists, so the request must name its key: send KeyId (a key ARN or an alias)")
	}
	if r.matchKey(keyID) {
		return nil
	}
	return r.deny("keys", "may not use key "+echo(keyID))
}

func (r *Rules) matchKey(keyID string) bool {
	for _, p := range r.Keys {
		if match(p, keyID) {
			return true
		}
	}
	return false
}

// AllowAnsweredKey is the check kmsproxyd makes on KMS's answer before
// anything of it reaches the caller: answered is the key ARN KMS says it
// used (KeyId, or for ReEncrypt each of SourceKeyId and KeyId, or for
// DescribeKey KeyMetadata.Arn) and requested the identifier the request
// named, which AllowKey has already allowed ("" when it named none). It
// applies to every operation but GenerateRandom, which uses no key, on every
// listener, whatever the request named, and in this order:
//
//   - the policy's kms: section (see Pin): when it names accounts, regions
//     or keys, answered must be a key ARN of one of those accounts and
//     regions, matching one of those key patterns. The parent instance
//     chooses the account kmsproxyd's credentials belong to, and KMS
//     resolves an alias, a bare key id or (for Decrypt without KeyId) the
//     ciphertext's key in that account, so this is the only check that
//     holds whatever the request named.
//   - the listener's keys rule, when it lists patterns. When some of them
//     can match a key ARN (see namesKeyARNs), answered must match one of
//     those: the other patterns (aliases, bare key ids) only say which names
//     a caller may use, never which key they lead to. An alias can be moved
//     to another key (UpdateAlias, or DeleteAlias and CreateAlias, or
//     CreateAlias again once KMS has deleted the key it pointed to with its
//     aliases), so an alias pattern must not vouch for whatever key it
//     points to today when the policy also says which key it means. When
//     none can, the listener names its keys only by alias or bare key id,
//     and requested must have matched one of its patterns and not be a key
//     ARN; a requested bare key id must be the id of the key answered (KMS
//     resolves it to that key in the caller's account; a multi-Region key
//     keeps its id in every region). Which account and which key an alias
//     was resolved to is then the kms: section's business, above.
//
// An answer that names no key fails both checks whenever either applies.
// The *Denied names the rule but neither the answered key nor its account:
// nothing of a refused answer reaches the caller.
func (r *Rules) AllowAnsweredKey(requested, answered string) error {
	if err := r.allowPinned(answered); err != nil {
		return err
	}
	if !r.KeysRestricted() {
		return nil
	}
	if answered == "" {
		return r.deny("keys", "may use only the keys the policy lists, and KMS's answer names no key")
	}
	namesARNs := false
	for _, p := range r.Keys {
		if namesKeyARNs(p) {
			if match(p, answered) {
				return nil
			}
			namesARNs = true
		}
	}
	if namesARNs {
		return r.deny("keys", "may use only the keys the policy lists, and KMS answered with a key that matches none of its key ARN patterns "+
			"(an alias or key id pattern says which names a caller may use, not which key they lead to)")
	}
	if requested != "" && !isKeyARN(requested) && r.matchKey(requested) {
		if a, ok := parseKeyARN(answered); ok && (!isBareKeyID(requested) || a.id == requested) {
			return nil
		}
	}
	return r.deny("keys", "may use only the keys the policy lists, and KMS answered with a key that matches none of them")
}

// namesKeyARNs reports whether the key pattern p can match a key ARN,
// arn:PARTITION:kms:REGION:ACCOUNT:key/ID. A key ARN starts with "arn:"
// and never holds "alias/" (key ids are hexadecimal, or "mrk-" and
// hexadecimal), so an alias name or alias ARN pattern, and a bare key id
// pattern, cannot; a pattern starting with a wildcard or an ARN pattern
// whose resource may start with "key/" can. When in doubt (a pattern that
// cannot match any key ARN but is not recognised as such) it says yes,
// which only refuses more answers.
func namesKeyARNs(p string) bool {
	switch {
	case strings.Contains(p, "alias/"):
		return false
	case p != "" && (p[0] == '*' || p[0] == '?'):
		return true
	case !strings.HasPrefix(p, "arn:"):
		return false
	}
	f := strings.SplitN(p, ":", 6)
	return len(f) < 6 || couldStartWith(f[5], "key/")
}

// isKeyARN reports whether id has the form of a key ARN,
// arn:PARTITION:kms:REGION:ACCOUNT:key/ID.
func isKeyARN(id string) bool {
	f := strings.SplitN(id, ":", 6)
	return len(f) == 6 && f[0] == "arn" && f[2] == "kms" && strings.HasPrefix(f[5], "key/")
}

// isBareKeyID reports whether id is neither an ARN nor an alias name: a
// key id as KMS accepts it in KeyId.
func isBareKeyID(id string) bool {
	return !strings.HasPrefix(id, "arn:") && !strings.HasPrefix(id, "alias/")
}

// AllowEncryptionContext returns nil when ec, the request's encryption
// context, holds every key the listener's encryption_context rule requires
// with a value matching its glob, or a *Denied naming the first (in byte
// order) required key that is missing or does not match. The message names
// the key and the pattern, never the value the caller sent. kmsproxyd
// applies it to the operations that carry an encryption context (for
// ReEncrypt, both SourceEncryptionContext and DestinationEncryptionContext).
func (r *Rules) AllowEncryptionContext(ec map[string]string) error {
	var failKey string
	failed := false
	for k, pattern := range r.EncryptionContext {
		if v, ok := ec[k]; ok && match(pattern, v) {
			continue
		}
		if !failed || k < failKey {
			failKey, failed = k, true
		}
	}
	if !failed {
		return nil
	}
	field := "encryption_context" + pathKey(failKey)
	pattern := r.EncryptionContext[failKey]
	if _, ok := ec[failKey]; !ok {
		return r.deny(field, "must send encryption context key "+echo(failKey))
	}
	return r.deny(field, fmt.Sprintf("must send an encryption context value for %s that matches %q", echo(failKey), pattern))
}

// AllowPlaintext returns nil when the listener may receive the answer of op,
// or a *Denied naming the plaintext rule when op is an attested operation
// (its answer carries plaintext) and the listener has plaintext false.
// Pass-through operations always pass: their answers carry no plaintext.
func (r *Rules) AllowPlaintext(op string) error {
	if !IsAttested(op) || r.Plaintext {
		return nil
	}
	return r.deny("plaintext", fmt.Sprintf("may not receive plaintext, so it may not call %s", op))
}

// AllowCredentialsPush returns nil when the listener may push credentials
// (PUT /v1/credentials), or a *Denied naming the credentials_push rule.
func (r *Rules) AllowCredentialsPush() error {
	if r.CredentialsPush {
		return nil
	}
	return r.deny("credentials_push", "may not push credentials")
}

// AllowControl returns nil when the listener may use the named control
// endpoint (one of ControlEndpoints), or a *Denied naming the control rule.
func (r *Rules) AllowControl(name string) error {
	if !slices.Contains(ControlEndpoints, name) {
		return r.deny("control", fmt.Sprintf("may not use %s: not a control endpoint", echo(name)))
	}
	if slices.Contains(r.Control, Wildcard) || slices.Contains(r.Control, name) {
		return nil
	}
	return r.deny("control", "may not use the "+name+" endpoint")
}

// joinPath appends a map key to a policy path.
func joinPath(path, key string) string {
	if path == "" && pathKey(key)[0] == '.' {
		return key
	}
	return path + pathKey(key)
}

// pathKey renders a map key as a path element: ".name" when it is a plain
// name, `["odd key"]` otherwise.
func pathKey(k string) string {
	plain := k != ""
	for i := 0; i < len(k) && plain; i++ {
		c := k[i]
		plain = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
	}
	if plain {
		return "." + k
	}
	return "[" + echo(k) + "]"
}
