//go:build !linux

package transport

// BringUpLoopback does nothing outside Linux, where enclaves do not run.
func BringUpLoopback() (changed bool, err error) { return false, nil }
