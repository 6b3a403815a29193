package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/policy"
)

func TestMain(m *testing.M) {
	// Under -race every process sleeps a second before exiting
	// (GORACE atexit_sleep_ms defaults to 1000); the scripts run hundreds of
	// kmsproxyctl processes. testscript passes GORACE on to them.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	testscript.Main(m, map[string]func(){
		"kmsproxyctl": main,
	})
}

// requireTools is set (by .ci/run) when every optional tool must be present:
// a script that needs a missing one then fails instead of skipping.
var requireTools = os.Getenv("KMSPROXY_REQUIRE_TOOLS") == "1"

// tbKey holds the script's testing.TB in testscript's Env.Values, for the
// commands that start servers with the test helpers.
type tbKey struct{}

func TestScripts(t *testing.T) {
	realData := realTestdata(t)
	testscript.Run(t, testscript.Params{
		Dir:                 filepath.Join("testdata", "script"),
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Values[tbKey{}] = env.T().(testing.TB)
			for k, v := range realData {
				env.Setenv(k, v)
			}
			// Keep the AWS SDK and CLI away from this machine's
			// configuration and from IMDS.
			env.Setenv("AWS_CONFIG_FILE", filepath.Join(env.WorkDir, ".aws-config"))
			env.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(env.WorkDir, ".aws-credentials"))
			env.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			env.Setenv("HOME", filepath.Join(env.WorkDir, ".home"))
			if aws := awsCLI(); aws != "" {
				env.Setenv("AWS", aws)
			}
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch {
			case strings.HasPrefix(cond, "tool:"):
				name := strings.TrimPrefix(cond, "tool:")
				path := ""
				if name == "aws" {
					path = awsCLI()
				} else {
					path, _ = exec.LookPath(name)
				}
				if path == "" && requireTools {
					return false, fmt.Errorf("%s is required (KMSPROXY_REQUIRE_TOOLS=1) but not installed", name)
				}
				return path != "", nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"freeport":      cmdFreePort,
			"waitfor":       cmdWaitFor,
			"filemode":      cmdFileMode,
			"start-devkms":  cmdStartDevKMS,
			"start-enclave": cmdStartEnclave,
			"httpget":       cmdHTTPGet,
			"waithttp":      cmdWaitHTTP,
			"status":        cmdStatus,
			"genkey":        cmdGenKey,
			"b64enc":        cmdB64Enc,
			"mkfile":        cmdMkFile,
			"flipbyte":      cmdFlipByte,
		},
	})
}

// realTestdata returns the environment variables that point the scripts at
// the real KMS and NSM output the library packages keep in their testdata
// (each folder's PROVENANCE.md says where it comes from).
func realTestdata(t *testing.T) map[string]string {
	vars := map[string]string{
		"NSM_DOCS":      "../../internal/attestation/testdata/real",
		"NITROTPM_DOCS": "../../internal/attestation/testdata/nitrotpm",
		"NITRO_ROOT":    "../../internal/attestation/aws_nitro_enclaves_root_g1.pem",
		"CMS_REAL":      "../../internal/cms/testdata/real",
		"AWS_DOCS":      "../../internal/keypolicy/testdata/aws-docs",
	}
	for k, rel := range vars {
		abs, err := filepath.Abs(filepath.FromSlash(rel))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("real test data missing: %v", err)
		}
		vars[k] = abs
	}
	return vars
}

// awsCLI returns the AWS CLI to test against: Debian's /usr/bin/aws (which
// .ci/run installs) when present, else whatever aws is on PATH.
func awsCLI() string {
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		return "/usr/bin/aws"
	}
	p, _ := exec.LookPath("aws")
	return p
}

// cmdFreePort sets the named variable to a free TCP port on 127.0.0.1.
func cmdFreePort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: freeport VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	port := ln.Addr().(*net.TCPAddr).Port
	ts.Check(ln.Close())
	ts.Setenv(args[0], strconv.Itoa(port))
}

