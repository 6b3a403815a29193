package devkms_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/google/go-cmp/cmp"

	"github.com/enclavekit/kmsproxy/internal/devkms"
	"github.com/enclavekit/kmsproxy/internal/devkms/devkmstest"
)

func control(t *testing.T, kmsd *devkmstest.Instance, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, kmsd.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := kmsd.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func random(c *kms.Client) error {
	_, err := c.GenerateRandom(ctx, &kms.GenerateRandomInput{NumberOfBytes: aws.Int32(8)})
	return err
}

func TestFaultsByConfig(t *testing.T) {
	tests := []struct {
		name   string
		faults devkms.Faults
		code   string
		status int
		msg    string
	}{
		{"throttling", devkms.Faults{ThrottleRate: 1}, "ThrottlingException", 400, "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."},
		{"internal errors", devkms.Faults{ErrorRate: 1}, "KMSInternalException", 500, "fault injection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kmsd := devkmstest.Start(t, devkmstest.WithConfig(func(c *devkms.Config) { c.Faults = tt.faults }))
			code, msg, status := apiError(t, random(kmsd.Client(t)))
			if code != tt.code || status != tt.status || !strings.Contains(msg, tt.msg) {
				t.Fatalf("got %s (%d) %q, want %s (%d) %q", code, status, msg, tt.code, tt.status, tt.msg)
			}
			if status, _ := control(t, kmsd, http.MethodGet, devkms.HealthzPath, nil); status != 200 {
				t.Fatalf("healthz under faults: %d", status)
			}
		})
	}
}

func TestFaultsAtRunTime(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	if err := random(c); err != nil {
		t.Fatalf("before faults: %v", err)
	}
	status, body := control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(`{"throttle_rate":1}`))
	if status != 200 {
		t.Fatalf("PUT faults: %d %s", status, body)
	}
	wantAPIError(t, random(c), "ThrottlingException", "Reduce the frequency of your calls.")
	status, body = control(t, kmsd, http.MethodGet, devkms.FaultsPath, nil)
	var got devkms.Faults
	if err := json.Unmarshal(body, &got); status != 200 || err != nil {
		t.Fatalf("GET faults: %d %s %v", status, body, err)
	}
	if diff := cmp.Diff(devkms.Faults{ThrottleRate: 1}, got); diff != "" {
		t.Fatalf("GET faults (-want +got):\n%s", diff)
	}
	control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(`{"error_rate":1}`))
	code, _, st := apiError(t, random(c))
	if code != "KMSInternalException" || st != 500 {
		t.Fatalf("with error_rate 1: %s %d", code, st)
	}
	control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(`{}`))
	if err := random(c); err != nil {
		t.Fatalf("after clearing faults: %v", err)
	}

	t.Run("latency", func(t *testing.T) {
		const lat = 150 * time.Millisecond
		kmsd.SetFaults(devkms.Faults{Latency: lat})
		defer kmsd.SetFaults(devkms.Faults{})
		start := time.Now()
		if err := random(c); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < lat {
			t.Fatalf("request took %s with %s of injected latency", d, lat)
		}
	})
	t.Run("half of the requests", func(t *testing.T) {
		kmsd.SetFaults(devkms.Faults{ThrottleRate: 0.5})
		defer kmsd.SetFaults(devkms.Faults{})
		var ok, throttled int
		for range 200 {
			if err := random(c); err == nil {
				ok++
			} else {
				throttled++
			}
		}
		// Each outcome is missing from 200 tries with probability 2^-200.
		if ok == 0 || throttled == 0 {
			t.Fatalf("ok %d, throttled %d; want both", ok, throttled)
		}
	})
	t.Run("bad settings", func(t *testing.T) {
		for _, body := range []string{`{"throttle_rate":1.5}`, `{"error_rate":-0.1}`, `{"latency":"2m"}`, `{"latency":"soon"}`, `{"rate":1}`, `[`} {
			status, msg := control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(body))
			if status != 400 || !bytes.Contains(msg, []byte(`"error"`)) {
				t.Errorf("PUT %s: %d %s, want 400 with an error", body, status, msg)
			}
		}
		if status, msg := control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(`{"latency":"1m"}`)); status != 200 {
			t.Errorf("latency at the limit (1m): %d %s", status, msg)
		}
		kmsd.SetFaults(devkms.Faults{})
		if status, _ := control(t, kmsd, http.MethodDelete, devkms.FaultsPath, nil); status != http.StatusMethodNotAllowed {
			t.Errorf("DELETE faults: %d, want 405", status)
		}
	})
	t.Run("body limit", func(t *testing.T) {
		base := `{"throttle_rate":0}`
		at := base + strings.Repeat(" ", 4096-len(base))
		if status, msg := control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(at)); status != 200 {
			t.Errorf("4096-byte body: %d %s", status, msg)
		}
		if status, _ := control(t, kmsd, http.MethodPut, devkms.FaultsPath, []byte(at+" ")); status != http.StatusRequestEntityTooLarge {
			t.Errorf("4097-byte body: %d, want 413", status)
		}
	})
}

func TestFaultsConcurrently(t *testing.T) {
	kmsd := devkmstest.Start(t)
	c := kmsd.Client(t)
	id := kmsd.CreateKey(t, "")
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if w == 0 && i%5 == 0 {
					kmsd.SetFaults(devkms.Faults{ThrottleRate: float64(i%2) * 0.5})
				}
				enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: &id, Plaintext: []byte{byte(i)}})
				if err != nil {
					if code, _, _ := apiError(t, err); code != "ThrottlingException" {
						t.Errorf("Encrypt: %v", err)
					}
					continue
				}
				dec, err := c.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: enc.CiphertextBlob})
				if err == nil && !bytes.Equal(dec.Plaintext, []byte{byte(i)}) {
					t.Errorf("Decrypt returned another plaintext")
				}
			}
		})
	}
	wg.Wait()
	if f := kmsd.Server.Faults(); f.Validate() != nil {
		t.Fatalf("faults after concurrent changes: %+v", f)
	}
	kmsd.SetFaults(devkms.Faults{ThrottleRate: 7, ErrorRate: -1, Latency: time.Hour})
	if diff := cmp.Diff(devkms.Faults{ThrottleRate: 1, ErrorRate: 0, Latency: devkms.MaxFaultLatency}, kmsd.Server.Faults()); diff != "" {
		t.Fatalf("SetFaults does not clamp (-want +got):\n%s", diff)
	}
}

func TestShutdownEndsInjectedLatency(t *testing.T) {
	kmsd := devkmstest.Start(t, devkmstest.WithConfig(func(c *devkms.Config) { c.Faults.Latency = devkms.MaxFaultLatency }))
	c := kmsd.Client(t)
	errc := make(chan error, 1)
	go func() { errc <- random(c) }()
	time.Sleep(200 * time.Millisecond) // let the request reach its injected sleep
	// Without the shutdown ending the sleep, Close would wait for
	// ShutdownTimeout and report that the server did not drain.
	if err := kmsd.Close(); err != nil {
		t.Fatalf("Close with a request sleeping in injected latency: %v", err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the request sleeping in injected latency succeeded")
	}
}
