package forward

import (
	"bytes"
	"context"
	"fmt"
	"github.com/copilot-broker/copilot-broker/internal/forward/usage"
	"github.com/copilot-broker/copilot-broker/internal/forward/usagereport"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/pool"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// Accounts supplies the token source of each account (the token and
// account stages of the handler): a key maps to one account or a pool of them.
type Accounts interface {
	// Source returns the named account's token source. It is never nil: an
	// account the proxy does not (or no longer) watch has a source whose
	// Token says so.
	Source(account string) TokenSource
	// Names returns every account the proxy's broker key may read, for "*"
	// pools, in a stable order.
	Names() []string
}

// QuotaReporter is implemented by token sources that can tell the broker an
// upstream 402 was answered, so that it re-reads the account's quota at once.
type QuotaReporter interface {
	ReportQuotaExceeded(rejected *Token)
}

// PoolChecker is implemented by token sources that know more than their
// token: a pool skips a member whose PoolReady fails (the broker reports
// its credential REJECTED or its token EXPIRED) even while a cached token
// is still held for its per-person keys.
type PoolChecker interface {
	PoolReady() error
}

// Target is what an API key maps to.
type Target struct {
	// Accounts names one account (a per-person key) or the members of a
	// pool, in configuration order.
	Accounts []string
	// All makes the key a pool of every account the broker key may read
	// ("*"); Accounts is then ignored.
	All bool
}

// target is a key's resolved [Target]: a single source, or a pool.
type target struct {
	account string
	src     TokenSource // single account
	members []string    // pool members, fixed; nil with all
	all     bool
}

func (t *target) pooled() bool { return t.src == nil }

// acctCall is the account stage's share of a [call].
type acctCall struct {
	tgt     *target
	account string
	src     TokenSource
	tried   []string
	release func()
}

// resolveTargets builds the key targets of cfg.
func resolveTargets(cfg Config) (map[string]*target, *target, error) {
	def := &target{src: cfg.Source, account: cfg.DefaultAccount}
	if cfg.Accounts == nil {
		if len(cfg.Targets) > 0 {
			return nil, nil, fmt.Errorf("forward: key targets need Accounts")
		}
		return nil, def, nil
	}
	out := make(map[string]*target, len(cfg.Targets))
	for key, t := range cfg.Targets {
		switch {
		case t.All:
			out[key] = &target{all: true}
		case len(t.Accounts) == 1:
			out[key] = &target{account: t.Accounts[0], src: cfg.Accounts.Source(t.Accounts[0])}
		case len(t.Accounts) > 1:
			out[key] = &target{members: append([]string(nil), t.Accounts...)}
		}
	}
	return out, def, nil
}

// targetOf returns the key's target.
func (h *Handler) targetOf(key string) *target {
	if t := h.targets[key]; t != nil {
		return t
	}
	return h.defTarget
}

// poolMembers lists a pool target's current candidates with their tokens.
func (h *Handler) poolMembers(t *target) ([]pool.Candidate, []TokenSource, []*Token) {
	names := t.members
	if t.all {
		names = h.accounts.Names()
	}
	cands := make([]pool.Candidate, len(names))
	srcs := make([]TokenSource, len(names))
	toks := make([]*Token, len(names))
	for i, n := range names {
		cands[i].Name = n
		srcs[i] = h.accounts.Source(n)
		if pc, ok := srcs[i].(PoolChecker); ok && pc.PoolReady() != nil {
			continue
		}
		if tok, err := srcs[i].Token(); err == nil && h.usable(tok) == nil {
			if _, berr := h.baseURL(tok); berr == nil {
				cands[i].TokenID = tokenID(tok)
				toks[i] = tok
			}
		}
	}
	return cands, srcs, toks
}

func tokenID(t *Token) string { return t.Epoch + "/" + strconv.FormatUint(t.Generation, 10) }

// pickMember chooses the pool member of c for the first or a later attempt.
// It returns false and the outage when none is usable.
func (h *Handler) pickMember(c *call) (bool, pool.Outage) {
	a := &c.acct
	cands, srcs, toks := h.poolMembers(a.tgt)
	idx, out := h.pool.Pick(cands, c.affinity(), a.tried)
	if idx < 0 {
		return false, out
	}
	base, _ := h.baseURL(toks[idx])
	if a.release != nil {
		a.release()
	}
	a.account, a.src = cands[idx].Name, srcs[idx]
	a.tried = append(a.tried, a.account)
	a.release = h.pool.Acquire(a.account)
	c.tok, c.base = toks[idx], base
	return true, pool.Outage{}
}

// affinity hashes the conversation's first turns, computed once per call.
func (c *call) affinity() uint64 {
	if c.body == nil {
		return 0
	}
	if c.aff == 0 {
		c.aff = c.in.Affinity(c.body.Bytes())
		if c.aff == 0 {
			c.aff = 1 // no conversation: still cached; Pick treats 1 as any other
		}
	}
	if c.aff == 1 {
		return 0
	}
	return c.aff
}

// errPoolOutage answers a pool with no usable member: 429 while some member
// is out for a rate limit or a spent quota, 503 when none has a token.
func errPoolOutage(out pool.Outage) dialect.Error {
	secs := int64((out.RetryAfter + time.Second - 1) / time.Second)
	if out.Limited {
		return dialect.Error{Status: http.StatusTooManyRequests,
			Message:    fmt.Sprintf("every account of this key's pool is rate limited or out of quota (%s); retry after %d s", reasons(out), secs),
			OpenAIType: "rate_limit_error", OpenAICode: "rate_limit_exceeded", AnthropicType: "rate_limit_error"}
	}
	e := dialect.Unavailable(fmt.Sprintf("no account of this key's pool has a usable Copilot token (%s); retry after %d s", reasons(out), secs))
	return e
}

func reasons(out pool.Outage) string {
	if len(out.Reasons) == 0 {
		return "the pool is empty"
	}
	s := ""
	for _, r := range []string{"rate_limited", "quota_spent", "token_refused", "no_token", "tried"} {
		if n := out.Reasons[r]; n > 0 {
			if s != "" {
				s += ", "
			}
			s += fmt.Sprintf("%s: %d", r, n)
		}
	}
	return s
}

// rejectPool answers a pool outage with Retry-After.
func (h *Handler) rejectPool(w http.ResponseWriter, c *call, out pool.Outage) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64((out.RetryAfter+time.Second-1)/time.Second), 10))
	w.Header().Set("X-Request-Id", c.requestID)
	e := errPoolOutage(out)
	c.status = e.Status
	dialect.Write(w, c.route.dialect, e)
}

