package devkms_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/sdkhttp"
)

// TestListenAndServeUnix serves plain HTTP on a unix socket from the
// configured --listen address and stops on context cancellation.
func TestListenAndServeUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "devkms.sock")
	cfg := devkms.DefaultConfig()
	cfg.Listen = "unix://" + sock
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := devkms.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(sctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	}()
	hc := &http.Client{Transport: sdkhttp.BufferBodies(&http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}, 0)}
	c := kms.New(kms.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://devkms"), HTTPClient: hc,
		Credentials: aws.AnonymousCredentials{}, Retryer: aws.NopRetryer{}})
	var out *kms.GenerateRandomOutput
	for i := 0; i < 50; i++ { // the socket appears once ListenAndServe listens
		if out, err = c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(3)}); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || len(out.Plaintext) != 3 {
		t.Fatalf("GenerateRandom over the unix socket: %v", err)
	}
}
