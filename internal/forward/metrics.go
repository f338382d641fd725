package forward

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the forwarding's Prometheus series.
type Metrics struct {
	requests *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	retries  *prometheus.CounterVec
}

// NewMetrics registers the forwarding's series on reg (a registry of the
// caller's, never the global one):
//
//   - copilot_proxy_requests_total{route,status,key}: requests answered;
//     status 499 means the client went away first; key is the API key's name.
//   - copilot_proxy_upstream_latency_seconds{route}: time to the upstream's
//     response headers.
//   - copilot_proxy_upstream_retries_total{result}: retries after an upstream
//     401 ("retried", or why not: "no_new_token", "refresh_failed").
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_requests_total",
			Help: "Requests answered by the proxy, by client route, HTTP status (499: client went away) and API key name.",
		}, []string{"route", "status", "key"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "copilot_proxy_upstream_latency_seconds",
			Help:    "Time from sending a request upstream to its response headers.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"route"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_upstream_retries_total",
			Help: "Upstream 401 answers by outcome: retried with a new token, or passed through.",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.upstream, m.retries)
	}
	return m
}

func statusLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 401:
		return "401"
	case 429:
		return "429"
	}
	return strconv.Itoa(code)
}
