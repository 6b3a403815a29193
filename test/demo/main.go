// Command demo runs kmsproxy's whole flow on one machine, with no AWS
// account and no Nitro hardware, and narrates it: `make demo`.
//
// It builds the binaries, creates a simulator CA and the measurements of a
// "release" enclave image, writes a key policy bound to them with
// `kmsproxyctl policy generate`, starts devkms (TLS, SigV4, the key policy),
// a byte relay standing in for vsock-proxy, and kmsproxyd with the
// simulated NSM, then shows what the enclave can do that nobody else can.
// Then the same for an EC2 instance that attests with its NitroTPM: a key
// bound to the instance's PCR4 and PCR12 (`policy generate --kind
// nitrotpm`), a simulated NitroTPM on a unix socket standing in for
// /dev/tpmrm0 (`kmsproxyctl dev tpm`) and kmsproxyd attesting with it.
// Everything lives in a temporary directory and every process is stopped at
// the end, also on failure or Ctrl-C. It needs no root. With -keep the
// directory stays, with commands.sh: every command line the demo ran, in
// order, so a user can start the same processes by hand and take over.
package main

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/enclavekit/kmsproxy/internal/nitrotpmsim"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

const (
	account     = "111122223333"
	region      = "us-east-1"
	roleARN     = "arn:aws:iam::" + account + ":role/enclave-parent"
	sessionARN  = "arn:aws:sts::" + account + ":assumed-role/enclave-parent/i-0demo"
	operatorARN = "arn:aws:iam::" + account + ":user/operator"
	keyID       = "0d0e0f10-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
	alias       = "alias/app-demo"

	// The attested instance's role and key.
	instanceRoleARN    = "arn:aws:iam::" + account + ":role/kmsproxy-instance"
	instanceSessionARN = "arn:aws:sts::" + account + ":assumed-role/kmsproxy-instance/i-0demo"
	instanceKeyID      = "1e1f2021-2b3c-4d4e-9f50-6b7c8d9e0f10"
	instanceAlias      = "alias/instance-demo"
)

// Access keys of the demo's two principals, known only to devkms and to
// the processes the demo starts.
var (
	operatorCreds = []string{"AWS_ACCESS_KEY_ID=AKIADEMOOPERATOR0001", "AWS_SECRET_ACCESS_KEY=demo-operator-secret-0000000000000000000"}
	roleCreds     = []string{"AWS_ACCESS_KEY_ID=ASIADEMOENCLAVEROLE1", "AWS_SECRET_ACCESS_KEY=demo-role-secret-00000000000000000000000", "AWS_SESSION_TOKEN=demo-role-session-token"}
	instanceCreds = []string{"AWS_ACCESS_KEY_ID=ASIADEMOINSTANCEROLE", "AWS_SECRET_ACCESS_KEY=demo-instance-secret-000000000000000000", "AWS_SESSION_TOKEN=demo-instance-session-token"}
)

func main() {
	binDir := flag.String("bin", "", "use kmsproxyd (built with -tags nsmsim), kmsproxyctl and devkms from this `DIR` instead of building them")
	keep := flag.Bool("keep", false, "keep the demo's directory and write commands.sh there: every command line it ran, to take over by hand")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	d := &demo{ctx: ctx, prebuilt: *binDir, keep: *keep}
	err := d.run()
	d.cleanup()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo: error: %v\n", err)
		os.Exit(1)
	}
}

