package forward

import (
	"net/http"

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
	units := 0.0
	if premium {
		units = 1 // the multiplier when /models gives none
		if m := c.decision.model; m != nil && m.Billing != nil {
			units = m.Billing.Multiplier
		}
	}
	now := h.clock.Now()
	return usagereport.Event{
		ID: c.requestID, Time: c.start, RequestID: c.requestID, Key: c.key, Account: c.acct.account, Model: model,
		Dialect: usagereport.DialectOf(c.route.name), Endpoint: c.upstreamPath(), Status: resp.StatusCode,
		Premium: premium, PremiumUnits: units, TTFB: now.Sub(c.start),
	}
}

// finishUsage completes the event with the answer's usage and reports it.
func (h *Handler) finishUsage(e usagereport.Event, u usage.Usage, ok bool) {
	e.Input, e.Output, e.Cached, e.UsageKnown = u.Input, u.Output, u.Cached, ok
	e.Latency = h.clock.Now().Sub(e.Time)
	h.reporter.Report(e)
}
