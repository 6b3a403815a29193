package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/kmsproxy/internal/credentials"
)

// CredentialsStatus is kmsproxyd's report on the credentials it signs its
// KMS calls with, as PUT /v1/credentials and /readyz give it. It holds no
// secret.
type CredentialsStatus struct {
	// Mode is kmsproxyd's --credentials: "push" for pushed credentials.
	Mode string `json:"mode"`
	// Ready is true when kmsproxyd holds credentials that have not expired.
	Ready bool `json:"ready"`
	// Expires is when they expire; zero when they do not.
	Expires time.Time `json:"expires,omitzero"`
	// LastError says why the last attempt to obtain credentials failed.
	LastError string `json:"last_error,omitempty"`
	// Updated is when the credentials in use were received.
	Updated time.Time `json:"updated,omitzero"`
}

// PushCredentials sends creds to the kmsproxyd at enclave (PUT
// /v1/credentials), for a kmsproxyd started with --credentials=push, which has
// no other way to obtain the credentials it signs KMS calls with. The body is
// the credential_process JSON (AccessKeyId, SecretAccessKey, SessionToken,
// Expiration). kmsproxyd validates them and answers with its status; when it
// refuses them (expired or implausible credentials, another credentials mode,
// a listener policy without credentials_push) the error is an *Error whose
// Message says why. The error never contains the credentials.
func PushCredentials(ctx context.Context, enclave string, creds aws.Credentials) (*CredentialsStatus, error) {
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return nil, errors.New("failed to push credentials: the access key ID or the secret access key is empty")
	}
	hc, err := HTTPClient(enclave)
	if err != nil {
		return nil, err
	}
	defer hc.CloseIdleConnections()
	body := credentials.PushedCredentials{
		AccessKeyId:     creds.AccessKeyID,
		SecretAccessKey: creds.SecretAccessKey,
		SessionToken:    creds.SessionToken,
	}
	if creds.CanExpire {
		exp := creds.Expires.UTC().Truncate(time.Second)
		body.Expiration = &exp
	}
	b, err := credentials.EncodePush(body)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the credentials: %w", err)
	}
	defer clear(b)
	var st CredentialsStatus
	if err := do(ctx, hc, http.MethodPut, "/v1/credentials", json.RawMessage(b), &st); err != nil {
		return nil, err
	}
	return &st, nil
}
