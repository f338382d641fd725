package forward

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/forward/usage"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	poolKey   = "pool-key-0123456789"
	aliceKey  = "alice-key-0123456789"
	allKey    = "all-key-0123456789"
	defaultKy = "default-key-0123456789"
)

// fakeAccounts is an Accounts of fake sources, one per account.
type fakeAccounts struct {
	mu   sync.Mutex
	srcs map[string]*fakeSource
	all  []string
}

func (f *fakeAccounts) Source(name string) TokenSource {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.srcs[name]; s != nil {
		return s
	}
	return &fakeSource{err: fmt.Errorf("%w: account %q unknown", ErrNoToken, name)}
}

func (f *fakeAccounts) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.all...)
}

func acctToken(name string, gen uint64, exp time.Time) *Token {
	return &Token{Value: secret.New("tok-" + name), Generation: gen, Epoch: "e1", ExpiresAt: exp}
}

// accountOf tells which account's token an upstream request carries.
func accountOf(r *http.Request) string {
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer tok-")
}

// poolUpstream answers per account: status, with headers.
type poolUpstream struct {
	mu      sync.Mutex
	answers map[string]func(w http.ResponseWriter)
	calls   []string
}

func (p *poolUpstream) set(account string, f func(w http.ResponseWriter)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers[account] = f
}

func (p *poolUpstream) handler(w http.ResponseWriter, r *http.Request) {
	a := accountOf(r)
	p.mu.Lock()
	p.calls = append(p.calls, a)
	f := p.answers[a]
	p.mu.Unlock()
	if f == nil {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"account":%q,"usage":{"prompt_tokens":11,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":3}}}`, a)
		return
	}
	f(w)
}

func (p *poolUpstream) takeCalls() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

func status(code int, hdr ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"upstream %d","code":"x"}}`, code)
	}
}

type poolEnv struct {
	*env
	accts *fakeAccounts
	up    *poolUpstream
	tr    *pool.Tracker
	reg   *prometheus.Registry
}

// newPoolEnv is a handler with a pool of alice, bob and carol (key pool),
// alice alone (key alice) and every account (key all); opts change its
// configuration before it is built.
func newPoolEnv(t *testing.T, opts ...func(*Config)) *poolEnv {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	exp := clk.Now().Add(30 * time.Minute)
	accts := &fakeAccounts{srcs: map[string]*fakeSource{}, all: []string{"alice", "bob", "carol"}}
	for _, n := range accts.all {
		accts.srcs[n] = &fakeSource{tok: acctToken(n, 1, exp)}
	}
	pu := &poolUpstream{answers: map[string]func(http.ResponseWriter){}}
	up := newUpstream(t, pu.handler)
	ks, err := keys.Parse(strings.NewReader("pool:" + poolKey + "\nalice:" + aliceKey + "\nall:" + allKey + "\ndefault:" + defaultKy + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(up.srv.URL)
	tr := NewTransport(TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	reg := prometheus.NewRegistry()
	tracker := pool.New(pool.Config{Clock: clk})
	cfg := Config{
		Source: &fakeSource{tok: acctToken("default", 1, exp)}, DefaultAccount: "default",
		Keys: ks, APIURL: u, Clock: clk, Transport: tr,
		Accounts: accts,
		Targets: map[string]Target{
			"pool":  {Accounts: []string{"alice", "bob", "carol"}},
			"alice": {Accounts: []string{"alice"}},
			"all":   {All: true},
		},
		Pool: tracker, Metrics: NewMetrics(reg), Usage: usage.NewMetrics(reg),
	}
	for _, o := range opts {
		o(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := httptest.NewServer(h)
	t.Cleanup(p.Close)
	return &poolEnv{env: &env{up: up, proxy: p, clk: clk, handler: h}, accts: accts, up: pu, tr: tracker, reg: reg}
}

func (e *poolEnv) post(t *testing.T, key, path, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.proxy.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func conv(n int) string {
	return fmt.Sprintf(`{"model":"gpt-4.1","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"conversation %d"},{"role":"assistant","content":"ok"},{"role":"user","content":"more"}]}`, n)
}

