package sandbox

import (
	"context"
	"maps"
	"net/http"
)

// UsageCount is what the sandbox answered for one account and model: the
// requests it answered with a completion and the token counts it reported
// in them, normalised as the proxy reads them (input counts every prompt
// token, cached ones included). Tests compare a usage ledger with it.
type UsageCount struct {
	Requests int `json:"requests"`
	Premium  int `json:"premium"`
	Input    int `json:"input"`
	Output   int `json:"output"`
	Cached   int `json:"cached"`
}

type acctCtxKey struct{}

// withAccount carries the account of a verified API call to its handler.
func withAccount(r *http.Request, a *account) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), acctCtxKey{}, a))
}

// countUsage adds an answer to Stats.Usage under "account/model".
func (s *Server) countUsage(r *http.Request, model string, a *answer) {
	acct, _ := r.Context().Value(acctCtxKey{}).(*account)
	name := ""
	if acct != nil {
		name = acct.name
	}
	premium := r.Header.Get("X-Initiator") == "user"
	st := &s.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stats.Usage == nil {
		st.stats.Usage = map[string]UsageCount{}
	}
	c := st.stats.Usage[name+"/"+model]
	c.Requests++
	if premium {
		c.Premium++
	}
	c.Input += a.input
	c.Output += a.output
	c.Cached += a.cached
	st.stats.Usage[name+"/"+model] = c
}

func copyUsage(m map[string]UsageCount) map[string]UsageCount {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}
