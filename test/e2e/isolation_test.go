package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/enclavekit/kmsproxy/test/internal/mission"
	"github.com/enclavekit/kmsproxy/test/internal/relay"
	"github.com/enclavekit/kmsproxy/test/internal/secretscan"
	"github.com/enclavekit/kmsproxy/test/internal/tlsrecord"
)

// TestIsolation runs the enclave side in its own network namespace and
// does the whole mission from the parent app and from an in-enclave app,
// with credentials from IMDS (ec2-metadata-mock) and pushed by the parent.
// The bytes the parent relays to KMS must be TLS records and nothing else.
func TestIsolation(t *testing.T) {
	requireNetns(t)
	build(t) // before the subtests' watchdogs start
	for _, creds := range []string{"imds", "push"} {
		t.Run("credentials="+creds, func(t *testing.T) {
			sc := newScan(t)
			s := startStack(t, sc, stackOptions{netns: true, credentials: creds})
			if creds == "push" {
				s.pushCredentials(t)
			}
			checkNamespace(t, s)

			ctx := context.Background()
			info, err := client.GetInfo(ctx, s.parentAddr)
			if err != nil {
				t.Fatal(err)
			}
			if info.Settings["region"] != region || info.Settings["credentials"] != creds {
				t.Errorf("/v1/info settings: region %v, credentials %v; want %s (from IMDS with imds), %s", info.Settings["region"], info.Settings["credentials"], region, creds)
			}
			in, want := s.missionInput(t)

			// The parent app: aws-sdk-go-v2 through the client package over
			// the parent unix socket (the vsock stand-in).
			r, err := mission.Run(ctx, s.parentClient(t, true), in)
			if err != nil {
				t.Fatalf("parent app: %v\n%s", err, s.kmsproxyd.log)
			}
			addResultSecrets(sc, "parent app", r)
			if err := r.Check(want); err != nil {
				t.Errorf("parent app: %v", err)
			}

			// The in-enclave app, inside the namespace, through the local
			// listener on 127.0.0.1:8000.
			inJSON, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := run(t, sc, "enclaveapp", harness.CleanEnv(), inJSON, ctlTimeout, s.inNetns(s.bin.enclaveapp, "mission", "--enclave", s.localAddr)...)
			if err != nil {
				t.Fatalf("in-enclave app: %v\n%s", err, s.kmsproxyd.log)
			}
			var r2 mission.Result
			if err := json.Unmarshal(out, &r2); err != nil {
				t.Fatalf("in-enclave app output: %v", err)
			}
			addResultSecrets(sc, "in-enclave app", &r2)
			if err := r2.Check(want); err != nil {
				t.Errorf("in-enclave app: %v", err)
			}
			if bytes.Equal(r.DataKey, r2.DataKey) || bytes.Equal(r.Random, r2.Random) {
				t.Error("the two apps got the same data key or random bytes")
			}
			// kmsproxyctl works from inside the enclave too.
			ctFile := s.path("mission.enc")
			if err := os.WriteFile(ctFile, in.Ciphertext, 0o600); err != nil {
				t.Fatal(err)
			}
			pt, err := run(t, sc, "kmsproxyctl decrypt (namespace)", harness.CleanEnv(), nil, ctlTimeout, s.inNetns(s.bin.kmsproxyctl, "decrypt",
				"--enclave", s.localAddr, "--ciphertext-blob", "fileb://"+ctFile, "--encryption-context", "tenant=acme", "--raw")...)
			if err != nil || !bytes.Equal(pt, want.Plaintext) {
				t.Errorf("kmsproxyctl decrypt in the namespace: %d bytes that are not the plaintext (%v)", len(pt), err)
			}

			// A burst of concurrent Decrypts from the parent: kmsproxyd opens
			// more upstream connections, never more than --upstream-conns (4,
			// as socat's max-children and vsock-proxy's workers).
			c := s.parentClient(t, true)
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for range 4 {
						if err := decryptWith(ctx, c, in.Ciphertext, want.Plaintext, in.EncryptionContext); err != nil {
							t.Errorf("concurrent Decrypt from the parent: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()

			// Every request was logged (the scan reads real logs), and no
			// secret reached a log line, a metric or /v1/info.
			for _, op := range []string{"Decrypt", "GenerateDataKey", "GenerateDataKeyPair", "GenerateRandom", "DeriveSharedSecret"} {
				if !strings.Contains(s.kmsproxyd.log.String(), `"operation":"`+op+`"`) {
					t.Errorf("kmsproxyd logged no %s request", op)
				}
			}
			checkControlEndpoints(t, sc, s.parentAddr)
			// The namespace's lo started down; kmsproxyd brought it up for
			// its local listener (--listen-local).
			if !strings.Contains(s.kmsproxyd.log.String(), "brought the loopback interface up") {
				t.Error("kmsproxyd did not report bringing lo up in the namespace")
			}

			// SIGTERM: kmsproxyd drains and exits 0, closing its upstream
			// connections; then the recording is complete.
			if code := s.kmsproxyd.stop(); code != 0 {
				t.Errorf("kmsproxyd exited with status %d after SIGTERM, want 0\n%s", code, s.kmsproxyd.log)
			}
			s.relay.Close()
			checkRecording(t, s.relay, sc, s.role, defaultUpstreamConns)
		})
	}
}

// checkNamespace shows that the enclave side has only lo and cannot reach
// devkms except through the parent's socat: a probe in the namespace and a
// kmsproxyd there told to dial devkms's port directly both fail, while the
// same port answers on the host.
func checkNamespace(t testing.TB, s *stack) {
	t.Helper()
	out, err := run(t, s.scan, "ip link (namespace)", harness.CleanEnv(), nil, ctlTimeout, s.inNetns("ip", "-o", "link", "show")...)
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			links = append(links, strings.TrimSuffix(f[1], ":"))
		}
	}
	if len(links) != 1 || links[0] != "lo" {
		t.Fatalf("the namespace has links %v, want only lo", links)
	}

	// The local listener (127.0.0.1:8000 in the namespace) is the
	// enclave's own: from the host, that address is not kmsproxyd.
	if hc, err := client.HTTPClient("tcp://127.0.0.1:8000"); err == nil {
		hc.Timeout = 2 * time.Second
		if resp, err := hc.Get(client.Endpoint + "/healthz"); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if strings.Contains(string(body), `"serving"`) {
				t.Errorf("the host reaches a kmsproxyd at 127.0.0.1:8000: the local listener is not confined to the namespace")
			}
		}
	}

	devkmsAddr := fmt.Sprintf("127.0.0.1:%d", s.kmsPort)
	if c, err := net.Dial("tcp", devkmsAddr); err != nil {
		t.Fatalf("devkms is not reachable on the host at %s: %v", devkmsAddr, err)
	} else {
		c.Close()
	}
	targets := []string{devkmsAddr, s.relay.Addr().String()}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				targets = append(targets, net.JoinHostPort(ipn.IP.String(), fmt.Sprint(s.kmsPort)))
			}
		}
	}
	for _, target := range targets {
		out, err := run(t, s.scan, "enclaveapp dial", harness.CleanEnv(), nil, ctlTimeout, s.inNetns(s.bin.enclaveapp, "dial", "tcp://"+target)...)
		if code := exitCode(err); code != 1 {
			t.Errorf("dial %s from the namespace: exit %d (%v), output %q; want exit 1, no connection", target, code, err, out)
			continue
		}
		t.Logf("from the namespace, %s: %s", target, strings.TrimSpace(string(out)))
	}

	// kmsproxyd itself, in the namespace, with --kms-dial straight to
	// devkms's TCP port: every upstream call fails at the connect step.
	sock := s.path("direct.sock")
	argv := s.kmsproxydArgv(sock, "", "tcp://"+devkmsAddr, "env")
	p := start(t, s.scan, "kmsproxyd (direct dial)", harness.CleanEnv(role.env()...), argv...)
	waitHTTP(t, p, "unix://"+sock, "/healthz")
	c, err := clientFor("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GenerateRandom(context.Background(), &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(16)})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "KMSInternalException" || !strings.Contains(apiErr.ErrorMessage(), "upstream") || !strings.Contains(apiErr.ErrorMessage(), "connect") {
		t.Errorf("GenerateRandom through a kmsproxyd in the namespace that dials devkms directly: %v; want KMSInternalException naming the upstream connect step", err)
	} else {
		t.Logf("kmsproxyd in the namespace dialing devkms directly: %s: %s", apiErr.ErrorCode(), apiErr.ErrorMessage())
	}
	if code := p.stop(); code != 0 {
		t.Errorf("kmsproxyd (direct dial) exited with %d", code)
	}
}

