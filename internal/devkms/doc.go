// Package devkms is a local AWS KMS for development and tests that, unlike
// other KMS emulators, understands the Nitro Enclaves Recipient parameter.
//
// Nobody can exercise an enclave's KMS path without AWS and Nitro hardware:
// the widely used local-kms ignores Recipient and returns plaintext. devkms
// answers the KMS JSON 1.1 API (POST /, X-Amz-Target: TrentService.<Op>) the
// way AWS KMS does, so unmodified AWS SDKs and the AWS CLI work against it
// with an endpoint override, and it implements the attested path for real:
// it verifies the attestation document in Recipient, a Nitro Enclave's or an
// EC2 instance's NitroTPM's (COSE signature, chain to a trusted root,
// freshness, the module ID form of its kind, an RSA public key), evaluates
// the key policy with the condition keys of the document's kind
// (kms:RecipientAttestation:ImageSha384 and PCR<n> for an enclave,
// NitroTPMPCR<n> for an instance, never the other's), logs the document as
// KMS's CloudTrail records it, and answers with CiphertextForRecipient in
// the CMS layout AWS KMS emits and no plaintext.
//
// Every request is authorized as KMS authorizes it (internal/keypolicy): the
// key policy, the caller's identity-based (IAM) policies from an IAM
// policies file, and the key's grants, which devkms implements (CreateGrant,
// ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, grant tokens
// and constraints); alias operations need permission on the alias and on
// every key they touch. A refusal is logged with the statement or grant and
// the condition that decided. With a credentials file (or IMDS) callers are
// authenticated with SigV4 and mapped to principal ARNs, otherwise every
// caller is the account root. Keys, aliases
// and policies can live in a state file that survives restarts and can be
// created idempotently from a seed file. Fault injection (latency,
// ThrottlingException, KMSInternalException) can be set by flag or at run
// time on /devkms/faults.
//
// devkms can also stand in for the EC2 instance metadata service (IMDSv2
// only, Config.IMDS), so that kmsproxyd's default --credentials imds runs
// without an instance: it serves an instance role's temporary credentials,
// which rotate as EC2's do and which devkms's SigV4 verification accepts
// until they expire, as the role's assumed-role session.
//
// devkms is a development tool. Its state file holds key material in the
// clear, its ciphertext format is its own (not AWS's), and it never contacts
// AWS: never point it at real secrets. Use New to run it in-process (it is an
// http.Handler), cmd/devkms to run it as a program, and the devkmstest
// package to start a TLS instance from a test.
package devkms
