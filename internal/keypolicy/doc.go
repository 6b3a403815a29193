// Package keypolicy parses and evaluates AWS KMS key policies, the caller's
// identity-based (IAM) policies and the key's grants, so that devkms can
// authorise every request the way AWS KMS does and `kmsproxyctl policy
// check` can say which statement and which condition decided a request that
// real KMS would only answer with an opaque AccessDeniedException.
//
// It implements the subset of the IAM policy grammar that KMS key policies
// use: Version, Id, Statement (object or array), Sid, Effect, Principal /
// NotPrincipal, Action / NotAction, Resource / NotResource and Condition with
// the String*, Arn*, Bool and Null operators, their IfExists forms and the
// ForAnyValue: / ForAllValues: set qualifiers. Policy.Evaluate decides one
// policy with the IAM rules (an explicit Deny wins, otherwise one applicable
// Allow allows, and no applicable Allow is an implicit deny); Authorize
// combines the layers as KMS does: an explicit Deny anywhere wins; a key
// policy statement that names the caller's account only delegates to the
// caller's IAM policies; a grant allows its grantee its operations.
// Policy.Warnings points out what KMS accepts but silently never matches: a
// misspelt action or condition key.
//
// It is a pure library: no logging and no I/O. The caller builds the request
// context (the condition keys and their values) itself; DocumentContext
// (AttestationContext for an enclave's document, NitroTPMAttestationContext
// for an instance's), EncryptionContext and CallerContext build the keys KMS
// derives from a Recipient attestation document, the encryption context and
// the caller.
//
// Where keypolicy departs from AWS KMS, it is stricter:
//
//   - Policy variables (${...}) in Version 2012-10-17 documents are refused at
//     parse time instead of being substituted.
//   - The Numeric*, Date*, IpAddress, NotIpAddress and BinaryEquals operators
//     are valid IAM but are refused at parse time. Null takes neither
//     IfExists nor a set qualifier.
//   - A JSON object that repeats a member name is refused rather than read
//     with the last value winning.
//   - NotPrincipal exempts a caller only when it names every level of the
//     caller's identity (account, role, session), the reading of the IAM
//     documentation that denies the most.
//   - A grant whose grantee is an account admits only the account's root
//     user.
//   - Service control policies, permission boundaries and session policies
//     are not modelled: they can only take permissions away.
package keypolicy
