package ops

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrNoAuthBeyondLoopback is returned by [CheckExposure] when a listener is
// reachable from other machines and no keys are configured.
var ErrNoAuthBeyondLoopback = errors.New("refusing to listen beyond loopback without keys")

// IsLoopback reports whether a listen address ("host:port") is reachable
// only from this machine. An empty host ("":port, all interfaces) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

// CheckExposure returns an error naming the flags to fix when any of addrs is
// beyond loopback, no keys are configured and insecureNoAuth is false.
// keysFlag names the flag that configures keys.
func CheckExposure(addrs []string, haveKeys, insecureNoAuth bool, keysFlag string) error {
	if haveKeys || insecureNoAuth {
		return nil
	}
	for _, a := range addrs {
		if !IsLoopback(a) {
			return fmt.Errorf("%w: %s is reachable from other machines; set --%s (one NAME:SECRET a line), listen on 127.0.0.1, or pass --insecure-no-auth if something else guards this address",
				ErrNoAuthBeyondLoopback, a, keysFlag)
		}
	}
	return nil
}

// ListenAll binds a TCP listener on each address, in order. When one fails
// it closes those already bound and names the address in the error.
func ListenAll(addrs ...string) ([]net.Listener, error) {
	lns := make([]net.Listener, 0, len(addrs))
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			CloseAll(lns)
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// CloseAll closes every listener, ignoring errors (for cleanup paths).
func CloseAll(lns []net.Listener) {
	for _, ln := range lns {
		_ = ln.Close()
	}
}