// cmdWaitFor waits (up to 20 s) until something accepts connections at a
// tcp://HOST:PORT or unix:///path address.
func cmdWaitFor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfor tcp://HOST:PORT|unix:///path")
	}
	network, addr, ok := strings.Cut(args[0], "://")
	if !ok {
		ts.Fatalf("waitfor: bad address %q", args[0])
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfor %s: nothing listening after 20s: %v", args[0], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cmdFileMode checks a file's permission bits: filemode FILE 0600.
func cmdFileMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: filemode FILE MODE")
	}
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	got := fi.Mode().Perm()
	if (got == os.FileMode(want)) == neg {
		ts.Fatalf("%s has mode %#o, want %s%#o", args[0], got, map[bool]string{true: "not ", false: ""}[neg], want)
	}
}

// Principals and access keys of the devkms that start-devkms runs. The
// role is the parent instance's (whose credentials kmsproxyd would use);
// the admin is the account root; the operator an administrator.
const (
	testAccount     = "111122223333"
	testRoleARN     = "arn:aws:iam::" + testAccount + ":role/enclave-parent"
	testSessionARN  = "arn:aws:sts::" + testAccount + ":assumed-role/enclave-parent/i-0123456789abcdef0"
	testAdminKeyID  = "AKIAADMIN00000000001"
	testAdminSecret = "admin-secret-0000000000000000000000000001"
	testRoleKeyID   = "AKIAROLE000000000001"
	testRoleSecret  = "role-secret-00000000000000000000000000001"
	// The operator: a session of an administrators' role, whose IAM
	// policies the scripts give with start-devkms -iam.
	testOperatorKeyID   = "AKIAOPERATOR00000002"
	testOperatorSecret  = "operator-secret-000000000000000000000001"
	testOperatorSession = "arn:aws:sts::" + testAccount + ":assumed-role/admin/alice"
)

// cmdStartDevKMS starts a devkms for the rest of the script:
//
//	start-devkms [-policy FILE] [-trust ROOT.pem] [-iam FILE] [-alias NAME]
//
// It checks SigV4 with three access keys (ADMIN_KEY_ID/ADMIN_SECRET for the
// account root, ROLE_KEY_ID/ROLE_SECRET for an assumed-role session of
// testRoleARN, OPERATOR_KEY_ID/OPERATOR_SECRET for OPERATOR_ARN, a session
// of an administrators' role), evaluates the IAM policies of -iam (without
// it, every principal's IAM policies allow kms:*), creates a symmetric key
// with the given key policy (default: the account root may do anything)
// and the -alias aliases, and a second key with the default policy
// (ATTACKER_KEY_ID), and sets DEVKMS_URL, DEVKMS_CA (a PEM file), KEY_ID,
// KEY_ARN and the access keys.
func cmdStartDevKMS(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! start-devkms")
	}
	const usage = "usage: start-devkms [-policy FILE] [-trust ROOT.pem] [-iam FILE] [-alias NAME]"
	var policy, iamFile string
	var aliases []string
	var roots []*x509.Certificate
	for len(args) > 0 {
		if len(args) < 2 {
			ts.Fatalf(usage)
		}
		switch args[0] {
		case "-policy":
			policy = ts.ReadFile(args[1])
		case "-trust":
			blk, _ := pem.Decode([]byte(ts.ReadFile(args[1])))
			if blk == nil {
				ts.Fatalf("start-devkms: %s holds no PEM", args[1])
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			ts.Check(err)
			roots = append(roots, c)
		case "-iam":
			iamFile = ts.MkAbs(args[1])
		case "-alias":
			aliases = append(aliases, args[1])
		default:
			ts.Fatalf("start-devkms: unknown option %s; %s", args[0], usage)
		}
		args = args[2:]
	}
	t := ts.Value(tbKey{}).(testing.TB)
	kmsd := devkmstest.Start(t,
		devkmstest.WithTrustRoots(roots...),
		devkmstest.WithConfig(func(c *devkms.Config) {
			c.AccountID = testAccount
			c.IAMPoliciesPath = iamFile
		}),
		devkmstest.WithCredentials(
			devkms.Credential{AccessKeyID: testAdminKeyID, SecretAccessKey: testAdminSecret, Principal: "arn:aws:iam::" + testAccount + ":root"},
			devkms.Credential{AccessKeyID: testRoleKeyID, SecretAccessKey: testRoleSecret, Principal: testSessionARN},
			devkms.Credential{AccessKeyID: testOperatorKeyID, SecretAccessKey: testOperatorSecret, Principal: testOperatorSession},
		))
	keyID := kmsd.CreateKeyWith(t, devkms.SeedKey{Policy: policy, Aliases: aliases})
	// A key the attacker controls (the default key policy: the account,
	// through IAM), for the attacks that move secrets elsewhere.
	attackerKey := kmsd.CreateKey(t, "")
	ts.Setenv("DEVKMS_URL", kmsd.URL)
	ts.Setenv("DEVKMS_CA", kmsd.CAFile)
	ts.Setenv("KEY_ID", keyID)
	ts.Setenv("KEY_ARN", kmsd.KeyARN(keyID))
	ts.Setenv("ATTACKER_KEY_ID", attackerKey)
	ts.Setenv("ADMIN_KEY_ID", testAdminKeyID)
	ts.Setenv("ADMIN_SECRET", testAdminSecret)
	ts.Setenv("ROLE_KEY_ID", testRoleKeyID)
	ts.Setenv("ROLE_SECRET", testRoleSecret)
	ts.Setenv("OPERATOR_KEY_ID", testOperatorKeyID)
	ts.Setenv("OPERATOR_SECRET", testOperatorSecret)
	ts.Setenv("OPERATOR_ARN", testOperatorSession)
	ts.Setenv("ROLE_ARN", testRoleARN)
	ts.Setenv("SESSION_ARN", testSessionARN)
}

