// Package keypolicy parses and evaluates AWS KMS key policies, so that devkms
// can authorise every request the way AWS KMS does and `kmsproxyctl policy
// check` can say which statement and which condition refused a request that
// real KMS would only answer with an opaque AccessDeniedException.
//
// It implements the subset of the IAM policy grammar that KMS key policies
// use: Version, Id, Statement (object or array), Sid, Effect, Principal /
// NotPrincipal, Action / NotAction, Resource / NotResource and Condition with
// the String*, Arn*, Bool and Null operators, their IfExists forms and the
// ForAnyValue: / ForAllValues: set qualifiers. Evaluation follows the IAM
// rules: an explicit Deny wins, otherwise one applicable Allow allows, and no
// applicable Allow is an implicit deny.
//
// It is a pure library: no logging and no I/O. The caller builds the request
// context (the condition keys and their values) itself; AttestationContext,
// EncryptionContext and CallerContext build the keys KMS derives from the
// Recipient attestation document, the encryption context and the caller.
//
// Where keypolicy departs from AWS KMS, it is stricter, except in the first
// point:
//
//   - A statement whose principal is an account ("arn:aws:iam::ACCT:root" or
//     "ACCT") matches every principal of that account. Real KMS then also
//     requires an IAM policy of the caller to allow the action; devkms has no
//     IAM policies and treats the key policy's Allow as sufficient.
//   - Policy variables (${...}) in Version 2012-10-17 documents are refused at
//     parse time instead of being substituted.
//   - The Numeric*, Date*, IpAddress, NotIpAddress and BinaryEquals operators
//     are valid IAM but are refused at parse time: no KMS condition key used
//     here needs them. Null takes neither IfExists nor a set qualifier.
//   - A JSON object that repeats a member name is refused rather than read
//     with the last value winning.
//   - NotPrincipal exempts a caller only when it names every level of the
//     caller's identity (account, role, session), the reading of the IAM
//     documentation that denies the most.
package keypolicy
