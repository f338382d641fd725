package testutil

import (
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// HeldBodies is what [HoldBodies] saw.
type HeldBodies struct {
	// Freed counts the connections that were answered or closed by the
	// server within the wait.
	Freed int
	// Slowest is the time the last freed connection took.
	Slowest time.Duration
}

// HoldBodies opens n connections to addr and sends on each the request head
// (request line and headers, ending in the blank line) announcing a body it
// never sends. It then waits up to wait for the server to answer or close
// each, and closes them all. The caller's process needs about 2n file
// descriptors when the server runs in it (Go raises the soft limit to the
// hard one at start).
func HoldBodies(t testing.TB, addr, head string, n int, wait time.Duration) HeldBodies {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	for range n {
		c, err := net.DialTimeout("tcp", addr, wait)
		if err != nil {
			t.Fatalf("dial %s after %d connections: %v", addr, len(conns), err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte(head)); err != nil {
			t.Fatalf("write the request head: %v", err)
		}
	}
	var mu sync.Mutex
	var res HeldBodies
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			_ = c.SetReadDeadline(start.Add(wait))
			var b [1]byte
			_, err := c.Read(b[:])
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			took := time.Since(start)
			mu.Lock()
			res.Freed++
			res.Slowest = max(res.Slowest, took)
			mu.Unlock()
		})
	}
	wg.Wait()
	return res
}
