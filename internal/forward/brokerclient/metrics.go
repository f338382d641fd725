package brokerclient

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	refreshes  *prometheus.CounterVec
}

// newMetrics registers, on reg when not nil:
//
//   - copilot_proxy_broker_connected: 1 while the watch stream delivers.
//   - copilot_proxy_broker_reconnects_total: watch streams re-opened.
//   - copilot_proxy_token_refresh_requests_total{result}: RefreshToken calls.
//   - copilot_proxy_token_expiry_timestamp_seconds: the held token's expiry
//     (0 without one).
//   - copilot_proxy_token_generation: the held token's generation.
func newMetrics(reg prometheus.Registerer, c *Client) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_proxy_broker_connected",
			Help: "1 while the WatchToken stream to the broker is delivering, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_broker_reconnects_total",
			Help: "WatchToken streams re-opened after one ended or failed.",
		}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_token_refresh_requests_total",
			Help: "RefreshToken calls made after an upstream 401, by result.",
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "copilot_proxy_token_expiry_timestamp_seconds",
		Help: "Expiry of the held Copilot token as a Unix time; 0 without a token.",
	}, func() float64 {
		if t := c.state.Load().tok; t != nil {
			return float64(t.ExpiresAt.Unix())
		}
		return 0
	})
	gen := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "copilot_proxy_token_generation",
		Help: "Generation of the held Copilot token.",
	}, func() float64 {
		if t := c.state.Load().tok; t != nil {
			return float64(t.Generation)
		}
		return 0
	})
	reg.MustRegister(m.connected, m.reconnects, m.refreshes, expiry, gen)
	return m
}
