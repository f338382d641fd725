package usage

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Other is the model label of every model past the bound.
const Other = "other"

// DefaultMaxModels bounds the model label values.
const DefaultMaxModels = 64

// Models turns a client's model name into a bounded metrics label: a name
// the Known function accepts (the catalog's ids, when a catalog is wired),
// else one of the first max distinct plain names seen, else [Other].
// Keys and accounts are configured, so with models bounded the usage series
// are bounded too.
type Models struct {
	known func(string) bool
	max   int
	mu    sync.RWMutex
	seen  map[string]struct{}
}

// NewModels returns a label set; known may be nil, max <= 0 takes
// [DefaultMaxModels].
func NewModels(known func(string) bool, max int) *Models {
	if max <= 0 {
		max = DefaultMaxModels
	}
	return &Models{known: known, max: max, seen: map[string]struct{}{}}
}

// Label returns the label for model.
func (m *Models) Label(model string) string {
	if !plain(model) {
		return Other
	}
	if m.known != nil && m.known(model) {
		return model
	}
	m.mu.RLock()
	_, ok := m.seen[model]
	n := len(m.seen)
	m.mu.RUnlock()
	if ok {
		return model
	}
	if n >= m.max {
		return Other
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.seen[model]; ok {
		return model
	}
	if len(m.seen) >= m.max {
		return Other
	}
	m.seen[model] = struct{}{}
	return model
}

// plain accepts model names of up to 100 bytes made of letters, digits and
// "-._:/@"; anything else is labelled Other.
func plain(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == ':' || c == '/' || c == '@') {
			return false
		}
	}
	return true
}

// Metrics are the usage series, by key, account and model:
//
//   - copilot_proxy_usage_requests_total: answers the upstream gave with a
//     2xx status.
//   - copilot_proxy_usage_premium_requests_total: those sent with
//     X-Initiator: user (Copilot bills a premium request for them).
//   - copilot_proxy_usage_premium_units_total: the premium requests
//     weighed by the model's billing.multiplier from the catalog (a
//     premium request of a model with multiplier 3 counts 3; a model the
//     catalog marks is_premium false counts 0).
//   - copilot_proxy_usage_tokens_total{type}: tokens by type: "input" (every
//     prompt token, cached ones included), "cached" (prompt tokens read
//     from cache) and "output".
//   - copilot_proxy_usage_unreported_total: 2xx answers whose usage was not
//     found (a Chat stream without stream_options.include_usage, a client
//     that left early).
//   - copilot_proxy_usage_oversized_total: answers in which the tap let a
//     usage object go for running past [MaxObject] bytes (their usage may
//     be missing or incomplete; a sign of a malformed answer).
type Metrics struct {
	requests, premium, unreported *prometheus.CounterVec
	tokens                        *prometheus.CounterVec
	premiumUnits                  *prometheus.CounterVec
	oversized                     prometheus.Counter
}

// NewMetrics registers the usage series on reg when it is not nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"key", "account", "model"}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_usage_requests_total",
			Help: "Requests the Copilot API answered with a 2xx status, by API key, account and model.",
		}, labels),
		premium: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_usage_premium_requests_total",
			Help: "Answered requests sent with X-Initiator: user (billed as premium requests), by API key, account and model.",
		}, labels),
		unreported: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_usage_unreported_total",
			Help: "Answered requests whose token usage was not found in the answer, by API key, account and model.",
		}, labels),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_usage_tokens_total",
			Help: "Tokens used by type (input: every prompt token, cached included; cached; output), by API key, account and model.",
		}, append(labels, "type")),
		premiumUnits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_usage_premium_units_total",
			Help: "Premium requests weighed by the model's billing multiplier from the catalog (premium units), by API key, account and model.",
		}, labels),
		oversized: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_usage_oversized_total",
			Help: "Answers in which a usage object ran past the tap's bound and was let go (their usage may be missing).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.premium, m.unreported, m.tokens, m.premiumUnits, m.oversized)
	}
	return m
}

// TapBuffers returns a pool for taps whose let-go usage objects count on
// copilot_proxy_usage_oversized_total.
func (m *Metrics) TapBuffers() *Buffers {
	bp := NewBuffers()
	bp.onOversized = m.oversized.Inc
	return bp
}

// Record counts one answered request.
func (m *Metrics) Record(key, account, model string, premium bool, u Usage, ok bool) {
	m.RecordBilled(key, account, model, premium, 1, u, ok)
}

// RecordBilled counts one answered request whose premium units are units
// (the model's billing multiplier, 0 for a model that is not premium; 1
// when the catalog says nothing).
func (m *Metrics) RecordBilled(key, account, model string, premium bool, units float64, u Usage, ok bool) {
	m.requests.WithLabelValues(key, account, model).Inc()
	if premium {
		m.premium.WithLabelValues(key, account, model).Inc()
		m.premiumUnits.WithLabelValues(key, account, model).Add(max(units, 0))
	}
	if !ok {
		m.unreported.WithLabelValues(key, account, model).Inc()
		return
	}
	m.tokens.WithLabelValues(key, account, model, "input").Add(float64(u.Input))
	m.tokens.WithLabelValues(key, account, model, "cached").Add(float64(u.Cached))
	m.tokens.WithLabelValues(key, account, model, "output").Add(float64(u.Output))
}
