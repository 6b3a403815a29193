package devkms

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"hash"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// msgInvalidMac is KMSInvalidMacException's description in the KMS API
// reference.
const msgInvalidMac = "The request was rejected because the HMAC verification failed. HMAC verification fails when the HMAC computed by using the specified message, HMAC KMS key, and MAC algorithm does not match the HMAC specified in the request."

func macHash(alg types.MacAlgorithmSpec) func() hash.Hash {
	switch alg {
	case types.MacAlgorithmSpecHmacSha224:
		return sha256.New224
	case types.MacAlgorithmSpecHmacSha384:
		return sha512.New384
	case types.MacAlgorithmSpecHmacSha512:
		return sha512.New
	}
	return sha256.New
}

// computeMac validates a GenerateMac or VerifyMac request, authorizes it and
// returns the key and the HMAC of the message (RFC 2104, as KMS computes it:
// "HMAC KMS keys and the HMAC algorithms that AWS KMS uses conform to
// industry standards defined in RFC 2104", GenerateMac API reference).
func (s *Server) computeMac(c *call, op string, keyID *string, msg []byte, alg types.MacAlgorithmSpec, grants []string) (*key, []byte, error) {
	if err := s.checkGrantTokens(grants); err != nil {
		return nil, nil, err
	}
	if err := checkBlobLen("message", msg, 1, MaxMessage); err != nil {
		return nil, nil, err
	}
	if alg == "" {
		return nil, nil, nullMember("macAlgorithm")
	}
	if err := checkEnum("macAlgorithm", alg, types.MacAlgorithmSpec("").Values()); err != nil {
		return nil, nil, err
	}
	k, ref, err := s.store.resolve(keyID, anyKeyID)
	if err != nil {
		return nil, nil, err
	}
	c.keyID = k.id
	if err := s.authorize(c, k, authzInput{action: op, extra: requestAlias(ref, map[string][]string{"kms:MacAlgorithm": {string(alg)}})}); err != nil {
		return nil, nil, err
	}
	if err := k.usable(); err != nil {
		return nil, nil, err
	}
	if err := k.requireUsage(op, types.KeyUsageTypeGenerateVerifyMac); err != nil {
		return nil, nil, err
	}
	if specs[k.spec].mac != alg {
		return nil, nil, kmsapi.Errorf(kmsapi.InvalidKeyUsage, "Algorithm %s is incompatible with key spec %s.", alg, k.spec)
	}
	m := hmac.New(macHash(alg), k.secret)
	m.Write(msg)
	return k, m.Sum(nil), nil
}

func (s *Server) generateMac(c *call) (any, error) {
	var in kms.GenerateMacInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	c.secret(in.Message)
	k, mac, err := s.computeMac(c, "GenerateMac", in.KeyId, in.Message, in.MacAlgorithm, in.GrantTokens)
	if err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	return &kms.GenerateMacOutput{KeyId: aws.String(k.arn), Mac: mac, MacAlgorithm: in.MacAlgorithm}, nil
}

func (s *Server) verifyMac(c *call) (any, error) {
	var in kms.VerifyMacInput
	if err := kmsapi.DecodeInput(c.body, &in); err != nil {
		return nil, err
	}
	c.secret(in.Message)
	if err := checkBlobLen("mac", in.Mac, 1, MaxMac); err != nil {
		return nil, err
	}
	k, mac, err := s.computeMac(c, "VerifyMac", in.KeyId, in.Message, in.MacAlgorithm, in.GrantTokens)
	if err != nil {
		return nil, err
	}
	if aws.ToBool(in.DryRun) {
		return nil, dryRunError()
	}
	if !hmac.Equal(mac, in.Mac) {
		return nil, kmsapi.Errorf(kmsapi.KMSInvalidMac, msgInvalidMac)
	}
	return &kms.VerifyMacOutput{KeyId: aws.String(k.arn), MacValid: true, MacAlgorithm: in.MacAlgorithm}, nil
}
