// Package modroot finds the kmsproxy repository from inside it: the tests
// and the tools run with `go run` (the demo, the benchmark) build binaries
// and read files relative to it, and ../shared/testdata lies beside it.
package modroot

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
)

// Module is the module path the repository's go.mod declares.
const Module = "github.com/enclavekit/kmsproxy"

// ErrNotFound says that no folder above the working directory holds
// kmsproxy's go.mod.
var ErrNotFound = errors.New("not inside the kmsproxy repository: run this from the repository (no go.mod of " + Module + " above the working directory)")

// Find walks up from the working directory (a package folder under go
// test) to the folder whose go.mod declares Module.
func Find() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declares(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", ErrNotFound
		}
		dir = parent
	}
}

func declares(gomod []byte) bool {
	for line := range bytes.Lines(gomod) {
		if string(bytes.TrimSpace(line)) == "module "+Module {
			return true
		}
	}
	return false
}
