package transport

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// BringUpLoopback sets the "lo" interface up when it is down, as it is when a
// Nitro enclave boots (the enclave image has no init scripts doing it). On
// NETDEV_UP the kernel gives lo 127.0.0.1/8 and ::1 by itself. It reports
// whether it changed anything.
func BringUpLoopback() (changed bool, err error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("failed to bring lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return false, fmt.Errorf("failed to bring lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return false, fmt.Errorf("failed to read lo's flags: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return false, nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return false, fmt.Errorf("failed to bring lo up (needs CAP_NET_ADMIN): %w", err)
	}
	return true, nil
}