type demo struct {
	ctx   context.Context
	dir   string
	bin   string
	step  int
	procs []*proc
	relay net.Listener
	wg    sync.WaitGroup
	// localAddr is the release kmsproxyd's in-enclave listener.
	localAddr string
	// prebuilt is the -bin directory, or "" to build the binaries.
	prebuilt string
	// keep (-keep) keeps dir and writes the command lines below to
	// commands.sh in it.
	keep     bool
	commands []string
	// setup, when not "", marks the kmsproxyctl command being run as
	// one whose result is in dir already: commands.sh shows it as a
	// comment, followed by setup.
	setup string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

func (d *demo) run() error {
	start := time.Now()
	var err error
	if d.dir, err = os.MkdirTemp("", "kmsproxy-demo-"); err != nil {
		return err
	}
	d.bin = filepath.Join(d.dir, "bin")
	if d.prebuilt != "" {
		if d.bin, err = filepath.Abs(d.prebuilt); err != nil {
			return err
		}
	} else {
		d.say("Building kmsproxyd (with the NSM simulator), kmsproxyctl and devkms")
		if err := d.build(); err != nil {
			return err
		}
	}

	d.say("An NSM simulator CA stands in for the AWS Nitro root; measurements stand in for nitro-cli build-enclave")
	d.setup = "   # done: simca/"
	if _, err := d.ctl(nil, "dev", "ca", "--out", d.path("simca")); err != nil {
		return err
	}
	if err := writeMeasurements(d.path("release.json"), "release image v1"); err != nil {
		return err
	}
	if err := writeMeasurements(d.path("tampered.json"), "tampered image"); err != nil {
		return err
	}
	fmt.Printf("   release image PCR0 %s…\n", pcr0("release image v1")[:24])
	fmt.Printf("   tampered image PCR0 %s…\n", pcr0("tampered image")[:24])

	d.say("The key policy admits the role only with an attestation of the release image")
	d.setup = " > key-policy.json   # done"
	pol, err := d.ctl(nil, "policy", "generate", "--measurements", d.path("release.json"), "--role", roleARN)
	d.setup = ""
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.path("key-policy.json"), pol, 0o600); err != nil {
		return err
	}

	d.say("A second key, for an EC2 instance that attests with its NitroTPM: bound to the PCR4 and PCR12 that nitro-tpm-pcr-compute measures for its Attestable AMI")
	if err := writeInstanceMeasurements(d.path("instance-measurements.json"), "attestable AMI v1"); err != nil {
		return err
	}
	fmt.Printf("   instance PCR4 %s…, PCR12 all zeros (nothing outside the image changed the boot)\n", hex.EncodeToString(amiPCRs("attestable AMI v1")[4])[:24])
	d.setup = " > instance-key-policy.json   # done"
	pol, err = d.ctl(nil, "policy", "generate", "--kind", "nitrotpm", "--measurements", d.path("instance-measurements.json"), "--pcrs", "4,12", "--role", instanceRoleARN)
	d.setup = ""
	if err != nil {
		return err
	}
	if err := os.WriteFile(d.path("instance-key-policy.json"), pol, 0o600); err != nil {
		return err
	}
	if err := d.writeDevKMSConfig(); err != nil {
		return err
	}

	d.say("devkms: a local KMS with TLS, SigV4 and attestation support")
	kmsPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	kmsAddr := fmt.Sprintf("127.0.0.1:%d", kmsPort)
	if err := d.start("devkms", nil, d.exe("devkms"),
		"--listen", "tcp://"+kmsAddr,
		"--tls-self-signed", d.path("tls"),
		"--trust-root", d.path("simca/root.pem"),
		"--credentials", d.path("credentials.yaml"),
		"--seed", d.path("seed.yaml"),
		"--region", region, "--account-id", account); err != nil {
		return err
	}
	if err := waitHTTP(d.ctx, "https://"+kmsAddr+"/devkms/healthz", d.path("tls/ca.pem")); err != nil {
		return d.failed("devkms", err)
	}
	d.commands = append(d.commands, "wait_for --cacert tls/ca.pem https://"+kmsAddr+"/devkms/healthz")

	d.say("vsock-proxy stand-in: the parent relays bytes from a unix socket to KMS, and cannot read them (TLS ends in the enclave)")
	if err := d.startRelay(d.path("vsock-kms.sock"), kmsAddr); err != nil {
		return err
	}

	d.say("kmsproxyd in the enclave: simulated NSM, release image measurements, the hardened example policy with the demo's key pinned")
	if err := d.writePolicy(); err != nil {
		return err
	}
	release, err := d.startKmsproxyd("kmsproxyd", "release.json", kmsPort)
	if err != nil {
		return err
	}
	endpoint := fmt.Sprintf("https://localhost:%d", kmsPort)
	direct := []string{"--kms-endpoint", endpoint, "--kms-ca", d.path("tls/ca.pem"), "--region", region}
	ec := []string{"--encryption-context", "tenant=acme"}

	d.say("1. The operator encrypts a secret directly under the key (no enclave needed)")
	secret := "postgres://app:s3cr3t-from-the-vault@db/prod"
	if err := os.WriteFile(d.path("secret.txt"), []byte(secret), 0o600); err != nil {
		return err
	}
	if _, err := d.ctl(operatorCreds, append(append([]string{"encrypt", "--key-id", alias,
		"--plaintext", "fileb://" + d.path("secret.txt"), "--ciphertext-out", d.path("secret.enc")}, direct...), ec...)...); err != nil {
		return err
	}

	d.say("2. The parent app asks the enclave to decrypt it: kmsproxyd attests, KMS answers to the enclave's key only")
	out, err := d.ctl(nil, append([]string{"decrypt", "--enclave", release, "--key-id", alias,
		"--ciphertext-blob", "fileb://" + d.path("secret.enc"), "--raw"}, ec...)...)
	if err != nil {
		return err
	}
	if string(out) != secret {
		return fmt.Errorf("the enclave decrypted %q, want %q", out, secret)
	}
	fmt.Printf("   => %s\n", out)

	d.say("3. The same role calling KMS directly, without attestation, is denied")
	if err := d.expectDenied(roleCreds, append(append([]string{"decrypt", "--key-id", alias,
		"--ciphertext-blob", "fileb://" + d.path("secret.enc")}, direct...), ec...)...); err != nil {
		return err
	}

	d.say("4. An enclave running a different image (another PCR0) is denied")
	tampered, err := d.startKmsproxyd("kmsproxyd-tampered", "tampered.json", kmsPort)
	if err != nil {
		return err
	}
	if err := d.expectDenied(nil, append([]string{"decrypt", "--enclave", tampered, "--key-id", alias,
		"--ciphertext-blob", "fileb://" + d.path("secret.enc")}, ec...)...); err != nil {
		return err
	}

	d.say("5. GenerateDataKey through the enclave: a fresh data key and its encrypted copy")
	if _, err := d.ctl(nil, append([]string{"generate-data-key", "--enclave", release, "--key-id", alias,
		"--plaintext-out", d.path("dk.bin"), "--ciphertext-out", d.path("dk.enc")}, ec...)...); err != nil {
		return err
	}
	dk, err := os.ReadFile(d.path("dk.bin"))
	if err != nil || len(dk) != 32 {
		return fmt.Errorf("data key: %d bytes, %v", len(dk), err)
	}
	fmt.Printf("   => 32-byte data key in dk.bin, encrypted copy in dk.enc\n")

	d.say("6. GenerateRandom from an app inside the enclave (local listener)")
	rnd, err := d.ctl(nil, "generate-random", "--enclave", d.localAddr, "--number-of-bytes", "32")
	if err != nil {
		return err
	}
	fmt.Printf("   => %s", rnd)

	d.say("7. An attested EC2 instance: a simulated NitroTPM on a unix socket (standing in for /dev/tpmrm0), and kmsproxyd attesting with it")
	tpm, err := d.startTPM("tpm", nil)
	if err != nil {
		return err
	}
	instance, err := d.startInstanceKmsproxyd("kmsproxyd-instance", tpm, kmsPort)
	if err != nil {
		return err
	}
	if _, err := d.ctl(operatorCreds, append(append([]string{"encrypt", "--key-id", instanceAlias,
		"--plaintext", "fileb://" + d.path("secret.txt"), "--ciphertext-out", d.path("instance-secret.enc")}, direct...), ec...)...); err != nil {
		return err
	}
	out, err = d.ctl(nil, append([]string{"decrypt", "--enclave", instance, "--key-id", instanceAlias,
		"--ciphertext-blob", "fileb://" + d.path("instance-secret.enc"), "--raw"}, ec...)...)
	if err != nil {
		return err
	}
	if string(out) != secret {
		return fmt.Errorf("the instance decrypted %q, want %q", out, secret)
	}
	fmt.Printf("   => %s\n", out)

	d.say("8. An instance that booted something else (another PCR4) is denied")
	otherTPM, err := d.startTPM("tpm-other-boot", []string{"--pcr", "4=" + hex.EncodeToString(amiPCRs("tampered AMI")[4])})
	if err != nil {
		return err
	}
	otherInstance, err := d.startInstanceKmsproxyd("kmsproxyd-other-boot", otherTPM, kmsPort)
	if err != nil {
		return err
	}
	if err := d.expectDenied(nil, append([]string{"decrypt", "--enclave", otherInstance, "--key-id", instanceAlias,
		"--ciphertext-blob", "fileb://" + d.path("instance-secret.enc")}, ec...)...); err != nil {
		return err
	}

	d.say("9. The enclave's attestation does not open the instance's key (a document of the other kind)")
	if err := d.expectDenied(nil, append([]string{"decrypt", "--enclave", release, "--key-id", "arn:aws:kms:" + region + ":" + account + ":key/" + instanceKeyID,
		"--ciphertext-blob", "fileb://" + d.path("instance-secret.enc")}, ec...)...); err != nil {
		return err
	}

	d.say("Done")
	if d.keep {
		fmt.Printf("   The whole flow took %s. Everything ran under %s.\n", time.Since(start).Round(100*time.Millisecond), d.dir)
	} else {
		fmt.Printf("   The whole flow took %s. Everything ran under %s and is removed now (make demo DEMOFLAGS=-keep keeps it).\n", time.Since(start).Round(100*time.Millisecond), d.dir)
	}
	return nil
}

