package forward

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/forward/upstreamerr"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// The error taxonomy (internal/forward/upstreamerr, docs/protocol.md
// sections 5 and 8) at the handler: judge uses the class of a 429 or 503
// for the pool (the wait, a used-up usage limit, model_overloaded going
// to another member), classifyError counts every class and refuses of the
// upstream profile (identity_rejected) are reported to the broker.

// classMetrics are the taxonomy's series.
type classMetrics struct {
	// classes: copilot_proxy_upstream_error_classes_total{class}.
	classes *prometheus.CounterVec
	// identity: copilot_proxy_identity_rejected_total{account}.
	identity *prometheus.CounterVec
}

func newClassMetrics(reg prometheus.Registerer) *classMetrics {
	m := &classMetrics{
		classes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_upstream_error_classes_total",
			Help: "Copilot API error answers by class of the error taxonomy (docs/protocol.md section 8): token_refused, forbidden, rate_limited, model_rate_limited, model_overloaded, agent_mode_limit, usage_limit, quota_exceeded, billing_not_configured, upstream_unavailable, identity_rejected.",
		}, []string{"class"}),
		identity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_proxy_identity_rejected_total",
			Help: "Copilot API answers refusing the upstream profile (466, client not supported, API version no longer supported), by account: edit the broker's --upstream-profile file.",
		}, []string{"account"}),
	}
	for _, c := range upstreamerr.Classes {
		m.classes.WithLabelValues(string(c))
	}
	if reg != nil {
		reg.MustRegister(m.classes, m.identity)
	}
	return m
}

// count counts one error answer of class c.
func (m *classMetrics) count(c upstreamerr.Class) {
	m.classes.WithLabelValues(string(c)).Inc()
}

// UpstreamErrorClasses returns the Copilot API error answers counted by
// class since the start (those of copilot_proxy_upstream_error_classes_total
// above zero), read from the counters themselves: the status report to the
// broker sends them every few seconds.
func (m *Metrics) UpstreamErrorClasses() map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range upstreamerr.Classes {
		var v dto.Metric
		if m.classes.classes.WithLabelValues(string(c)).Write(&v) == nil && v.GetCounter().GetValue() > 0 {
			out[string(c)] = uint64(v.GetCounter().GetValue())
		}
	}
	return out
}

// peekBody returns up to n bytes of resp's body and puts them back.
func peekBody(resp *http.Response, n int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, n))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	return b
}

// judgeLimit handles a 429 or 503 of the call's account for the pool: it
// reports whether the answer was of the rate-limit family (the caller
// fails over for a pool key).
func (h *Handler) judgeLimit(c *call, resp *http.Response, usage []pool.Snapshot, now time.Time) bool {
	a := &c.acct
	spent, reset := pool.UsageExhausted(usage)
	info := upstreamerr.Classify(resp.StatusCode, resp.Header, peekBody(resp, 4<<10), spent, now)
	switch {
	case info.Class == upstreamerr.ModelOverloaded:
		// The model is overloaded for this account now: another member may
		// serve at once, so no cool-down beyond this request's try.
		h.metrics.accountErrors.WithLabelValues(a.account, "model_overloaded").Inc()
		h.log.Info("model overloaded upstream", "account", a.account, "request_id", c.requestID)
	case info.Class == upstreamerr.UsageLimit || spent:
		until := h.pool.UsageLimited(a.account, reset, info.Wait)
		h.metrics.accountErrors.WithLabelValues(a.account, "usage_limited").Inc()
		h.log.Info("account's session or weekly usage limit used up", "account", a.account, "until", until, "request_id", c.requestID)
	case info.Class.RateFamily() || resp.StatusCode == http.StatusTooManyRequests:
		until := h.pool.RateLimited(a.account, info.Wait)
		h.metrics.accountErrors.WithLabelValues(a.account, "rate_limited").Inc()
		h.log.Info("account rate limited", "account", a.account, "until", until, "class", string(info.Class),
			"code", info.Code, "wait_from", info.WaitFrom, "request_id", c.requestID)
	default:
		return false // a 503 of another kind: passed on as it is
	}
	return true
}

// IdentityReporter is implemented by token sources that can tell the broker
// that the Copilot API refused the upstream profile.
type IdentityReporter interface {
	ReportIdentityRejected(rejected *Token, detail string)
}

// identityRejected counts, logs and reports a refusal of the profile.
func (h *Handler) identityRejected(c *call, status int, msg string) {
	h.metrics.classMetrics().identity.WithLabelValues(c.acct.account).Inc()
	e := h.hdrs.Editor()
	src := "(built-in default)"
	if h.profile != nil {
		if cur := h.profile.Get(); cur.Source != "" {
			src = cur.Source
		}
	}
	h.log.Warn("the Copilot API refused the upstream profile (identity_rejected); "+identity.ProfileAdvice,
		"account", c.acct.account, "status", status, "message", msg, "profile_file", src,
		"editor_version", e.Version, "editor_plugin_version", e.PluginVersion, "api_version", e.APIVersion, "request_id", c.requestID)
	if r, ok := c.source(h).(IdentityReporter); ok && c.tok != nil {
		r.ReportIdentityRejected(c.tok, fmt.Sprintf("HTTP %d: %s", status, msg))
	}
}
