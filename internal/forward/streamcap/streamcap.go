// Package streamcap bounds the requests the proxy's client listener serves
// at once. Over HTTP/1.1 a connection carries one request at a time, so the
// listener's connection cap (--max-connections) bounds them; a client
// speaking HTTP/2 to the proxy (h2c) carries up to
// --max-streams-per-connection requests on each connection, so connections
// alone no longer bound what clients make the proxy hold (a goroutine, its
// buffers and an upstream stream per request). A request past the cap gets
// 503 with Retry-After at once, in its dialect's error shape.
package streamcap

import (
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
	"github.com/prometheus/client_golang/prometheus"
)

// Cap counts the requests being served and refuses those past its maximum.
type Cap struct {
	max     int64
	n       atomic.Int64
	refused prometheus.Counter
}

// New returns a cap of max requests at once (max <= 0: none, only
// counted) whose metrics copilot_proxy_streams (requests being served) and
// copilot_proxy_streams_refused_total are registered with reg.
func New(max int, reg prometheus.Registerer) *Cap {
	c := &Cap{max: int64(max), refused: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "copilot_proxy_streams_refused_total",
		Help: "Client requests answered 503 at once because the proxy served its --max-streams.",
	})}
	// Read at scrape time: the request path pays one atomic add each way.
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "copilot_proxy_streams",
		Help: "Client requests (streams) being served, over HTTP/1.1 and HTTP/2 together.",
	}, func() float64 { return float64(c.n.Load()) })
	reg.MustRegister(c.refused, open)
	return c
}

// Open is how many requests are being served.
func (c *Cap) Open() int { return int(c.n.Load()) }

// Handler serves next within the cap.
func (c *Cap) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := c.n.Add(1); c.max > 0 && n > c.max {
			c.n.Add(-1)
			c.refused.Inc()
			w.Header().Set("Retry-After", "1")
			dialect.Write(w, dialect.OfPath(r.URL.Path), dialect.Overloaded(fmt.Sprintf(
				"the proxy is serving the most requests it takes at once (%d, --max-streams); retry shortly", c.max)))
			return
		}
		defer c.n.Add(-1)
		next.ServeHTTP(w, r)
	})
}
