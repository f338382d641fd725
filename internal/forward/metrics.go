package forward

import (
	"strconv"

	"github.com/copilot-broker/copilot-broker/internal/forward/catalog"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the forwarding's Prometheus series.
type Metrics struct {
	requests *prometheus.CounterVec
	upstream *prometheus.HistogramVec
	retries  *prometheus.CounterVec
	// The account stage (accounts.go).
	failovers     *prometheus.CounterVec
	accountErrors *prometheus.CounterVec

	budgetRefused prometheus.Counter
	budgetPreempt prometheus.Counter
	inflightBody  prometheus.Gauge
	// betasDropped counts anthropic-beta values not forwarded.
	betasDropped *prometheus.CounterVec
	// upstreamErrors counts classified upstream error answers.
	upstreamErrors *prometheus.CounterVec
	// streamIdle counts streams ended by the stream idle timeout.
	streamIdle *prometheus.CounterVec
	// The model stage (models.go).
	routes  routeCounters
	catalog *catalog.Metrics
	// Translation (translate_route.go).
	dialects *dialectMetrics
	// The error taxonomy (errorclass.go).
	classes *classMetrics
}

func (m *Metrics) classMetrics() *classMetrics { return m.classes }

// routeCounters count the model stage's decisions (copilot_proxy_model_routes_total).
type routeCounters struct {
	pass, unsupported, unknown, noCatalog prometheus.Counter
}

// NewMetrics registers the forwarding's series on reg (a registry of the
// caller's, never the global one):
//
//   - copilot_proxy_requests_total{route,code,key}: requests answered, code
//     being the HTTP status (the label name the broker's REST metrics use
//     too); 499 means the client went away first; key is the API key's name.
//   - copilot_proxy_upstream_latency_seconds{route}: time to the upstream's
//     response headers.
//   - copilot_proxy_upstream_retries_total{result}: retries after an upstream
//     401 ("retried", or why not: "no_new_token", "refresh_failed"), and
//     requests sent again after their upstream connection could not be set
//     up ("connect").
//   - copilot_proxy_pool_failovers_total{key,result}: pool requests sent to
//     another member after a 429, 402 or lasting 401 ("retried"), or
//     answered by the proxy because no member was left ("exhausted").
//   - copilot_proxy_account_errors_total{account,reason}: upstream answers
//     that took an account out of its pools: "rate_limited" (429),
//     "quota_spent" (402), "token_refused" (401 after a refresh).
//   - copilot_proxy_body_budget_refusals_total: requests answered 503
//     because their body found no room in the in-flight body budget.
//   - copilot_proxy_body_budget_preemptions_total: of those, bodies that
//     gave their room to an older body waiting for it (body.Budget).
//   - copilot_proxy_inflight_body_bytes: request body bytes admitted and
//     held right now.
//   - copilot_proxy_upstream_errors_total{kind}: upstream error answers
//     passed to clients: token_refused, quota, rate_limited,
//     client_not_supported.
//   - copilot_proxy_anthropic_betas_dropped_total{beta}: anthropic-beta
//     values not on the allow list, not forwarded; beta is the name for the
//     first 64 distinct well-formed names, else "other".
//   - copilot_proxy_model_routes_total{decision}: requests naming a model, by
//     what the catalog said: "pass" (served on the client's endpoint),
//     "unsupported" (answered by the proxy), "unknown" (not in the catalog,
//     forwarded), "no_catalog" (forwarded unchecked).
//   - the catalog's series, see [catalog.NewMetrics].
//   - copilot_proxy_stream_idle_timeouts_total{route}: event streams the
//     proxy ended because the upstream sent nothing for the stream idle
//     timeout.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_requests_total",
			Help: "Requests answered by the proxy, by client route, HTTP status (499: client went away) and API key name.",
		}, []string{"route", "code", "key"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "copilot_proxy_upstream_latency_seconds",
			Help:    "Time from sending a request upstream to its response headers.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"route"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_upstream_retries_total",
			Help: "Upstream 401 answers by outcome: retried with a new token, or passed through; and requests sent again after a failed upstream connection setup (connect).",
		}, []string{"result"}),
		streamIdle: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_stream_idle_timeouts_total",
			Help: "Event streams ended with an error event because the upstream sent nothing for the stream idle timeout, by client route.",
		}, []string{"route"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_pool_failovers_total",
			Help: "Pool requests sent to another member after a 429, 402 or lasting 401 (retried), or answered by the proxy with no member left (exhausted), by API key name.",
		}, []string{"key", "result"}),
		accountErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_account_errors_total",
			Help: "Upstream answers that took an account out of its pools, by account and reason (rate_limited, usage_limited, model_overloaded, quota_spent, token_refused).",
		}, []string{"account", "reason"}),
		budgetRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_body_budget_refusals_total",
			Help: "Requests answered 503 because the in-flight request body budget had no room within the wait.",
		}),
		budgetPreempt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_body_budget_preemptions_total",
			Help: "Requests answered 503 (and counted in copilot_proxy_body_budget_refusals_total) because their body, waiting for room to grow, gave the bytes it held to an older body waiting for room.",
		}),
		inflightBody: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_proxy_inflight_body_bytes",
			Help: "Request body bytes admitted by the in-flight body budget and not yet released.",
		}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_upstream_errors_total",
			Help: "Upstream error answers passed to clients, by kind: token_refused (401/403 after the refresh), quota (402), rate_limited (429/503), client_not_supported (466: update the editor identity).",
		}, []string{"kind"}),
		betasDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_anthropic_betas_dropped_total",
			Help: "anthropic-beta values dropped because they are not on the allow list (the Copilot API refuses unknown betas), by beta name (\"other\" past 64 names).",
		}, []string{"beta"}),
	}
	routes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "copilot_proxy_model_routes_total",
		Help: "Requests naming a model, by routing decision: pass (the model serves the endpoint), unsupported (translated to an endpoint the model has, or refused when none fits), unknown (not in the catalog, forwarded), no_catalog (forwarded unchecked).",
	}, []string{"decision"})
	m.routes = routeCounters{
		pass: routes.WithLabelValues("pass"), unsupported: routes.WithLabelValues("unsupported"),
		unknown: routes.WithLabelValues("unknown"), noCatalog: routes.WithLabelValues("no_catalog"),
	}
	m.catalog = catalog.NewMetrics(reg)
	m.dialects = newDialectMetrics(reg)
	m.classes = newClassMetrics(reg)
	if reg != nil {
		reg.MustRegister(m.requests, m.upstream, m.retries, m.failovers, m.accountErrors, m.budgetRefused, m.budgetPreempt, m.inflightBody, m.betasDropped, m.upstreamErrors, m.streamIdle, routes)
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

// Catalog returns the model catalog's series (for the alias file).
func (m *Metrics) Catalog() *catalog.Metrics { return m.catalog }