// source is the token source of the call's account.
func (c *call) source(h *Handler) TokenSource {
	if c.acct.src != nil {
		return c.acct.src
	}
	return h.source
}

// judge looks at an upstream answer of the call's account (after any 401
// retry), updates the account's health, and says whether a pool request
// should go to another member: a 429, a 402, or a 401 that survived the
// refresh. Nothing has reached the client yet.
func (h *Handler) judge(ctx context.Context, c *call, resp *http.Response) (failover bool) {
	a := &c.acct
	now := h.clock.Now()
	snaps := h.quota.Read(a.account, resp.Header)
	if len(snaps) > 0 {
		h.pool.SetQuota(a.account, now, snaps...)
	}
	usageSnaps := h.quota.ReadUsage(a.account, resp.Header)
	if len(usageSnaps) > 0 {
		h.pool.SetUsage(a.account, usageSnaps...)
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if !h.judgeLimit(c, resp, usageSnaps, now) {
			return false
		}
	case http.StatusPaymentRequired:
		var reset time.Time
		for _, s := range snaps {
			if s.Exhausted() && s.Reset.After(reset) {
				reset = s.Reset
			}
		}
		until := h.pool.QuotaSpent(a.account, reset)
		h.metrics.accountErrors.WithLabelValues(a.account, "quota_spent").Inc()
		h.log.Info("account quota spent", "account", a.account, "until", until, "request_id", c.requestID)
		if qr, ok := c.source(h).(QuotaReporter); ok {
			qr.ReportQuotaExceeded(c.tok)
		}
	case http.StatusUnauthorized:
		h.pool.Refused(a.account, tokenID(c.tok))
		h.metrics.accountErrors.WithLabelValues(a.account, "token_refused").Inc()
		h.log.Warn("account's token refused upstream after a refresh; out until a new token", "account", a.account,
			"generation", c.tok.Generation, "request_id", c.requestID)
	default:
		return false
	}
	return a.tgt.pooled() && ctx.Err() == nil
}

