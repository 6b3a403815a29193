// Package e2e holds kmsproxy's end-to-end tests: the proof that kmsproxyd
// behaves under the conditions of a real enclave, with the clients people
// really use, under faults and under bad input, without AWS or Nitro
// hardware.
//
//   - Isolation: kmsproxyd (built with the NSM simulator) runs in its own
//     network namespace with only lo; it reaches devkms only through a unix
//     socket served by socat (the vsock-proxy stand-in) and a recording relay,
//     and the parent app reaches it only through another unix socket (the
//     vsock stand-in). The recording must hold TLS records and nothing else.
//     Needs root, ip and socat.
//   - Real clients: the AWS CLI and aws-sdk-go-v2, unchanged, through
//     kmsproxyctl bridge and through kmsproxyd's local listener.
//   - The attested instance: kmsproxyd on an EC2 instance that attests
//     with its NitroTPM (the simulator served by `kmsproxyctl dev tpm` on
//     a unix socket standing in for /dev/tpmrm0), under the key policy
//     `policy generate --kind nitrotpm` writes; the AWS CLI and boto3
//     decrypt through it; another boot, an enclave's document and the
//     instance's document under an enclave's key are refused; a NitroTPM
//     that answers badly leaves kmsproxyd serving with the document it
//     has, and /readyz says why.
//   - Faults, under load: devkms down and restarted, slow, throttling,
//     failing; the vsock-proxy stand-in killed and restarted; credentials
//     expiring; the NSM failing; key rotation every second; more callers
//     than --max-inflight; SIGTERM with requests in flight. Every request
//     gets its right answer or a KMS-shaped error naming the step within
//     --request-timeout, service resumes within a second of the fault
//     ending, and kmsproxyd never holds more than --upstream-conns
//     connections to KMS.
//   - Bad input at every door of kmsproxyd and devkms, and configurations
//     kmsproxyd must refuse to start with.
//   - No secret in any log: every test scans every log it captured for the
//     secrets it used (test/internal/secretscan).
//
// The binaries are built once per test binary, without the race detector.
// KMSPROXY_REQUIRE_TOOLS=1 turns a missing optional tool (socat, ip, aws)
// from a skip into a failure.
package e2e
