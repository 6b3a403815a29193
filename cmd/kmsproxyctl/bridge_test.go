package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/client"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// lockedBuffer collects a subcommand's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBridgeForSDKs runs `kmsproxyctl bridge` in-process in front of a real
// kmsproxyd and calls it the way a non-Go parent app would: an ordinary
// aws-sdk-go-v2 KMS client with an endpoint override and dummy credentials.
func TestBridgeForSDKs(t *testing.T) {
	enc := enclavetest.Start(t, enclavetest.Options{})
	ctx := context.Background()
	secret := []byte("plaintext through the bridge")
	ct, err := enc.Operator(t).Encrypt(ctx, &kms.EncryptInput{KeyId: &enc.KeyID, Plaintext: secret})
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	bctx, stop := context.WithCancel(ctx)
	var stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		e := &env{stdout: new(lockedBuffer), stderr: &stderr, getenv: func(string) string { return "" }}
		done <- run(bctx, e, []string{"bridge", "--listen", "tcp://127.0.0.1:" + port, "--enclave", enc.ParentAddr})
	}()
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bridge did not listen: %v\n%s", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	sdk := kms.New(kms.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://127.0.0.1:" + port),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIAIOSFODNN7EXAMPLE", "dummy", ""),
	})
	out, err := sdk.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: ct.CiphertextBlob})
	if err != nil {
		t.Fatalf("Decrypt through the bridge: %v", err)
	}
	if !bytes.Equal(out.Plaintext, secret) {
		t.Errorf("Plaintext = %q, want %q", out.Plaintext, secret)
	}
	if aws.ToString(out.KeyId) != enc.KeyARN {
		t.Errorf("KeyId = %q, want %q", aws.ToString(out.KeyId), enc.KeyARN)
	}

	// The client package through the bridge's TCP address works the same.
	c, err := client.New(ctx, "tcp://127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := c.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{KeyId: &enc.KeyID, NumberOfBytes: aws.Int32(32)})
	if err != nil {
		t.Fatalf("GenerateDataKey through the bridge: %v", err)
	}
	back, err := sdk.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: dk.CiphertextBlob})
	if err != nil || !bytes.Equal(back.Plaintext, dk.Plaintext) {
		t.Errorf("the data key does not decrypt to itself: %v", err)
	}

	stop()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("bridge exited %d:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the bridge did not stop")
	}
	logs := stderr.String()
	if !strings.Contains(logs, `msg="bridge stopped"`) {
		t.Errorf("no stop message in the log:\n%s", logs)
	}
	enc.CheckLogsFree(t, secret, dk.Plaintext)
	for _, s := range [][]byte{secret, dk.Plaintext} {
		if bytes.Contains([]byte(logs), s) {
			t.Errorf("the bridge logged a plaintext")
		}
	}
}