func TestPoolFailsOverOnEachMemberOnce(t *testing.T) {
	e := newPoolEnv(t)
	e.up.set("alice", status(429, "Retry-After", "20"))
	e.up.set("bob", status(402, "X-Quota-Snapshot-Chat", "ent=50&rem=0&rst=2026-01-01T06%3A00%3A00Z&ovPerm=false"))
	// Every conversation is answered by carol; alice and bob are each
	// called at most once, after which they are out (no request tries
	// them again), and no request goes to a member twice.
	var all []string
	for i := range 12 {
		resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(i))
		if resp.StatusCode != 200 || !strings.Contains(body, `"account":"carol"`) {
			t.Fatalf("conversation %d with alice 429 and bob 402 = %d %s; want 200 from carol", i, resp.StatusCode, body)
		}
		calls := e.up.takeCalls()
		if len(calls) > 3 || calls[len(calls)-1] != "carol" || hasDup(calls) {
			t.Fatalf("conversation %d: upstream calls %v; want each member at most once, ending with carol", i, calls)
		}
		all = append(all, calls...)
	}
	if count(all, "alice") != 1 || count(all, "bob") != 1 {
		t.Fatalf("upstream calls over 12 conversations %v; want alice and bob once each", all)
	}
	// carol fails too: the proxy answers 429 with the soonest recovery
	// (alice's 20 s), in the client's dialect.
	e.up.set("carol", status(429, "Retry-After", "60"))
	resp, body := e.post(t, poolKey, "/v1/messages", `{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "20" || !strings.Contains(body, `"type":"error"`) || !strings.Contains(body, "rate_limit_error") {
		t.Fatalf("every member out = %d Retry-After %q %s; want 429 after 20 s in Anthropic's shape", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if calls := e.up.takeCalls(); len(calls) != 1 || calls[0] != "carol" {
		t.Fatalf("upstream calls %v; want only carol (the others were out)", calls)
	}
	// Now nothing is usable: answered without going upstream.
	resp, body = e.post(t, poolKey, "/v1/chat/completions", conv(1))
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "20" || !strings.Contains(body, `"code":"rate_limit_exceeded"`) {
		t.Fatalf("pool all out = %d Retry-After %q %s; want 429 after 20 s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if calls := e.up.takeCalls(); len(calls) != 0 {
		t.Fatalf("upstream calls %v; want none", calls)
	}
	// alice's cool-down ends: she serves again.
	e.up.set("alice", nil)
	e.clk.Advance(20 * time.Second)
	if resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(1)); resp.StatusCode != 200 || !strings.Contains(body, "alice") {
		t.Fatalf("after alice's cool-down = %d %s; want 200 from alice", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(e.handler.metrics.failovers.WithLabelValues("pool", "retried")); got != 2 {
		t.Errorf("failovers retried = %v; want 2", got)
	}
	if got := testutil.ToFloat64(e.handler.metrics.accountErrors.WithLabelValues("bob", "quota_spent")); got != 1 {
		t.Errorf("bob quota_spent errors = %v; want 1", got)
	}
}

func hasDup(s []string) bool {
	seen := map[string]bool{}
	for _, v := range s {
		if seen[v] {
			return true
		}
		seen[v] = true
	}
	return false
}

func TestPoolWithoutTokensAnswers503(t *testing.T) {
	e := newPoolEnv(t)
	for _, n := range []string{"alice", "bob", "carol"} {
		e.accts.srcs[n].mu.Lock()
		e.accts.srcs[n].tok, e.accts.srcs[n].err = nil, fmt.Errorf("%w: REJECTED", ErrNoToken)
		e.accts.srcs[n].mu.Unlock()
	}
	resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(1))
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" || !strings.Contains(body, "no_token: 3") {
		t.Fatalf("pool without tokens = %d Retry-After %q %s; want 503 after 5 s naming the reason", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// One member back: served.
	e.accts.srcs["bob"].mu.Lock()
	e.accts.srcs["bob"].tok, e.accts.srcs["bob"].err = acctToken("bob", 2, e.clk.Now().Add(time.Hour)), nil
	e.accts.srcs["bob"].mu.Unlock()
	if resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(1)); resp.StatusCode != 200 || !strings.Contains(body, "bob") {
		t.Fatalf("with bob back = %d %s; want 200 from bob", resp.StatusCode, body)
	}
}

func TestPerPersonKeySeesItsOwnErrors(t *testing.T) {
	e := newPoolEnv(t)
	e.up.set("alice", status(429, "Retry-After", "9"))
	resp, body := e.post(t, aliceKey, "/v1/chat/completions", conv(1))
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "9" || !strings.Contains(body, "upstream 429") {
		t.Fatalf("alice's key with alice rate limited = %d %q %s; want the upstream's 429", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if calls := e.up.takeCalls(); len(calls) != 1 || calls[0] != "alice" {
		t.Fatalf("upstream calls %v; want alice once", calls)
	}
	// The cool-down counts for pools, and alice's key still goes upstream.
	resp, _ = e.post(t, aliceKey, "/v1/chat/completions", conv(1))
	if resp.StatusCode != 429 || len(e.up.takeCalls()) != 1 {
		t.Fatal("alice's key is not forwarded while alice cools down")
	}
	for i := range 5 {
		if resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(i)); resp.StatusCode != 200 || strings.Contains(body, "alice") {
			t.Fatalf("pool while alice cools = %d %s; want another member", resp.StatusCode, body)
		}
	}
	// The default key uses the default source.
	if resp, body := e.post(t, defaultKy, "/v1/chat/completions", conv(1)); resp.StatusCode != 200 || !strings.Contains(body, `"default"`) {
		t.Fatalf("default key = %d %s; want 200 from the default account", resp.StatusCode, body)
	}
	// A single account without a token: 503 with its reason.
	e.accts.srcs["alice"].mu.Lock()
	e.accts.srcs["alice"].tok, e.accts.srcs["alice"].err = nil, fmt.Errorf("%w: the broker has no valid token (status REJECTED)", ErrNoToken)
	e.accts.srcs["alice"].mu.Unlock()
	if resp, body := e.post(t, aliceKey, "/v1/chat/completions", conv(1)); resp.StatusCode != 503 || !strings.Contains(body, "REJECTED") {
		t.Fatalf("alice's key without a token = %d %s; want 503 naming REJECTED", resp.StatusCode, body)
	}
}

func TestPoolRefusedTokenFailsOver(t *testing.T) {
	e := newPoolEnv(t)
	e.up.set("alice", status(401))
	e.up.set("bob", status(401))
	for i := range 6 {
		resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(i))
		if resp.StatusCode != 200 || !strings.Contains(body, "carol") {
			t.Fatalf("conversation %d with alice and bob refused = %d %s; want carol", i, resp.StatusCode, body)
		}
	}
	// Each refused member was tried (with one refresh) at most once overall.
	calls := e.up.takeCalls()
	for _, n := range []string{"alice", "bob"} {
		if c := count(calls, n); c > 2 {
			t.Errorf("%s called %d times; want at most 2 (the call and its retry after a refresh)", n, c)
		}
	}
	// A new token brings alice back.
	e.up.set("alice", nil)
	e.accts.srcs["alice"].mu.Lock()
	e.accts.srcs["alice"].tok = acctToken("alice", 2, e.clk.Now().Add(time.Hour))
	e.accts.srcs["alice"].mu.Unlock()
	got := map[string]bool{}
	for i := range 30 {
		_, body := e.post(t, poolKey, "/v1/chat/completions", conv(i))
		var a struct{ Account string }
		_ = json.Unmarshal([]byte(body), &a)
		got[a.Account] = true
	}
	if !got["alice"] || got["bob"] {
		t.Errorf("accounts serving after alice's new token: %v; want alice back, bob still out", got)
	}
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func TestPoolAffinity(t *testing.T) {
	e := newPoolEnv(t)
	first := map[int]string{}
	for round := range 3 {
		for i := range 12 {
			_, body := e.post(t, poolKey, "/v1/chat/completions", conv(i))
			var a struct{ Account string }
			if err := json.Unmarshal([]byte(body), &a); err != nil {
				t.Fatal(body)
			}
			if round == 0 {
				first[i] = a.Account
			} else if a.Account != first[i] {
				t.Fatalf("conversation %d went to %s, then %s", i, first[i], a.Account)
			}
		}
	}
	spread := map[string]bool{}
	for _, a := range first {
		spread[a] = true
	}
	if len(spread) < 2 {
		t.Errorf("12 conversations all went to %v; want them spread", spread)
	}
	// A longer history of the same conversation keeps its account.
	longer := strings.Replace(conv(3), `"content":"more"}`, `"content":"more"},{"role":"assistant","content":"x"},{"role":"user","content":"again"}`, 1)
	if _, body := e.post(t, poolKey, "/v1/chat/completions", longer); !strings.Contains(body, first[3]) {
		t.Errorf("conversation 3 with two more turns went to %s; want %s", body, first[3])
	}
}

func TestStarPoolFollowsNames(t *testing.T) {
	e := newPoolEnv(t)
	e.accts.mu.Lock()
	e.accts.all = []string{"carol"}
	e.accts.mu.Unlock()
	for i := range 5 {
		if _, body := e.post(t, allKey, "/v1/chat/completions", conv(i)); !strings.Contains(body, "carol") {
			t.Fatalf("* pool of carol = %s", body)
		}
	}
	e.accts.mu.Lock()
	e.accts.all = nil
	e.accts.mu.Unlock()
	if resp, _ := e.post(t, allKey, "/v1/chat/completions", conv(1)); resp.StatusCode != 503 {
		t.Fatalf("empty * pool = %d; want 503", resp.StatusCode)
	}
}

func TestNoFailoverAfterBytesSent(t *testing.T) {
	e := newPoolEnv(t)
	// alice starts a stream, then the upstream breaks it: the client has
	// bytes, so nothing is retried.
	for _, n := range []string{"alice", "bob", "carol"} {
		e.up.set(n, func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		})
	}
	resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(1))
	if resp.StatusCode != 200 || !strings.Contains(body, "hi") {
		t.Fatalf("broken stream = %d %q; want the 200 and the bytes sent", resp.StatusCode, body)
	}
	if calls := e.up.takeCalls(); len(calls) != 1 {
		t.Fatalf("upstream calls %v; want one: no retry once bytes went to the client", calls)
	}
}

func TestUsageCounted(t *testing.T) {
	e := newPoolEnv(t)
	for range 2 {
		if resp, body := e.post(t, aliceKey, "/v1/chat/completions", conv(1)); resp.StatusCode != 200 {
			t.Fatal(body)
		}
	}
	// An agent turn (last message from a tool) is not premium.
	agent := `{"model":"gpt-4.1","messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"c","content":"r"}]}`
	e.post(t, aliceKey, "/v1/chat/completions", agent)
	e.up.set("alice", status(500))
	e.post(t, aliceKey, "/v1/chat/completions", conv(1)) // not 2xx: not counted
	want := map[string]float64{
		`requests`: 3, `premium`: 2, `input`: 33, `output`: 15, `cached`: 9,
	}
	got := map[string]float64{
		"requests": gathered(t, e.reg, "copilot_proxy_usage_requests_total", "key", "alice", "account", "alice", "model", "gpt-4.1"),
		"premium":  gathered(t, e.reg, "copilot_proxy_usage_premium_requests_total", "key", "alice", "account", "alice", "model", "gpt-4.1"),
		"input":    gathered(t, e.reg, "copilot_proxy_usage_tokens_total", "key", "alice", "account", "alice", "model", "gpt-4.1", "type", "input"),
		"output":   gathered(t, e.reg, "copilot_proxy_usage_tokens_total", "key", "alice", "account", "alice", "model", "gpt-4.1", "type", "output"),
		"cached":   gathered(t, e.reg, "copilot_proxy_usage_tokens_total", "key", "alice", "account", "alice", "model", "gpt-4.1", "type", "cached"),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("usage %s = %v; want %v", k, got[k], v)
		}
	}
}

