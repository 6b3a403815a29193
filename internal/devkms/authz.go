package devkms

import (
	"log/slog"
	"strconv"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// defaultPolicy is the key policy KMS attaches when CreateKey has no Policy:
// "Id": "key-default-1" with the statement "Enable IAM User Permissions" that
// gives the account root kms:* on the key (KMS Developer Guide, "Default key
// policy").
func defaultPolicy(partition, account string) string {
	return `{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {
      "AWS" : "arn:` + partition + `:iam::` + account + `:root"
    },
    "Action" : "kms:*",
    "Resource" : "*"
  } ]
}`
}

// authzInput is the request-specific part of an authorization question.
type authzInput struct {
	action string // without "kms:"
	// ec is the request's encryption context (kms:EncryptionContext:*).
	ec map[string]string
	// recipient, when the request carries a verified Recipient, adds the
	// kms:RecipientAttestation:* keys.
	recipient *verifiedRecipient
	// extra holds other condition keys (kms:EncryptionAlgorithm, ...).
	extra map[string][]string
}

// authorize evaluates k's key policy for the caller and answers
// AccessDeniedException in KMS's words when it does not allow the action.
// KMS builds the request context from the caller (kms:CallerAccount,
// aws:PrincipalArn), the encryption context, the Recipient's attestation
// document and the key (KMS Developer Guide, "AWS KMS condition keys").
func (s *Server) authorize(c *call, k *key, in authzInput) error {
	ctxs := []map[string][]string{
		keypolicy.CallerContext(c.principal),
		keyContext(k),
		{"aws:SecureTransport": {strconv.FormatBool(c.secure)}},
	}
	if len(in.ec) > 0 {
		ctxs = append(ctxs, keypolicy.EncryptionContext(in.ec))
	}
	if in.recipient != nil {
		ctxs = append(ctxs, in.recipient.context)
	}
	if in.extra != nil {
		ctxs = append(ctxs, in.extra)
	}
	req := keypolicy.Request{
		Principal: c.principal,
		Action:    "kms:" + in.action,
		Resource:  k.arn,
		Context:   keypolicy.MergeContext(ctxs...),
	}
	d := k.policy.Evaluate(req)
	if d.Allowed {
		return nil
	}
	if s.log.Enabled(c.ctx, slog.LevelDebug) {
		// Condition values are encryption context and PCRs: not secret
		// (KMS logs encryption contexts in CloudTrail in the clear).
		s.log.Debug("key policy denied the request", "op", c.op, "key", k.id, "explanation", d.Explain())
	}
	return kmsapi.Errorf(kmsapi.AccessDenied, "%s", d.AccessDeniedMessage(req))
}

// keyContext holds the condition keys KMS derives from the key itself.
func keyContext(k *key) map[string][]string {
	return map[string][]string{
		"kms:KeySpec":   {string(k.spec)},
		"kms:KeyUsage":  {string(k.usage)},
		"kms:KeyOrigin": {"AWS_KMS"},
	}
}
