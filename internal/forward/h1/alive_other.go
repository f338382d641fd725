//go:build !unix

package h1

import "net"

// alive cannot peek without blocking here; a stale connection shows itself
// when the request is written (and is retried) or read.
func alive(net.Conn) bool { return true }