func TestQuotaHeadersUpdateTheTracker(t *testing.T) {
	e := newPoolEnv(t)
	e.up.set("alice", func(w http.ResponseWriter) {
		w.Header().Set("X-Quota-Snapshot-Premium_interactions", "ent=300&rem=0&rst=2026-02-01&ovPerm=false")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"account":"alice"}`)
	})
	e.post(t, aliceKey, "/v1/chat/completions", conv(1))
	var found bool
	for _, st := range e.tr.Statuses() {
		if st.Name == "alice" {
			found = st.Out == "quota_spent" && len(st.Quota) == 1 && st.Quota[0].Kind == "premium_interactions"
		}
	}
	if !found {
		t.Fatalf("tracker after alice's exhausted snapshot: %+v; want alice out, quota_spent", e.tr.Statuses())
	}
}

// gathered returns the counter name{labels...} of reg, 0 when absent.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// checkedSource is a fakeSource whose account the broker reports REJECTED
// while the client keeps its token.
type checkedSource struct {
	*fakeSource
	out error
}

func (c checkedSource) PoolReady() error { return c.out }

func TestPoolSkipsMembersTheBrokerRejected(t *testing.T) {
	e := newPoolEnv(t)
	e.accts.mu.Lock()
	alice := e.accts.srcs["alice"]
	e.accts.mu.Unlock()
	// Wrap alice: token held, but REJECTED at the broker.
	h := e.handler
	h.accounts = wrapAccounts{e.accts, map[string]TokenSource{"alice": checkedSource{alice, fmt.Errorf("REJECTED")}}}
	for i := range 10 {
		if resp, body := e.post(t, poolKey, "/v1/chat/completions", conv(i)); resp.StatusCode != http.StatusOK || strings.Contains(body, `"alice"`) {
			t.Fatalf("conversation %d = %d %s; want 200 from a member other than alice, REJECTED at the broker", i, resp.StatusCode, body)
		}
	}
	// Her own key still uses the token it holds (harden decides that).
	if resp, body := e.post(t, aliceKey, "/v1/chat/completions", conv(1)); resp.StatusCode != 200 || !strings.Contains(body, "alice") {
		t.Fatalf("alice's key = %d %s; want her held token used", resp.StatusCode, body)
	}
}

type wrapAccounts struct {
	*fakeAccounts
	over map[string]TokenSource
}

func (w wrapAccounts) Source(name string) TokenSource {
	if s := w.over[name]; s != nil {
		return s
	}
	return w.fakeAccounts.Source(name)
}

func TestPersonalLoadCountsForPools(t *testing.T) {
	e := newPoolEnv(t)
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	e.up.set("alice", func(w http.ResponseWriter) {
		started <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"account":"alice"}`)
	})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { e.post(t, aliceKey, "/v1/chat/completions", conv(1)) })
	}
	for range 3 {
		<-started
	}
	// alice has 3 requests in flight from her own key: a pool request
	// without a conversation goes to a less loaded member.
	resp, body := e.post(t, poolKey, "/v1/embeddings", `{"model":"e","input":"x"}`)
	close(release)
	wg.Wait()
	if resp.StatusCode != 200 || strings.Contains(body, "alice") {
		t.Fatalf("pool request while alice is busy = %d %s; want another member", resp.StatusCode, body)
	}
	// The handler ends each request just after its answer reached the
	// client: wait for the counts to settle.
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := ""
		for _, st := range e.tr.Statuses() {
			if st.InFlight != 0 {
				busy = fmt.Sprintf("%s in flight %d", st.Name, st.InFlight)
			}
		}
		if busy == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after every request ended; want 0", busy)
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}
