package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/secretscan"
)

// stopTimeout is how long a process gets to exit after SIGTERM before it is
// killed. kmsproxyd drains for --request-timeout + 2s; the tests use short
// request timeouts.
const stopTimeout = 20 * time.Second

// process is a program a test started, in its own process group (so a
// socat and the children it forked stop together), with its stdout and
// stderr captured in a log the test's scanner searches for secrets.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *secretscan.Buffer
	done chan struct{}
}

// start runs argv with env, and stops it when the test ends.
func start(t testing.TB, sc *secretscan.Scanner, name string, env []string, argv ...string) *process {
	t.Helper()
	p := &process{name: name, log: sc.Log(name), done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Pdeathsig: if the test binary dies, its processes die with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("failed to start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop() })
	return p
}

// signal sends sig to the process's group: the process and the children
// it forked, and nothing else.
func (p *process) signal(sig syscall.Signal) {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to stopTimeout, then kills, and returns the
// exit code (-1 when killed by a signal).
func (p *process) stop() int {
	select {
	case <-p.done: // already gone (it was signalled before)
		return p.cmd.ProcessState.ExitCode()
	default:
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.kill()
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill kills the process group and waits for the process.
func (p *process) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// run runs argv to completion (at most timeout) with env and stdin, and
// returns its stdout; stderr goes to a log the scanner searches. Its
// stdout is data the caller checks (it may hold a plaintext by design).
func run(t testing.TB, sc *secretscan.Scanner, name string, env []string, stdin []byte, timeout time.Duration, argv ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout bytes.Buffer
	stderr := sc.Log(name + " (stderr)")
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		return stdout.Bytes(), fmt.Errorf("%s did not finish within %s", name, timeout)
	}
	if err != nil {
		return stdout.Bytes(), &runError{name: name, err: err, stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

// runError is a command that exited unsuccessfully.
type runError struct {
	name   string
	err    error
	stderr string
}

func (e *runError) Error() string {
	return fmt.Sprintf("%s: %v\n%s", e.name, e.err, strings.TrimSpace(e.stderr))
}

// exitCode returns the exit status in err from run, or -1.
func exitCode(err error) int {
	var re *runError
	var ee *exec.ExitError
	if errors.As(err, &re) && errors.As(re.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
