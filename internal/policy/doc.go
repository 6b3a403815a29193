// Package policy is kmsproxyd's listener policy: what the parent instance and
// the apps inside the enclave may ask kmsproxyd to do with the enclave's KMS
// keys.
//
// kmsproxyd serves the same KMS API on two listeners, "parent" (vsock, for
// the parent EC2 instance, which the enclave does not trust) and "local"
// (loopback, for code inside the enclave). KMS itself cannot tell them apart:
// both reach KMS with the enclave's attestation, so a key policy that trusts
// the enclave's measurements trusts whatever kmsproxyd lets the parent do.
// The policy file is that statement. It is baked into the enclave image, so
// it is part of the measured image (PCR0 measures the whole enclave image
// file, PCR2 the user application; AWS Nitro Enclaves User Guide,
// "Cryptographic attestation", "Where to get an enclave's measurements"), and
// a key policy that pins those PCRs pins this policy with them.
//
// # File format
//
//	kms:
//	  accounts: ["111122223333"]                        # whose keys kmsproxyd may use
//	  regions: [eu-west-1]                              # optional
//	  keys: ["arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"]
//	listeners:
//	  parent:
//	    operations: [Decrypt, GenerateDataKey]            # or ["*"]
//	    keys: ["arn:aws:kms:*:111122223333:key/*", "alias/app-*"]
//	    encryption_context: {tenant: "*"}
//	    without_encryption_context: [GenerateRandom]
//	    plaintext: true
//	    credentials_push: true
//	    control: [healthz, readyz, metrics, attestation]
//	    max_inflight: 64
//	    max_connections: 128
//	    metrics_all_listeners: false
//	  local:
//	    operations: ["*"]
//	    plaintext: true
//	    decrypt_cache: {max_age: 5m, max_uses: 1000, max_entries: 10000}
//
// The top level holds kms and listeners. kms (see Pin) names the 12-digit
// AWS account IDs, quoted, optionally the regions, and the key ARN patterns
// of the keys kmsproxyd may use: every key KMS answers with must be in them
// (AllowAnsweredKey), and a region outside kms.regions stops kmsproxyd at
// start (AllowRegion). kms.keys takes key ARNs only: an alias, an
// incomplete ARN, a pattern for every key id (key/*) and a key of an
// account or region the other lists leave out are errors. Without
// kms.accounts the policy loads and AccountsWarning says that the parent
// instance chooses the account; without kms.keys, KeysWarning says that any
// key of the pinned accounts is accepted. The listener names are parent and
// local. In a listener, an omitted field denies:
//
//   - operations omitted: no operation. "*" allows every operation in
//     AttestedOperations and PassThroughOperations; otherwise exact,
//     case-sensitive names from those lists.
//   - keys omitted: any key. Otherwise a request must name its key (KeyId)
//     with an identifier matching one of the patterns (see Rules.AllowKey),
//     and when some patterns can match a key ARN, the key KMS answers with
//     must match one of those (see Rules.AllowAnsweredKey). An empty list
//     is an error: omit the field to allow any key.
//   - encryption_context omitted: no requirement. Otherwise every listed key
//     must be in the request's encryption context with a value matching the
//     glob ("*": present, any value), and the operations that carry no
//     encryption context (all but ContextOperations) are refused unless
//     without_encryption_context names them.
//   - without_encryption_context omitted: none. It is an error without
//     encryption_context, and so is listing, under operations, an operation
//     without a context that it does not name.
//   - plaintext omitted: false, and attested operations (those whose answer
//     carries plaintext) are refused on the listener. Listing an attested
//     operation by name on a listener with plaintext false is an error,
//     because it could never succeed.
//   - credentials_push omitted: false (PUT /v1/credentials refused).
//   - control omitted: [healthz, readyz]. An explicit [] allows none; "*"
//     allows every name in ControlEndpoints.
//   - max_inflight omitted: kmsproxyd's --max-inflight; max_connections
//     omitted: DefaultMaxConnections. Each listener has its own.
//   - metrics_all_listeners omitted: false: /metrics on the listener shows
//     only its own series.
//   - decrypt_cache omitted: no cache, every Decrypt goes to KMS. Otherwise
//     (see DecryptCache) kmsproxyd answers a Decrypt identical to one KMS
//     answered on this listener from its memory, for at most max_age (1s to
//     1h, a Go duration with its unit), max_uses times, holding at most
//     max_entries answers (1 to 100,000). All three are required, and the
//     listener must be able to call Decrypt and receive plaintext.
//   - a listener absent from the file may do nothing but healthz and readyz.
//
// Patterns (keys, encryption context values) are globs in which "*" matches
// any run of characters, ":" and "/" included, and "?" matches one
// character. Matching is case-sensitive: KMS compares encryption contexts
// case-sensitively, and for key identifiers a case-sensitive match can only
// refuse more, never less.
//
// The file is checked strictly when kmsproxyd starts: unknown fields,
// listener, operation and control names, wrong types, duplicate keys, YAML
// anchors and aliases, and malformed patterns are errors (*ParseError) that
// name the file, line and column of the offending node. A file is at most
// MaxFileSize bytes and a pattern at most MaxPatternLength bytes.
//
// # Built-in default
//
// Without a policy file kmsproxyd uses Default: both listeners may call every
// operation on any key and receive plaintext, and the parent may push
// credentials (the behaviour of AWS's kmstool-enclave-cli, which decrypts
// whatever the parent sends); no account or key is pinned. kmsproxyd logs
// Warnings once at start.
//
// # Evaluation
//
// kmsproxyd looks up the Rules of the listener a request arrived on and asks,
// before calling KMS, AllowOperation, AllowPlaintext, AllowKey (for each key
// the request names; not for GenerateRandom) and AllowEncryptionContext (for
// operations that carry one), and, once KMS has answered and before anything
// of the answer leaves the enclave's memory, AllowAnsweredKey for each key
// the answer names (every operation but GenerateRandom), after checking
// that the key is in its own partition and region (Home). Control requests
// ask AllowControl, credential pushes AllowCredentialsPush. A refusal is a
// *Denied whose message is fit for an AccessDeniedException. The package
// does no logging and no I/O apart from Load reading the file; a Policy and
// its Rules are read-only after construction and safe for concurrent use.
package policy
