package forward

import (
	"net/http"

	"github.com/copilot-broker/copilot-broker/internal/forward/inspect"
	"github.com/copilot-broker/copilot-broker/internal/forward/usage"
	"github.com/copilot-broker/copilot-broker/internal/forward/usagereport"
)

// UsageReporter takes one usage event per answered request (the broker's
// ledger; see package usagereport). Report must not block.
type UsageReporter interface {
	Report(usagereport.Event)
}

// usageEvent starts the ledger event of an answer whose headers arrived
// now: everything but what the body's end tells.
func (h *Handler) usageEvent(resp *http.Response, c *call, model string, premium bool) usagereport.Event {
	units := premiumUnits(c, premium)
	now := h.clock.Now()
	return usagereport.Event{
		ID: c.requestID, Time: c.start, RequestID: c.requestID, Key: c.key, Account: c.acct.account, Model: model,
		Dialect: usagereport.DialectOf(c.route.name), Endpoint: c.upstreamPath(), Status: resp.StatusCode,
		Premium: premium, PremiumUnits: units, TTFB: now.Sub(c.start),
	}
}

// premiumUnits is what a request bills: the model's multiplier from
// /models (1 when it gives none, 0 for a model not billed as premium)
// when premium, else 0.
func premiumUnits(c *call, premium bool) float64 {
	if !premium {
		return 0
	}
	return c.decision.model.PremiumUnits()
}

// isPremium: sent with X-Initiator: user (embeddings never are).
func isPremium(c *call) bool {
	return !c.in.Agent && c.route.shape != inspect.Opaque && c.route.hasBody()
}

// finishUsage completes the event with the answer's usage and reports it.
func (h *Handler) finishUsage(e usagereport.Event, u usage.Usage, ok bool) {
	e.Input, e.Output, e.Cached, e.UsageKnown = u.Input, u.Output, u.Cached, ok
	e.Latency = h.clock.Now().Sub(e.Time)
	if h.gate != nil {
		h.gate.AddTokens(e.Key, e.Input+e.Output)
	}
	if h.reporter != nil {
		h.reporter.Report(e)
	}
}
