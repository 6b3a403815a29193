// Package cms reads and writes the CMS EnvelopedData that AWS KMS returns in
// CiphertextForRecipient when a caller attaches a Nitro Enclaves attestation
// document to Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom or
// DeriveSharedSecret.
//
// kmsproxyd needs it to turn that envelope back into the plaintext KMS would
// otherwise have returned, inside the enclave and with the enclave's own RSA
// key; devkms and the tests need the inverse, an envelope in exactly the layout
// KMS emits, so the daemon can be exercised without AWS.
//
// The accepted shape is narrow on purpose: RFC 5652 ContentInfo →
// EnvelopedData with exactly one KeyTransRecipientInfo, RSAES-OAEP with SHA-256
// and MGF1-SHA-256 (RFC 4055), and AES-256-CBC content (RFC 3565) in BER
// (indefinite lengths, chunked content, as KMS writes it) or DER (as OpenSSL
// writes it without -stream). Everything else is refused with an [*Error]
// whose Kind is one of the Err* sentinels. Parsing never panics and every
// untrusted size is capped by a named limit (MaxEnvelopeSize, MaxDepth,
// MaxChunks, MaxPlaintext).
//
// The format authenticates nothing (AES-CBC without a MAC): damage to the IV
// or to early ciphertext blocks decrypts to a different plaintext without an
// error. Envelopes must come over a channel that protects their integrity;
// kmsproxyd gets them over TLS that ends inside the enclave.
//
// Decrypt takes *rsa.PrivateKey values; DecryptWithKeys takes keys from
// NewKey, whose recipient identifier is computed once and whose private key
// is handed to the RSA backend once (kmsproxyd's hot path). The RSA-OAEP
// unwrap, the one CPU-heavy step, has two backends (Backend): crypto/rsa,
// always linked, and OpenSSL's libcrypto through cgo, linked and made the
// default by building with CGO_ENABLED=1 and -tags openssl (the enclave
// image does, statically). Both give the same plaintexts and the same
// errors; Key.Destroy frees and clears a key in both. Parse and (*Envelope).Summary serve `kmsproxyctl cms inspect`;
// Encrypt serves devkms. The package does not log; callers must not log the
// plaintext it returns.
package cms

//go:generate go run gen_vectors.go -out testdata