// initAccounts sets up the account stage from cfg.
func (h *Handler) initAccounts(cfg Config) error {
	targets, def, err := resolveTargets(cfg)
	if err != nil {
		return err
	}
	h.accounts, h.targets, h.defTarget = cfg.Accounts, targets, def
	h.pool = cfg.Pool
	if h.pool == nil {
		h.pool = pool.New(pool.Config{Clock: h.clock})
	}
	h.usage = cfg.Usage
	if h.usage == nil {
		h.usage = usage.NewMetrics(nil)
	}
	h.modelLabel = cfg.ModelLabel
	if h.modelLabel == nil {
		h.modelLabel = usage.NewModels(nil, 0).Label
	}
	h.usageBufs = h.usage.TapBuffers()
	h.reporter = cfg.UsageReporter
	h.gate = cfg.Budgets
	return nil
}

// tapUsage counts a 2xx answer for the usage series, reading its usage as
// the body passes (see package usage); other answers are not counted there.
func (h *Handler) tapUsage(resp *http.Response, c *call) {
	if !c.route.hasBody() {
		return
	}
	model := c.decision.resolved // the body's, resolved; the body's as sent without a catalog
	if model == "" && c.body != nil {
		model = c.in.Model(c.body.Bytes())
	}
	premium := isPremium(c)
	ledger := h.reporter != nil || h.gate != nil
	var ev usagereport.Event
	if ledger {
		ev = h.usageEvent(resp, c, model, premium)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if ledger { // the ledger counts every answer; the series only 2xx ones
			h.finishUsage(ev, usage.Usage{}, false)
		}
		return
	}
	key, account, label := c.key, c.acct.account, h.modelLabel(model)
	m, units := h.usage, c.decision.model.PremiumUnits() // billing.multiplier from the catalog
	resp.Body = h.usageBufs.NewTap(resp.Body, func(u usage.Usage, ok bool) {
		m.RecordBilled(key, account, label, premium, units, u, ok)
		if ledger {
			h.finishUsage(ev, u, ok)
		}
	})
}

// outageResponse is the proxy's own answer when no pool member is left,
// in the client's dialect, handed to the reverse proxy as the upstream's.
func outageResponse(req *http.Request, c *call, out pool.Outage) *http.Response {
	rec := &bufferWriter{header: http.Header{}}
	c.status = 0
	h := rec.header
	h.Set("Retry-After", strconv.FormatInt(int64((out.RetryAfter+time.Second-1)/time.Second), 10))
	dialect.Write(rec, c.route.dialect, errPoolOutage(out))
	return &http.Response{
		StatusCode: rec.status, Status: strconv.Itoa(rec.status) + " " + http.StatusText(rec.status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()), Request: req,
	}
}

// bufferWriter is a minimal [http.ResponseWriter] that keeps what is
// written.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header         { return b.header }
func (b *bufferWriter) WriteHeader(code int)        { b.status = code }
func (b *bufferWriter) Write(p []byte) (int, error) { return b.body.Write(p) }