// runCLI runs kmsproxyctl in-process and returns its exit status, stdout
// and stderr.
func runCLI(t testing.TB, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut strings.Builder
	e := &env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}
	code := run(context.Background(), e, args)
	return code, out.String(), errOut.String()
}

// cmdGenKey writes a fresh RSA-2048 key pair: genkey [-pkcs1] PRIV PUB.
// The private key is PKCS #8 ("PRIVATE KEY"), or PKCS #1 ("RSA PRIVATE
// KEY") with -pkcs1; the public key is a SubjectPublicKeyInfo ("PUBLIC KEY").
func cmdGenKey(ts *testscript.TestScript, neg bool, args []string) {
	pkcs1 := len(args) > 0 && args[0] == "-pkcs1"
	if pkcs1 {
		args = args[1:]
	}
	if neg || len(args) != 2 {
		ts.Fatalf("usage: genkey [-pkcs1] PRIV PUB")
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	ts.Check(err)
	priv := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	if !pkcs1 {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		ts.Check(err)
		priv = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), pem.EncodeToMemory(priv), 0o600))
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}), 0o644))
}

// cmdB64Enc writes the standard base64 of a file, wrapped at 76 columns as
// base64(1) and PEM do: b64enc IN OUT.
func cmdB64Enc(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: b64enc IN OUT")
	}
	s := base64.StdEncoding.EncodeToString([]byte(ts.ReadFile(args[0])))
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	b.WriteString(s + "\n")
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(b.String()), 0o644))
}

