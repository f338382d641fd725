package wsresponses

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the WebSocket front's series:
//
//   - copilot_proxy_ws_connections_open: connections open now;
//   - copilot_proxy_ws_connections_total{result}: upgrades by result
//     (accepted, unauthorized, key_limit, proxy_limit, draining, failed);
//   - copilot_proxy_ws_messages_total{direction}: messages received (in)
//     and sent (out);
//   - copilot_proxy_ws_turns_total{upstream}: response.create turns by how
//     they went upstream (http, ws);
//   - copilot_proxy_ws_turns_per_connection: turns a connection ran, at its
//     close;
//   - copilot_proxy_ws_upstream_fallbacks_total: client connections whose
//     upstream WebSocket failed 3 times in a row and went on over HTTP;
//   - copilot_proxy_ws_closes_total{code}: connections closed by the proxy,
//     by close code.
type Metrics struct {
	open      prometheus.Gauge
	conns     *prometheus.CounterVec
	messages  *prometheus.CounterVec
	turns     *prometheus.CounterVec
	perConn   prometheus.Histogram
	fallbacks prometheus.Counter
	closes    *prometheus.CounterVec
	in, out   prometheus.Counter
}

// NewMetrics registers the series with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_proxy_ws_connections_open", Help: "Responses WebSocket connections open.",
		}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_ws_connections_total",
			Help: "Responses WebSocket upgrade requests by result (accepted, unauthorized, key_limit, proxy_limit, draining, failed).",
		}, []string{"result"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_ws_messages_total", Help: "Responses WebSocket messages by direction (in: from clients, out: to clients).",
		}, []string{"direction"}),
		turns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_ws_turns_total", Help: "response.create turns by how they went upstream (http, ws).",
		}, []string{"upstream"}),
		perConn: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "copilot_proxy_ws_turns_per_connection", Help: "Turns a Responses WebSocket connection ran, observed at its close.",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_ws_upstream_fallbacks_total",
			Help: "Client connections whose upstream WebSocket failed 3 times in a row, then served over HTTP.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_ws_closes_total", Help: "Responses WebSocket connections closed by the proxy, by close code.",
		}, []string{"code"}),
	}
	m.in, m.out = m.messages.WithLabelValues("in"), m.messages.WithLabelValues("out")
	if reg != nil {
		reg.MustRegister(m.open, m.conns, m.messages, m.turns, m.perConn, m.fallbacks, m.closes)
	}
	return m
}