func (d *demo) path(rel string) string { return filepath.Join(d.dir, rel) }
func (d *demo) exe(name string) string { return filepath.Join(d.bin, name) }

func (d *demo) say(s string) {
	d.step++
	fmt.Printf("\n==> %s\n", s)
}

func (d *demo) build() error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	// One build for all three: the nsmsim tag only changes cmd/kmsproxyd
	// (it adds --nsm sim), and one tag set compiles every dependency once.
	for _, args := range [][]string{
		{"build", "-tags", "nsmsim", "-o", d.bin + string(filepath.Separator), "./cmd/kmsproxyctl", "./cmd/devkms", "./cmd/kmsproxyd"},
	} {
		cmd := exec.CommandContext(d.ctx, goTool(), args...)
		cmd.Dir = root
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

// ctl runs kmsproxyctl, echoing the command line (secrets are in env, never
// in arguments), and returns its stdout.
func (d *demo) ctl(env []string, args ...string) ([]byte, error) {
	fmt.Printf("   $ kmsproxyctl %s\n", strings.ReplaceAll(strings.Join(args, " "), d.dir, "$DEMO"))
	d.record(env, d.exe("kmsproxyctl"), args, d.setup)
	cmd := exec.CommandContext(d.ctx, d.exe("kmsproxyctl"), args...)
	cmd.Env = append(harness.CleanEnv(), env...)
	cmd.Dir = d.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return nil, fmt.Errorf("kmsproxyctl %s: %v\n%s", args[0], err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// expectDenied runs kmsproxyctl and requires it to fail with
// AccessDeniedException.
func (d *demo) expectDenied(env []string, args ...string) error {
	fmt.Printf("   $ kmsproxyctl %s\n", strings.ReplaceAll(strings.Join(args, " "), d.dir, "$DEMO"))
	d.record(env, d.exe("kmsproxyctl"), args, " || echo '=> denied, as it must be'")
	cmd := exec.CommandContext(d.ctx, d.exe("kmsproxyctl"), args...)
	cmd.Env = append(harness.CleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return fmt.Errorf("kmsproxyctl %s succeeded but must be denied: %s", args[0], stdout.String())
	}
	msg := strings.TrimSpace(stderr.String())
	if !strings.Contains(msg, "AccessDeniedException") {
		return fmt.Errorf("kmsproxyctl %s failed, but not with AccessDeniedException:\n%s", args[0], msg)
	}
	fmt.Printf("   => denied, as it must be:\n      %s\n", strings.ReplaceAll(msg, "\n", "\n      "))
	return nil
}

func (d *demo) writeDevKMSConfig() error {
	seed := fmt.Sprintf(`keys:
  - id: %s
    description: kmsproxy demo key, bound to the release image
    policy_file: key-policy.json
    aliases: [%s]
  - id: %s
    description: kmsproxy demo key, bound to the attested instance's boot
    policy_file: instance-key-policy.json
    aliases: [%s]
`, keyID, alias, instanceKeyID, instanceAlias)
	creds := fmt.Sprintf(`# access key id -> secret, principal (devkms verifies SigV4 with these)
%s:
  secret_access_key: %s
  principal: %s
%s:
  secret_access_key: %s
  session_token: %s
  principal: %s
%s:
  secret_access_key: %s
  session_token: %s
  principal: %s
`, val(operatorCreds[0]), val(operatorCreds[1]), operatorARN,
		val(roleCreds[0]), val(roleCreds[1]), val(roleCreds[2]), sessionARN,
		val(instanceCreds[0]), val(instanceCreds[1]), val(instanceCreds[2]), instanceSessionARN)
	if err := os.WriteFile(d.path("seed.yaml"), []byte(seed), 0o600); err != nil {
		return err
	}
	return os.WriteFile(d.path("credentials.yaml"), []byte(creds), 0o600)
}

// examplePolicyKey is the placeholder key ARN enclave/policy.example.yaml
// pins under kms.keys, for the operator to replace.
const examplePolicyKey = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

// writePolicy writes policy.yaml: enclave/policy.example.yaml with the
// demo key's ARN in place of the placeholder under kms.keys, as an
// operator would edit it before building the image.
func (d *demo) writePolicy() error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	example, err := os.ReadFile(filepath.Join(root, "enclave", "policy.example.yaml"))
	if err != nil {
		return err
	}
	if !bytes.Contains(example, []byte(examplePolicyKey)) {
		return fmt.Errorf("enclave/policy.example.yaml no longer pins the placeholder key %s under kms.keys: update the demo", examplePolicyKey)
	}
	key := "arn:aws:kms:" + region + ":" + account + ":key/" + keyID
	fmt.Printf("   policy.yaml: enclave/policy.example.yaml, kms.keys naming %s\n", key)
	return os.WriteFile(d.path("policy.yaml"), bytes.ReplaceAll(example, []byte(examplePolicyKey), []byte(key)), 0o644)
}

func val(kv string) string { _, v, _ := strings.Cut(kv, "="); return v }

// startKmsproxyd runs an enclave's kmsproxyd with the given measurements and
// returns its parent address. The release one also gets a local listener.
func (d *demo) startKmsproxyd(name, measurements string, kmsPort int) (string, error) {
	parent := "unix://" + d.path(name+".sock")
	local := ""
	if name == "kmsproxyd" {
		p, err := harness.FreePort()
		if err != nil {
			return "", err
		}
		local = fmt.Sprintf("tcp://127.0.0.1:%d", p)
		d.localAddr = local
	}
	if err := d.start(name, roleCreds, d.exe("kmsproxyd"),
		"--nsm", "sim", "--sim-ca", d.path("simca"), "--sim-pcrs", d.path(measurements),
		"--region", region,
		"--kms-endpoint", fmt.Sprintf("https://localhost:%d", kmsPort),
		"--kms-dial", "unix://"+d.path("vsock-kms.sock"),
		"--kms-ca", d.path("tls/ca.pem"),
		"--credentials", "env",
		"--policy", d.path("policy.yaml"),
		"--listen-parent", parent,
		"--listen-local", local,
		"--log-format", "text"); err != nil {
		return "", err
	}
	if err := waitReady(d.ctx, d.path(name+".sock")); err != nil {
		return "", d.failed(name, err)
	}
	d.commands = append(d.commands, "wait_for --unix-socket "+shellQuote(d.path(name+".sock"))+" http://kmsproxyd/readyz")
	return parent, nil
}

// startTPM runs `kmsproxyctl dev tpm`, a simulated NitroTPM with the
// instance's measurements (and extra flags), on a unix socket, and returns
// the socket's path.
func (d *demo) startTPM(name string, extra []string) (string, error) {
	sock := d.path(name + ".sock")
	args := append([]string{"dev", "tpm", "--ca", d.path("simca"), "--measurements", d.path("instance-measurements.json"),
		"--listen", "unix://" + sock}, extra...)
	if err := d.start(name, nil, d.exe("kmsproxyctl"), args...); err != nil {
		return "", err
	}
	if err := poll(d.ctx, func() error {
		if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("no socket at %s", sock)
		}
		return nil
	}); err != nil {
		return "", d.failed(name, err)
	}
	d.commands = append(d.commands, "wait_socket "+shellQuote(sock))
	return sock, nil
}

// startInstanceKmsproxyd runs kmsproxyd as on an attested instance: its
// NitroTPM is the simulator at tpm, it serves the instance's apps on a
// unix socket and reaches KMS itself (no vsock, no vsock-proxy), signing
// with the instance role's credentials. It returns the socket's address.
func (d *demo) startInstanceKmsproxyd(name, tpm string, kmsPort int) (string, error) {
	sock := d.path(name + ".sock")
	if err := d.start(name, instanceCreds, d.exe("kmsproxyd"),
		"--attestation", "nitrotpm-sim", "--tpm-device", "unix://"+tpm,
		"--region", region,
		"--kms-endpoint", fmt.Sprintf("https://localhost:%d", kmsPort),
		"--kms-dial", "direct",
		"--kms-ca", d.path("tls/ca.pem"),
		"--credentials", "env",
		"--listen-parent", "unix://"+sock,
		"--listen-local", "",
		"--log-format", "text"); err != nil {
		return "", err
	}
	if err := waitReady(d.ctx, sock); err != nil {
		return "", d.failed(name, err)
	}
	d.commands = append(d.commands, "wait_for --unix-socket "+shellQuote(sock)+" http://kmsproxyd/readyz")
	return "unix://" + sock, nil
}

func (d *demo) start(name string, env []string, exe string, args ...string) error {
	d.record(env, exe, args, " > "+name+".log 2>&1 &\npids=\"$pids $!\"")
	cmd := exec.Command(exe, args...)
	cmd.Env = append(harness.CleanEnv(), env...)
	p := &proc{name: name, cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, p)
	go func() { _ = cmd.Wait(); close(p.done) }()
	return nil
}

func (d *demo) failed(name string, err error) error {
	for _, p := range d.procs {
		if p.name == name {
			return fmt.Errorf("%s did not become ready: %v\n--- %s log ---\n%s", name, err, name, p.log.String())
		}
	}
	return err
}

// startRelay copies bytes between a unix socket and KMS's TCP address, as
// vsock-proxy does between vsock and KMS.
func (d *demo) startRelay(sock, target string) error {
	d.commands = append(d.commands, "# the vsock-proxy stand-in: relays bytes from a unix socket to devkms",
		fmt.Sprintf("rm -f %s; socat UNIX-LISTEN:%s,fork TCP:%s &\npids=\"$pids $!\"", shellQuote(sock), shellQuote(sock), target))
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	d.relay = ln
	d.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.wg.Go(func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			})
		}
	})
	return nil
}

