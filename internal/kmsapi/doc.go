// Package kmsapi is the wire form of the AWS KMS JSON 1.1 protocol, shared by
// the two servers that speak it: devkms, which answers it as AWS KMS does,
// and kmsproxyd, which answers it on behalf of KMS inside the enclave.
//
// Requests are decoded into aws-sdk-go-v2's own input types
// (github.com/aws/aws-sdk-go-v2/service/kms), whose exported field names are
// exactly the member names of the KMS JSON protocol, and answers are encoded
// from its output types by EncodeOutput, which writes KMS's forms (blobs in
// base64, timestamps as epoch seconds). Errors are written in KMS's shape:
// {"__type":"<Exception>","message":"..."} with KMS's status code.
package kmsapi
