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
	// ec is the request's encryption context (kms:EncryptionContext:*,
	// grant constraints).
	ec map[string]string
	// recipient, when the request carries a verified Recipient, adds the
	// kms:RecipientAttestation:* keys.
	recipient *verifiedRecipient
	// extra holds other condition keys (kms:EncryptionAlgorithm, ...).
	extra map[string][]string
}

// requestContext builds the condition keys of a request: KMS derives them
// from the caller (kms:CallerAccount, aws:PrincipalArn), the encryption
// context, the Recipient's attestation document and the key (KMS Developer
// Guide, "AWS KMS condition keys").
func (s *Server) requestContext(c *call, k *key, in authzInput) map[string][]string {
	ctxs := []map[string][]string{
		keypolicy.CallerContext(c.principal),
		{"aws:SecureTransport": {strconv.FormatBool(c.secure)}},
	}
	if k != nil {
		ctxs = append(ctxs, keyContext(k))
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
	return keypolicy.MergeContext(ctxs...)
}

// authorize is authorizeKey for callers that need only the verdict.
func (s *Server) authorize(c *call, k *key, in authzInput) error {
	_, err := s.authorizeKey(c, k, in)
	return err
}

// authorizeKey decides an action on key k with every layer KMS consults:
// k's key policy, the caller's identity-based policies and k's grants
// (keypolicy.Authorize). A refusal is AccessDeniedException in KMS's words,
// and its reason is kept for the request log.
func (s *Server) authorizeKey(c *call, k *key, in authzInput) (keypolicy.Authorization, error) {
	a := keypolicy.Authorize(keypolicy.Input{
		Request: keypolicy.Request{
			Principal: c.principal,
			Action:    "kms:" + in.action,
			Resource:  k.arn,
			Context:   s.requestContext(c, k, in),
		},
		KeyPolicy:         k.policy,
		IdentityKnown:     true,
		Identity:          s.iam.forPrincipal(c.principal),
		Grants:            s.store.snap().grantsFor(k.id),
		EncryptionContext: in.ec,
		ConstraintsApply:  k.isSymmetricEncryption() && constraintOperations[in.action],
	})
	if a.Allowed {
		return a, nil
	}
	return a, s.deny(c, a)
}

// authorizeIAM decides an action on a resource that has no resource-based
// policy: an alias ("kms:CreateAlias for the alias. Provide this permission
// in an IAM policy", KMS Developer Guide, "Controlling access to aliases"),
// or an action on no particular resource (CreateKey, ListKeys; resource
// "*"). The caller's identity-based policies alone decide.
func (s *Server) authorizeIAM(c *call, action, resource string, extra map[string][]string) error {
	a := keypolicy.Authorize(keypolicy.Input{
		Request: keypolicy.Request{
			Principal: c.principal,
			Action:    "kms:" + action,
			Resource:  resource,
			Context:   s.requestContext(c, nil, authzInput{extra: extra}),
		},
		IdentityKnown: true,
		Identity:      s.iam.forPrincipal(c.principal),
	})
	if a.Allowed {
		return nil
	}
	return s.deny(c, a)
}

// deny answers a refused authorization: it records the reason for the
// request log (the deciding statement or grant and condition, the layer;
// never a secret) and returns KMS's AccessDeniedException.
func (s *Server) deny(c *call, a keypolicy.Authorization) error {
	c.denial = a.Reason()
	if s.log.Enabled(c.ctx, slog.LevelDebug) {
		// Condition values are encryption context and PCRs: not secret
		// (KMS logs encryption contexts in CloudTrail in the clear).
		s.log.Debug("authorization refused the request", "op", c.op, "key", c.keyID, "explanation", a.Explain())
	}
	return kmsapi.Errorf(kmsapi.AccessDenied, "%s", a.AccessDeniedMessage())
}

// denied refuses a request that the policies allowed, for a reason of
// devkms's own (reason completes "because ...").
func (s *Server) denied(c *call, action, resource, reason string) error {
	c.denial = reason
	return kmsapi.Errorf(kmsapi.AccessDenied, "User: %s is not authorized to perform: %s on resource: %s because %s", c.principal, action, resource, reason)
}

// logPolicyWarnings logs what a key policy holds that KMS accepts but that
// probably does not do what its author meant (a misspelt action or
// condition key silently never matches).
func (s *Server) logPolicyWarnings(c *call, keyID string, p *keypolicy.Policy) {
	for _, w := range p.Warnings() {
		s.log.Warn("key policy warning", "key", keyID, "principal", c.principal, "warning", w.String())
	}
}

// keyContext holds the condition keys KMS derives from the key itself.
func keyContext(k *key) map[string][]string {
	return map[string][]string{
		"kms:KeySpec":   {string(k.spec)},
		"kms:KeyUsage":  {string(k.usage)},
		"kms:KeyOrigin": {"AWS_KMS"},
	}
}
