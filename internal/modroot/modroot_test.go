package modroot

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFind(t *testing.T) {
	root, err := Find()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "modroot", "modroot.go")); err != nil {
		t.Errorf("Find = %s, not the repository: %v", root, err)
	}

	// Another module's go.mod on the way up is not the repository.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/other\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(other)
	if _, err := Find(); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find in another module = %v, want ErrNotFound", err)
	}
}

func TestDeclares(t *testing.T) {
	for in, want := range map[string]bool{
		"module github.com/enclavekit/kmsproxy\n\ngo 1.26\n": true,
		"// c\nmodule github.com/enclavekit/kmsproxy\n":      true,
		"module github.com/enclavekit/kmsproxyfoo\n":         false,
		"module example.com/other\n":                         false,
	} {
		if got := declares([]byte(in)); got != want {
			t.Errorf("declares(%q) = %v", in, got)
		}
	}
}
