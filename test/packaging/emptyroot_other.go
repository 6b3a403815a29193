//go:build !linux

package packaging

import (
	"context"
	"errors"
)

// RunInEmptyRoot needs Linux's chroot and user namespaces.
func RunInEmptyRoot(ctx context.Context, bin []byte, args ...string) (string, error) {
	return "", errors.New("packaging: running kmsproxyd in an empty root needs Linux")
}
