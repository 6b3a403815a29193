//go:build ignore

// gen_vectors writes the committed test vectors of package cms:
//
//	go generate ./internal/cms    (or: go run gen_vectors.go -out testdata)
//
// The output is deterministic (see package testvectors); TestVectorsRegenerate
// fails when the committed files differ from what this writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/enclavekit/kmsproxy/internal/cms/internal/testvectors"
)

func main() {
	out := flag.String("out", "testdata", "folder to write the vectors into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintf(os.Stderr, "gen_vectors: error: %v\n", err)
		os.Exit(1)
	}
}

func run(out string) error {
	files, err := testvectors.Generate(nil)
	if err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(out, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("failed to create folder: %w", err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return fmt.Errorf("failed to write vector file: %w", err)
		}
		fmt.Printf("wrote %s (%d bytes)\n", p, len(f.Data))
	}
	return nil
}
