package forward

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
	"github.com/copilot-broker/copilot-broker/internal/forward/keybudget"
)

// BudgetGate admits requests against the keys' budgets (package
// keybudget).
type BudgetGate interface {
	Admit(key, account, requestID string, premiumUnits float64) keybudget.Decision
	AddTokens(key string, n int64)
}

// admitBudget answers 429 in the client's dialect when the key's budget is
// spent or its rpm limit reached, or (a key bound to one account alone)
// that account's budget is spent, and adds X-Budget-Warning past 80 %. It
// returns false when it answered. A pool has chosen its member by now,
// skipping spent accounts (package pool): only a single account is named.
func (h *Handler) admitBudget(w http.ResponseWriter, c *call) bool {
	if h.gate == nil {
		return true
	}
	account := ""
	if !c.acct.tgt.pooled() {
		account = c.acct.account
	}
	d := h.gate.Admit(c.key, account, c.requestID, premiumUnits(c, isPremium(c)))
	if d.Warning != "" {
		w.Header().Set("X-Budget-Warning", d.Warning)
	}
	if !d.Denied {
		return true
	}
	w.Header().Set("Retry-After", strconv.FormatInt(int64((d.RetryAfter+time.Second-1)/time.Second), 10))
	e := dialect.Error{Status: http.StatusTooManyRequests, Message: "budget_exceeded: " + d.Message,
		OpenAIType: "insufficient_quota", OpenAICode: "budget_exceeded", AnthropicType: "rate_limit_error"}
	if strings.HasPrefix(d.Budget, "rpm") {
		e = dialect.Error{Status: http.StatusTooManyRequests, Message: "rate_limit_exceeded: " + d.Message,
			OpenAIType: "rate_limit_error", OpenAICode: "rate_limit_exceeded", AnthropicType: "rate_limit_error"}
	}
	h.answerError(w, c, c.route.dialect, e)
	return false
}
