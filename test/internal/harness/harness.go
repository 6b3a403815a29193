// Package harness holds what the programs that start kmsproxy's processes
// on this machine (the demo, the end-to-end tests, the benchmark) must all
// do alike: give them an environment that cannot reach real AWS, and pick
// loopback ports.
package harness

import (
	"net"
	"os"
	"strings"
)

// CleanEnv is this process's environment without AWS and kmsproxy
// settings, plus extra: nothing started with it can reach real AWS or pick
// up the developer's configuration (shared config and credentials files,
// IMDS).
func CleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "KMSPROXY_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_DISABLED=true")
	return append(env, extra...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
