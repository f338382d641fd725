package ops

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConnections is each listener's connection cap unless
// --max-connections says otherwise: about 250 MiB of idle connections, under
// the proxy's 512 MiB pod limit with room for bodies.
const DefaultMaxConnections = 3000

// ConnLimits caps the connections each listener of a binary holds open at
// once: every connection costs buffers and a goroutine (about 84 KiB for
// an idle HTTP one) before any key is checked, so without a cap a client
// opening thousands of slow connections would exhaust the process's
// memory. A connection over the cap is closed as soon as it is accepted.
type ConnLimits struct {
	open    *prometheus.GaugeVec
	refused *prometheus.CounterVec
}

// NewConnLimits returns the limits of one binary, whose metrics
// PREFIX_connections{listener} (open now) and
// PREFIX_connections_refused_total{listener} are registered with reg.
func NewConnLimits(reg prometheus.Registerer, prefix string) *ConnLimits {
	l := &ConnLimits{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: prefix + "_connections",
			Help: "Connections open on a listener.",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_connections_refused_total",
			Help: "Connections closed at once because the listener held its --max-connections.",
		}, []string{"listener"}),
	}
	reg.MustRegister(l.open, l.refused)
	return l
}

// Listener returns ln holding at most max connections (max <= 0: no cap),
// counted under the label name.
func (l *ConnLimits) Listener(ln net.Listener, name string, max int) net.Listener {
	return &limitedListener{Listener: ln, max: int64(max), open: l.open.WithLabelValues(name), refused: l.refused.WithLabelValues(name)}
}

type limitedListener struct {
	net.Listener
	max     int64
	n       atomic.Int64
	open    prometheus.Gauge
	refused prometheus.Counter
}

// Accept returns the next connection within the cap; those over it are
// closed and not returned.
func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if n := ln.n.Add(1); ln.max > 0 && n > ln.max {
			ln.n.Add(-1)
			ln.refused.Inc()
			_ = c.Close()
			continue
		}
		ln.open.Inc()
		return &countedConn{Conn: c, ln: ln}, nil
	}
}

// countedConn gives its slot back once, on its first Close.
type countedConn struct {
	net.Conn
	ln   *limitedListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.ln.n.Add(-1)
		c.ln.open.Dec()
	})
	return c.Conn.Close()
}
