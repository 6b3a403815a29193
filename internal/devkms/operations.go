package devkms

import "strings"

// opFunc answers one KMS operation: it decodes c.body into the SDK's input
// type and returns the SDK's output type or a KMS-shaped error.
type opFunc func(s *Server, c *call) (any, error)

// operations maps the X-Amz-Target operation names devkms implements.
var operations map[string]opFunc

func init() {
	operations = map[string]opFunc{
		"CreateKey":                           (*Server).createKeyOp,
		"DescribeKey":                         (*Server).describeKey,
		"ListKeys":                            (*Server).listKeys,
		"EnableKey":                           (*Server).enableKey,
		"DisableKey":                          (*Server).disableKey,
		"CreateAlias":                         (*Server).createAlias,
		"UpdateAlias":                         (*Server).updateAlias,
		"DeleteAlias":                         (*Server).deleteAlias,
		"CreateGrant":                         (*Server).createGrant,
		"ListGrants":                          (*Server).listGrants,
		"ListRetirableGrants":                 (*Server).listRetirableGrants,
		"RetireGrant":                         (*Server).retireGrant,
		"RevokeGrant":                         (*Server).revokeGrant,
		"ListAliases":                         (*Server).listAliases,
		"PutKeyPolicy":                        (*Server).putKeyPolicy,
		"GetKeyPolicy":                        (*Server).getKeyPolicy,
		"Encrypt":                             (*Server).encrypt,
		"Decrypt":                             (*Server).decrypt,
		"ReEncrypt":                           (*Server).reEncrypt,
		"GenerateDataKey":                     (*Server).generateDataKey,
		"GenerateDataKeyWithoutPlaintext":     (*Server).generateDataKeyWithoutPlaintext,
		"GenerateDataKeyPair":                 (*Server).generateDataKeyPair,
		"GenerateDataKeyPairWithoutPlaintext": (*Server).generateDataKeyPairWithoutPlaintext,
		"GenerateRandom":                      (*Server).generateRandom,
		"DeriveSharedSecret":                  (*Server).deriveSharedSecret,
		"Sign":                                (*Server).sign,
		"Verify":                              (*Server).verify,
		"GetPublicKey":                        (*Server).getPublicKey,
		"GenerateMac":                         (*Server).generateMac,
		"VerifyMac":                           (*Server).verifyMac,
	}
}

// knownKMSOperations are the operations of the KMS API (the api_op_*.go files
// of aws-sdk-go-v2's service/kms); those devkms does not implement are
// answered with UnsupportedOperationException instead of
// UnknownOperationException.
var knownKMSOperations = map[string]bool{}

func init() {
	for _, op := range strings.Fields(`CancelKeyDeletion ConnectCustomKeyStore CreateAlias CreateCustomKeyStore
		CreateGrant CreateKey Decapsulate Decrypt DeleteAlias DeleteCustomKeyStore DeleteImportedKeyMaterial
		DeriveSharedSecret DescribeCustomKeyStores DescribeKey DisableKey DisableKeyRotation
		DisconnectCustomKeyStore EnableKey EnableKeyRotation Encapsulate Encrypt GenerateDataKey
		GenerateDataKeyPair GenerateDataKeyPairWithoutPlaintext GenerateDataKeyWithoutPlaintext GenerateMac
		GenerateRandom GetKeyLastUsage GetKeyPolicy GetKeyRotationStatus GetParametersForImport GetPublicKey
		ImportKeyMaterial ListAliases ListGrants ListKeyPolicies ListKeyRotations ListKeys ListResourceTags
		ListRetirableGrants PutKeyPolicy ReEncrypt ReplicateKey RetireGrant RevokeGrant RotateKeyOnDemand
		ScheduleKeyDeletion Sign TagResource UntagResource UpdateAlias UpdateCustomKeyStore
		UpdateKeyDescription UpdatePrimaryRegion Verify VerifyMac`) {
		knownKMSOperations[op] = true
	}
}