// Strings that must not appear in what the parent relays: KMS JSON 1.1's
// member names and headers, and SigV4's. Their absence shows the parent
// sees neither requests nor answers.
var kmsMarkers = []string{
	"CiphertextBlob", "Plaintext", "KeyId", "TrentService", "Recipient", "AttestationDocument",
	"CiphertextForRecipient", "X-Amz-Target", "x-amz-json", "AWS4-HMAC-SHA256", "Authorization", "X-Amz-Security-Token",
}

// checkRecording checks everything the relay forwarded between kmsproxyd
// and devkms: each connection's two streams are nothing but TLS records
// (TLS 1.3: after each side's hello only encrypted records), no connection
// ran beside maxConns others, and no secret of sc, no credential of creds
// and no KMS or SigV4 name appears in any form.
func checkRecording(t testing.TB, r *relay.Relay, sc *secretscan.Scanner, creds awsCreds, maxConns int) {
	t.Helper()
	st := r.Stats()
	t.Logf("recording: %d connections (at most %d at once), %d bytes", st.Accepted, st.MaxActive, st.Recorded)
	if st.Truncated {
		t.Fatalf("the recording was truncated at %d bytes", relay.MaxRecorded)
	}
	if st.MaxActive > maxConns {
		t.Errorf("%d upstream connections at once, over --upstream-conns %d", st.MaxActive, maxConns)
	}
	streams := r.Streams()
	if len(streams) == 0 {
		t.Fatal("nothing went through the relay: kmsproxyd did not use the parent's path to KMS")
	}
	search := secretscan.New()
	for _, m := range kmsMarkers {
		search.AddMarker(m, m)
	}
	search.AddMarker("role access key ID", creds.accessKeyID)
	search.AddSecret("role secret access key", []byte(creds.secret))
	search.AddSecret("role session token", []byte(creds.token))
	appData := 0
	for _, s := range streams {
		name := fmt.Sprintf("connection %d %s", s.Conn, s.Direction)
		recs, err := tlsrecord.Parse(s.Data)
		if err != nil {
			t.Errorf("%s (%d bytes) is not TLS records: %v", name, len(s.Data), err)
			continue
		}
		for i, rec := range recs {
			switch {
			case i == 0 && rec.Type != tlsrecord.Handshake:
				t.Errorf("%s starts with a %s record, want a handshake (hello)", name, rec.Type)
			case i > 0 && rec.Type == tlsrecord.Handshake:
				t.Errorf("%s: handshake record %d in the clear at offset %d (only the hello may be; TLS 1.3 encrypts the rest)", name, i, rec.Offset)
			case rec.Type == tlsrecord.ApplicationData:
				appData++
			}
		}
		for _, f := range append(sc.ScanData(name, s.Data), search.ScanData(name, s.Data)...) {
			t.Errorf("the parent can see it: %s", f)
		}
	}
	if appData == 0 {
		t.Error("no application_data record went through the relay")
	}
	t.Logf("recording: %d streams, %d application_data records, all TLS", len(streams), appData)
}
