//go:build unix

package h1

import (
	"net"
	"syscall"
)

// alive says whether an idle connection can take a request: nothing to read
// on it (a peek that would block). End of stream, a reset, or bytes the
// upstream sent while it was idle (an HTTP 408, a TLS close alert) mean it
// is closing.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true // never wait
	})
	return err == nil && ok
}
