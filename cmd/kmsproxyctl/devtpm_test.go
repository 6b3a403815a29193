package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/nitrotpm"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// TestDevTPMServes: `dev tpm` serves a NitroTPM that kmsproxyd's own
// NitroTPM client (internal/nitrotpm, over go-tpm's socket transport, as
// kmsproxyd --attestation nitrotpm-sim --tpm-device unix://PATH opens it)
// attests with: a NitroTPM document with the measured PCR4 and the
// requested public key, chaining to the dev CA's root. SIGTERM (the
// context) stops it and removes the socket.
func TestDevTPMServes(t *testing.T) {
	dir, err := os.MkdirTemp("", "devtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if code, _, stderr := runCLI(t, "", "dev", "ca", "--out", filepath.Join(dir, "ca")); code != 0 {
		t.Fatalf("dev ca: %s", stderr)
	}
	pcr4 := randomPCR(t)
	sock := filepath.Join(dir, "tpmrm0.sock")
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &lockedBuilder{}
	done := make(chan int, 1)
	go func() {
		e := &env{stdin: strings.NewReader(""), stdout: &strings.Builder{}, stderr: stderr, getenv: func(string) string { return "" }}
		done <- run(ctx, e, []string{"dev", "tpm", "--ca", filepath.Join(dir, "ca"), "--listen", "unix://" + sock, "--pcr", "4=" + hex.EncodeToString(pcr4)})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("dev tpm did not stop within 10s of its context ending")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("dev tpm exited with status %d: %s", code, stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s after 10s", sock)
		}
		time.Sleep(10 * time.Millisecond)
	}

	tpm, err := linuxudstpm.Open(sock)
	if err != nil {
		t.Fatal(err)
	}
	dev := nitrotpm.New(tpm, tpm)
	defer dev.Close()
	spki := spkiOf(t, &sharedKey().PublicKey)
	b, err := dev.Attest(context.Background(), attestation.Request{PublicKey: spki, Nonce: []byte("dev tpm")})
	if err != nil {
		t.Fatalf("Attest through the simulated NitroTPM: %v", err)
	}
	doc, err := attestation.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := nsmsim.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	if err := attestation.Verify(doc, ca.Roots(), doc.Timestamp); err != nil {
		t.Fatalf("the document does not chain to the dev CA: %v", err)
	}
	if doc.Kind != attestation.KindNitroTPM || !bytes.Equal(doc.NitroTPMPCRs[4], pcr4) || !bytes.Equal(doc.PublicKey, spki) || string(doc.Nonce) != "dev tpm" {
		t.Fatalf("document: kind %s, PCR4 %x, public key %d bytes, nonce %q", doc.Kind, doc.NitroTPMPCRs[4], len(doc.PublicKey), doc.Nonce)
	}
	if !strings.Contains(stderr.String(), "serving a simulated NitroTPM on unix://"+sock) || !strings.Contains(stderr.String(), "PCR4 "+hex.EncodeToString(pcr4[:6])) {
		t.Errorf("stderr %q does not say where it serves and what it measured", stderr)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("dev tpm exited with status %d after its context ended: %s", code, stderr)
	}
	done <- 0 // for the cleanup
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket is still there after the simulator stopped: %v", err)
	}
}

// lockedBuilder is a strings.Builder safe for a writer and a reader in
// different goroutines.
type lockedBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuilder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
