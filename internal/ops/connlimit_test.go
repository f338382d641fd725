package ops

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestConnLimits: a listener holds at most its cap of connections; one
// more is closed at once and counted, and a closed one frees its slot
// (issue 22: thousands of slow-header connections had no bound).
func TestConnLimits(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limits := NewConnLimits(prometheus.NewRegistry(), "test")
	ln := limits.Listener(raw, "api", 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(deadline)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	held := []net.Conn{}
	for range 2 {
		dial()
		held = append(held, <-accepted)
	}
	over := dial()
	if _, err := over.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read on the connection over the cap = %v; want EOF (closed by the server)", err)
	}
	if got := promtest.ToFloat64(limits.refused.WithLabelValues("api")); got != 1 {
		t.Errorf("refused = %v; want 1", got)
	}
	if got := promtest.ToFloat64(limits.open.WithLabelValues("api")); got != 2 {
		t.Errorf("open = %v; want 2", got)
	}
	_ = held[0].Close()
	_ = held[0].Close() // a second Close gives nothing back twice
	dial()
	select {
	case c := <-accepted:
		_ = c.Close()
	case <-time.After(time.Until(deadline)):
		t.Fatal("no connection accepted after one closed")
	}
	if got := promtest.ToFloat64(limits.open.WithLabelValues("api")); got != 1 {
		t.Errorf("open after closing two = %v; want 1", got)
	}
	_ = held[1].Close()
}
