// Package credentials is where kmsproxyd's AWS credentials come from.
//
// Inside a Nitro Enclave there is no instance profile, no shared config file
// and no network: the credentials that sign kmsproxyd's calls to KMS must
// reach the enclave some other way. Three sources are offered, selected by
// kmsproxyd's --credentials flag:
//
//   - imds: the parent instance's role credentials, fetched with IMDSv2 by
//     the AWS SDK's own client through a vsock-proxy to 169.254.169.254:80,
//     cached, and refreshed in the background before they expire.
//   - push: the parent pushes credentials (PUT /v1/credentials, from
//     `kmsproxyctl credentials push`); they are validated and held in memory.
//   - env: static credentials from AWS_ACCESS_KEY_ID and friends.
//
// Every provider is an aws.CredentialsProvider with a Status for /readyz and
// the credential-expiry metric. Secrets never appear in an error, a log line
// or the fmt/slog rendering of any type of this package.
package credentials
