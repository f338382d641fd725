package server

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestMemPipeConn runs the standard net.Conn conformance tests (reads and
// writes, closing, deadlines, concurrency) on the gateway's in-memory
// connection.
func TestMemPipeConn(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2 = memPipe()
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	})
}

func TestMemListener(t *testing.T) {
	ln := newMemListener()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err := ln.DialContext(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := server.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("Read = %q, %v; want ping", buf, err)
	}
	client.Close()
	server.Close()
	ln.Close()
	if _, err := ln.Accept(); err != net.ErrClosed {
		t.Errorf("Accept after Close = %v; want net.ErrClosed", err)
	}
	if _, err := ln.DialContext(t.Context()); err != net.ErrClosed {
		t.Errorf("DialContext after Close = %v; want net.ErrClosed", err)
	}
}