func (d *demo) cleanup() {
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 && d.ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "demo: %s exited with status %d\n%s", p.name, code, p.log.String())
		}
	}
	if d.relay != nil {
		d.relay.Close()
	}
	if d.dir == "" {
		return
	}
	if !d.keep {
		os.RemoveAll(d.dir)
		return
	}
	script := `#!/bin/sh
# The command lines the kmsproxy demo ran, in order: it starts devkms, the
# relay standing in for vsock-proxy, the two enclaves' kmsproxyd, the two
# simulated NitroTPMs and the instances' kmsproxyd again, waits for each,
# repeats the narrated kmsproxyctl calls, and leaves the servers running
# for you (the last line says how to stop them). The set-up steps
# whose results are in this folder already are shown as comments. The
# credentials are the demo's own, known only to this devkms. Needs socat
# and curl.
set -e
cd ` + shellQuote(d.dir) + `
pids=
wait_for() { # curl options and URL: poll until it answers, at most 20 s
	i=0
	until curl -sf -o /dev/null "$@"; do
		i=$((i + 1)); [ $i -lt 200 ] || { echo "no answer from $*" >&2; exit 1; }
		sleep 0.1
	done
}
wait_socket() { # a unix socket's path: poll until it exists, at most 20 s
	i=0
	until [ -S "$1" ]; do
		i=$((i + 1)); [ $i -lt 200 ] || { echo "no socket at $1" >&2; exit 1; }
		sleep 0.1
	done
}
` + strings.Join(d.commands, "\n") + `
echo "servers running: stop them with: kill$pids"
`
	if err := os.WriteFile(d.path("commands.sh"), []byte(script), 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "demo: failed to write commands.sh: %v\n", err)
		return
	}
	fmt.Printf("\nKept %s (-keep). Every process is stopped; commands.sh there holds the\ncommand lines the demo ran, in order, to start them again by hand:\n  sh %s\n", d.dir, d.path("commands.sh"))
}

