package packaging

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// RunInEmptyRoot runs a kmsproxyd binary as the enclave image runs it: as
// the only file of an otherwise empty root directory (no /lib, no /etc, no
// shell), with no environment, and returns what it printed. As root it
// chroots; otherwise it first enters a new user namespace, where it may.
// A binary that needs a dynamic loader, a shared library or a file of the
// host fails here.
func RunInEmptyRoot(ctx context.Context, bin []byte, args ...string) (string, error) {
	dir, err := os.MkdirTemp("", "kmsproxy-emptyroot-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "kmsproxyd"), bin, 0o555); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "/kmsproxyd", args...)
	cmd.Dir = "/"
	cmd.Env = []string{}
	attr := &syscall.SysProcAttr{Chroot: dir}
	if os.Geteuid() != 0 {
		attr.Cloneflags = syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	cmd.SysProcAttr = attr
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("packaging: kmsproxyd %s in an empty root: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}
