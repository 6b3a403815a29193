package harness

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestCleanEnv(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIADEVELOPER0000001")
	t.Setenv("AWS_PROFILE", "prod")
	t.Setenv("KMSPROXY_LOG_LEVEL", "debug")
	t.Setenv("HARNESS_KEEP", "1")
	env := CleanEnv("EXTRA=1")
	for _, kv := range env {
		if strings.HasPrefix(kv, "KMSPROXY_") || kv == "AWS_ACCESS_KEY_ID=AKIADEVELOPER0000001" || kv == "AWS_PROFILE=prod" {
			t.Errorf("CleanEnv kept %s", kv)
		}
	}
	for _, want := range []string{"HARNESS_KEEP=1", "EXTRA=1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true"} {
		if !slices.Contains(env, want) {
			t.Errorf("CleanEnv lacks %s", want)
		}
	}
}

func TestFreePort(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d is not free: %v", p, err)
	}
	ln.Close()
}