// record notes a command line for commands.sh (-keep), with its
// environment and a shell suffix such as " &".
func (d *demo) record(env []string, exe string, args []string, suffix string) {
	var b strings.Builder
	if d.setup != "" {
		b.WriteString("# ")
	}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(&b, "%s=%s ", k, shellQuote(v))
	}
	b.WriteString(shellQuote(exe))
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	if d.setup != "" {
		suffix = d.setup
	}
	d.commands = append(d.commands, b.String()+suffix)
}

// shellQuote quotes s for sh when it holds anything but safe characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeMeasurements writes what `nitro-cli build-enclave` prints for an
// image, with PCRs derived from a label.
func writeMeasurements(path, label string) error {
	b, err := nsmsim.MarshalMeasurements(nsmsim.ImagePCRs(label))
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func pcr0(label string) string { return hex.EncodeToString(nsmsim.ImagePCRs(label)[0]) }

// amiPCRs returns made-up measurements of an Attestable AMI named label,
// as nitro-tpm-pcr-compute prints them: PCR4 (the Unified Kernel Image)
// and PCR7 (Secure Boot policy), the SHA-384 of label and the PCR's
// number, and PCR12 all zeros (nothing outside the image changed the
// kernel command line), as the tool always prints it.
func amiPCRs(label string) map[int][]byte {
	pcrs := map[int][]byte{12: make([]byte, sha512.Size384)}
	for _, i := range []int{4, 7} {
		h := sha512.Sum384([]byte(fmt.Sprintf("%s/PCR%d", label, i)))
		pcrs[i] = h[:]
	}
	return pcrs
}

// writeInstanceMeasurements writes what nitro-tpm-pcr-compute prints for
// an Attestable AMI, with PCRs derived from a label.
func writeInstanceMeasurements(path, label string) error {
	b, err := nitrotpmsim.MarshalMeasurements(amiPCRs(label))
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// waitReady polls kmsproxyd's /readyz on its unix socket.
func waitReady(ctx context.Context, sock string) error {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		}}}
	return poll(ctx, func() error {
		resp, err := hc.Get("http://kmsproxyd/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
}

func waitHTTP(ctx context.Context, url, caFile string) error {
	return poll(ctx, func() error {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return err
		}
		hc, err := tlsClient(pem)
		if err != nil {
			return err
		}
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
}

func poll(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// goTool is the go command that runs the demo (make sets GO), else the
// one on PATH.
func goTool() string {
	if g := os.Getenv("GO"); g != "" {
		return g
	}
	return "go"
}
