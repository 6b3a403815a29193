// Command kmsproxyctl is the operator's and the parent instance's tool for
// kmsproxy: it calls KMS through an enclave's kmsproxyd (decrypt, encrypt,
// generate-data-key, generate-random), serves the enclave's API on a parent
// address (bridge), pushes the parent's role credentials into the enclave
// (credentials push), fetches and verifies attestation documents (attest),
// writes and checks KMS key policies bound to enclave measurements (policy),
// reads the envelopes KMS returns to attested callers (cms) and simulates an
// NSM for development (dev).
//
// Data goes to stdout; errors go to stderr as "kmsproxyctl: error: ..."
// with an optional "kmsproxyctl: hint: ...". The exit status is 0 on
// success, 1 on failure (including a denied policy check and a document that
// does not verify), 2 on a usage error and 3 when policy check can allow a
// request only if an IAM policy it was not given allows it too.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/enclavekit/kmsproxy/internal/suggest"
	kmsversion "github.com/enclavekit/kmsproxy/internal/version"
	"golang.org/x/term"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// The first signal stops the command (the bridge drains, credentials
	// push --watch ends); a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, isTerminal: isTerminal}, os.Args[1:])
	stop()
	os.Exit(code)
}

// env is the process's outside world, passed down so tests can run
// subcommands in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// isTerminal reports whether w is a terminal; nil means never.
	isTerminal func(w io.Writer) bool
}

// isTerminal reports whether w is a file open on a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// command is one subcommand: "decrypt", or "attest verify".
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists every subcommand, in the order help shows them.
var commands = []command{
	{"decrypt", "decrypt a KMS ciphertext through the enclave (or a KMS endpoint)", runDecrypt},
	{"encrypt", "encrypt a plaintext under a KMS key", runEncrypt},
	{"generate-data-key", "generate a data key through the enclave", runGenerateDataKey},
	{"generate-random", "generate random bytes through the enclave", runGenerateRandom},
	{"bridge", "serve the enclave's API on a parent address (AWS CLI, SDKs, Prometheus)", runBridge},
	{"credentials push", "push the parent's role credentials into the enclave", runCredentialsPush},
	{"attest fetch", "fetch a fresh attestation document from the enclave", runAttestFetch},
	{"attest verify", "verify an attestation document", runAttestVerify},
	{"policy generate", "write a KMS key policy bound to an enclave image's (or an instance's NitroTPM) measurements", runPolicyGenerate},
	{"policy check", "say whether a key policy allows a request, and which condition fails", runPolicyCheck},
	{"cms inspect", "describe a CiphertextForRecipient envelope", runCMSInspect},
	{"cms decrypt", "decrypt a CiphertextForRecipient envelope with an RSA key", runCMSDecrypt},
	{"dev ca", "create an NSM simulator CA", runDevCA},
	{"dev attest", "sign a simulated attestation document", runDevAttest},
	{"dev tpm", "serve a simulated NitroTPM on a unix socket", runDevTPM},
}

// run runs kmsproxyctl with args and returns the exit status.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		printOverview(e.stderr)
		return 2
	}
	switch args[0] {
	case "-version", "--version", "version":
		fmt.Fprintln(e.stdout, "kmsproxyctl", version())
		return 0
	case "-h", "-help", "--help":
		printOverview(e.stdout)
		return 0
	case "help":
		// "kmsproxyctl help attest verify" is "kmsproxyctl attest verify -h".
		if len(args) == 1 {
			printOverview(e.stdout)
			return 0
		}
		cmd, rest, err := lookup(args[1:])
		if err != nil {
			return report(e, err)
		}
		if len(rest) > 0 {
			return report(e, usageErrorf("help takes a command name, not %q", rest[0]))
		}
		return report(e, cmd.run(ctx, e, []string{"-h"}))
	}
	cmd, rest, err := lookup(args)
	if err != nil {
		return report(e, err)
	}
	return report(e, cmd.run(ctx, e, rest))
}

// lookup finds the subcommand args name, one or two words long.
func lookup(args []string) (*command, []string, error) {
	groups := map[string][]string{}
	for i := range commands {
		if group, sub, ok := strings.Cut(commands[i].name, " "); ok {
			groups[group] = append(groups[group], sub)
		}
		if commands[i].name == args[0] {
			return &commands[i], args[1:], nil
		}
	}
	subs, ok := groups[args[0]]
	if !ok {
		return nil, nil, withHint(usageErrorf("unknown command %q%s", args[0], suggest.DidYouMean(args[0], commandWords())),
			"run \"kmsproxyctl help\" for the list of commands")
	}
	sort.Strings(subs)
	if len(args) < 2 || strings.HasPrefix(args[1], "-") {
		return nil, nil, usageErrorf("%s needs a subcommand: %s", args[0], strings.Join(subs, ", "))
	}
	name := args[0] + " " + args[1]
	for i := range commands {
		if commands[i].name == name {
			return &commands[i], args[2:], nil
		}
	}
	mean := ""
	if s := suggest.Closest(args[1], subs); s != "" {
		mean = fmt.Sprintf(" (did you mean %q?)", args[0]+" "+s)
	}
	return nil, nil, usageErrorf("unknown command %q%s; the %s commands are %s", name, mean, args[0], strings.Join(subs, ", "))
}

// commandWords returns the first words of every command ("decrypt",
// "attest", ...), for did-you-mean.
func commandWords() []string {
	var words []string
	for _, c := range commands {
		w, _, _ := strings.Cut(c.name, " ")
		if !slices.Contains(words, w) {
			words = append(words, w)
		}
	}
	return words
}

func printOverview(w io.Writer) {
	fmt.Fprint(w, `Usage: kmsproxyctl <command> [flags] [args]

kmsproxyctl calls KMS through a Nitro Enclave's kmsproxyd and helps the
operator set it up: attestation documents, key policies, credentials.

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-18s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run "kmsproxyctl help <command>" (or "kmsproxyctl <command> -h") for a
command's flags and examples.
The enclave address comes from --enclave or KMSPROXY_ENCLAVE:
vsock://CID:PORT (e.g. vsock://16:5000), tcp://HOST:PORT or unix:///path.

Exit status: 0 success, 1 failure (also: policy check DENIED, a document
that does not verify), 2 usage error, 3 policy check allowed only if an IAM
policy also allows it.
`)
}

// version returns the release kmsproxyctl was built as and its Go release.
func version() string {
	return kmsversion.String() + " " + kmsversion.Go()
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// hintError carries advice shown after the error.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

// withHint attaches advice to err (nil stays nil).
func withHint(err error, format string, args ...any) error {
	hint := fmt.Sprintf(format, args...)
	if err == nil || hint == "" {
		return err
	}
	return &hintError{err, hint}
}

// exitStatus ends a command with a status and no message: the command has
// already said everything on stdout (policy check DENIED).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// errHelp: -h was asked for and the usage is printed; exit 0.
var errHelp = errors.New("help requested")

// report prints err the kmsproxyctl way and returns the exit status.
func report(e *env, err error) int {
	if err == nil || errors.Is(err, errHelp) {
		return 0
	}
	var st exitStatus
	if errors.As(err, &st) {
		return int(st)
	}
	fmt.Fprintf(e.stderr, "kmsproxyctl: error: %v\n", err)
	var he *hintError
	if errors.As(err, &he) {
		fmt.Fprintf(e.stderr, "kmsproxyctl: hint: %s\n", he.hint)
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}