// cmdMkFile writes a file of SIZE bytes: mkfile FILE SIZE. The first byte
// is 0x84 (a CBOR array of four, as a COSE_Sign1 starts), the rest zero.
func cmdMkFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkfile FILE SIZE")
	}
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	b := make([]byte, n)
	if n > 0 {
		b[0] = 0x84
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// cmdFlipByte inverts the lowest bit of one byte of a file: flipbyte FILE
// OFFSET (negative counts from the end, -1 being the last byte).
func cmdFlipByte(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: flipbyte FILE OFFSET")
	}
	b := []byte(ts.ReadFile(args[0]))
	off, err := strconv.Atoi(args[1])
	ts.Check(err)
	if off < 0 {
		off += len(b)
	}
	if off < 0 || off >= len(b) {
		ts.Fatalf("flipbyte: offset %s outside %d bytes", args[1], len(b))
	}
	b[off] ^= 1
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// cmdStatus runs a command and checks its exit status: status N PROG
// [ARGS...]. Its stdout and stderr are kept for stdout/stderr checks, as
// with exec.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		got = ee.ExitCode()
	case err != nil:
		ts.Fatalf("%v", err)
	}
	if got != want {
		ts.Logf("[stdout]\n%s[stderr]\n%s", ts.ReadFile("stdout"), ts.ReadFile("stderr"))
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdStartEnclave runs the whole enclave flow (devkms, the NSM simulator and
// kmsproxyd, internal/enclavetest) for the rest of the script:
//
//	start-enclave [-push] [-untrusted] [-policy FILE]
//
// -push starts kmsproxyd with --credentials push and nothing pushed;
// -untrusted makes the key policy require another image's measurements;
// -policy gives kmsproxyd a listener policy file. It sets ENCLAVE (the parent
// listener, unix://...), LOCAL (the in-enclave listener, tcp://...) and
// LOCAL_URL (the same as http://HOST:PORT), KEY_ID,
// KEY_ARN, DEVKMS_URL, DEVKMS_CA, SIM_CA (the simulator CA directory), PCR0
// to PCR2, the role's and the operator's access keys (ROLE_KEY_ID,
// ROLE_SECRET, ROLE_TOKEN, OPERATOR_KEY_ID, OPERATOR_SECRET) and writes the
// enclave's measurements to enclave-measurements.json.
func cmdStartEnclave(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! start-enclave")
	}
	var opts enclavetest.Options
	var kmsLatency time.Duration
	duration := func(name string) time.Duration {
		if len(args) < 2 {
			ts.Fatalf("start-enclave: %s needs a duration", name)
		}
		d, err := time.ParseDuration(args[1])
		ts.Check(err)
		args = args[1:]
		return d
	}
	for len(args) > 0 {
		switch args[0] {
		case "-request-timeout":
			opts.RequestTimeout = duration(args[0])
		case "-kms-latency":
			kmsLatency = duration(args[0])
		case "-push":
			opts.PushCredentials = true
		case "-untrusted":
			opts.KeyPolicyPCRs = enclavetest.PCRsFor("another image")
		case "-policy":
			if len(args) < 2 {
				ts.Fatalf("start-enclave: -policy needs a file")
			}
			p, err := policy.Load(ts.MkAbs(args[1]))
			ts.Check(err)
			opts.Policy = p
			args = args[1:]
		default:
			ts.Fatalf("usage: start-enclave [-push] [-untrusted] [-policy FILE] [-request-timeout DUR] [-kms-latency DUR]")
		}
		args = args[1:]
	}
	t := ts.Value(tbKey{}).(testing.TB)
	e := enclavetest.Start(t, opts)
	if kmsLatency > 0 {
		// After start: kmsproxyd's own start-up calls are not delayed.
		e.DevKMS.SetFaults(devkms.Faults{Latency: kmsLatency})
	}
	ts.Setenv("ENCLAVE", e.ParentAddr)
	ts.Setenv("LOCAL", e.LocalAddr)
	ts.Setenv("LOCAL_URL", "http://"+strings.TrimPrefix(e.LocalAddr, "tcp://"))
	ts.Setenv("KEY_ID", e.KeyID)
	ts.Setenv("KEY_ARN", e.KeyARN)
	ts.Setenv("DEVKMS_URL", e.DevKMS.URL)
	ts.Setenv("DEVKMS_CA", e.DevKMS.CAFile)
	ts.Setenv("SIM_CA", e.CADir)
	for i := range 3 {
		ts.Setenv(fmt.Sprintf("PCR%d", i), fmt.Sprintf("%x", e.PCRs[i]))
	}
	ts.Setenv("ROLE_KEY_ID", enclavetest.RoleAccessKey)
	ts.Setenv("ROLE_SECRET", enclavetest.RoleSecretKey)
	ts.Setenv("ROLE_TOKEN", enclavetest.RoleToken)
	ts.Setenv("SESSION_ARN", enclavetest.SessionARN)
	ts.Setenv("OPERATOR_KEY_ID", enclavetest.OperatorKey)
	ts.Setenv("OPERATOR_SECRET", enclavetest.OperatorSecret)
	ts.Check(os.WriteFile(ts.MkAbs("enclave-measurements.json"), []byte(measurementsJSON(e.PCRs)), 0o644))
}

// cmdHTTPGet fetches a URL and keeps the body as stdout: httpget URL.
// A status other than 200 fails (or, with !, is expected).
func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: httpget URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	ts.Check(err)
	resp, err := http.DefaultClient.Do(req)
	ts.Check(err)
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	ts.Check(err)
	ts.Stdout().Write(body)
	if (resp.StatusCode == http.StatusOK) == neg {
		ts.Fatalf("GET %s: status %d", args[0], resp.StatusCode)
	}
}

// cmdWaitHTTP polls a URL (up to 20 s) until it answers 200: waithttp URL.
func cmdWaitHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waithttp URL")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(args[0])
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waithttp %s: not 200 after 20s: %v", args[0], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
