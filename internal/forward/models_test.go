package forward

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/catalog"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// upstreamModels is a /models answer shaped like the Copilot API's in 2026.
const upstreamModels = `{"data":[
{"id":"gpt-4.1","name":"GPT-4.1","vendor":"Azure OpenAI","object":"model","supported_endpoints":["/chat/completions"],"capabilities":{"type":"chat","supports":{"streaming":true}},"billing":{"is_premium":false,"multiplier":0},"x_future":{"kept":true}},
{"id":"gpt-5.2-codex","name":"GPT-5.2-Codex","vendor":"OpenAI","object":"model","supported_endpoints":["/responses"]},
{"id":"claude-sonnet-4.5","name":"Claude Sonnet 4.5","vendor":"Anthropic","object":"model","supported_endpoints":["/v1/messages"]},
{"id":"claude-opus-4.1","name":"Claude Opus 4.1","vendor":"Anthropic","object":"model","supported_endpoints":["/v1/messages"]},
{"id":"text-embedding-3-small","name":"Embedding V3 small","object":"model"}
],"object":"list"}`

// modelsEnv is an env whose upstream serves upstreamModels on /models
// (counting the calls) and {"ok":true} elsewhere, with the catalog on and
// the given alias file content.
func modelsEnv(t *testing.T, aliases string, modelsStatus int) (*env, *prometheus.Registry, func() int) {
	t.Helper()
	var mu sync.Mutex
	calls := 0
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/models" {
			mu.Lock()
			calls++
			mu.Unlock()
			w.WriteHeader(modelsStatus)
			fmt.Fprint(w, upstreamModels)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}, func(c *Config) {
		c.Metrics = NewMetrics(reg)
		c.CountTokens = CountTokensUpstream // the catalog checks count_tokens against /v1/messages
		mc := &ModelsConfig{}
		if aliases != "" {
			path := filepath.Join(t.TempDir(), "aliases")
			if err := os.WriteFile(path, []byte(aliases), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := catalog.OpenAliasFile(catalog.AliasFileConfig{Path: path, Metrics: c.Metrics.Catalog()})
			if err != nil {
				t.Fatal(err)
			}
			mc.Aliases = f
		}
		c.Models = mc
	})
	t.Cleanup(e.handler.Close)
	return e, reg, func() int { mu.Lock(); defer mu.Unlock(); return calls }
}

func TestModelNamesResolvedAndRewritten(t *testing.T) {
	e, reg, modelsCalls := modelsEnv(t, "fast: gpt-4.1\nsmart: claude-opus-4-1-20250805\nembed: text-embedding-3-small\n", 200)
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, path, body string
		wantBody         string // what reaches the upstream; "" when the proxy answers
		wantStatus       int
		wantErr          string
	}{
		{"exact id: untouched", "/v1/chat/completions",
			`{"model":"gpt-4.1",` + msgs + `}`, `{"model":"gpt-4.1",` + msgs + `}`, 200, ""},
		{"dated Claude name: only the value changes", "/v1/messages",
			"{\"max_tokens\": 64,\n  \"model\" :\t\"claude-sonnet-4-5-20250929\" , " + msgs + `,"metadata":{"model":"keep"}}`,
			"{\"max_tokens\": 64,\n  \"model\" :\t\"claude-sonnet-4.5\" , " + msgs + `,"metadata":{"model":"keep"}}`, 200, ""},
		{"Claude Code's default", "/v1/messages",
			`{"model":"claude-opus-4-1",` + msgs + `}`, `{"model":"claude-opus-4.1",` + msgs + `}`, 200, ""},
		{"alias", "/v1/chat/completions",
			`{` + msgs + `,"model":"fast","stream":true}`, `{` + msgs + `,"model":"gpt-4.1","stream":true}`, 200, ""},
		{"alias to a client name", "/v1/messages",
			`{"model":"smart",` + msgs + `}`, `{"model":"claude-opus-4.1",` + msgs + `}`, 200, ""},
		{"repeated keys: refused (issue 21: never routed as one and counted as another)", "/v1/messages",
			`{"model":"x","MODEL":"claude-sonnet-4-5",` + msgs + `}`, "", 400,
			`{"type":"error","error":{"type":"invalid_request_error","message":"the request body names \"model\" more than once (keys match case-insensitively); send it once"}}`},
		{"escaped exact id: untouched", "/v1/chat/completions",
			`{"model":"gpt-4\u002e1",` + msgs + `}`, `{"model":"gpt-4\u002e1",` + msgs + `}`, 200, ""},
		{"unknown model: forwarded as sent", "/v1/chat/completions",
			`{"model":"gpt-0",` + msgs + `}`, `{"model":"gpt-0",` + msgs + `}`, 200, ""},
		{"no model", "/v1/chat/completions", `{` + msgs + `}`, `{` + msgs + `}`, 200, ""},
		{"model not a string", "/v1/chat/completions", `{"model":5,` + msgs + `}`, `{"model":5,` + msgs + `}`, 200, ""},
		{"embeddings alias", "/v1/embeddings", `{"input":"x","model":"embed"}`, `{"input":"x","model":"text-embedding-3-small"}`, 200, ""},
		{"count_tokens checks the Messages API", "/v1/messages/count_tokens",
			`{"model":"claude-sonnet-4-5-20250929",` + msgs + `}`, `{"model":"claude-sonnet-4.5",` + msgs + `}`, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.up.requests())
			resp, body := e.do(t, "POST", tt.path, tt.body, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("POST %s = %d %s; want %d", tt.path, resp.StatusCode, body, tt.wantStatus)
			}
			var got []seen
			for _, s := range e.up.requests()[before:] {
				if s.path != "/models" {
					got = append(got, s)
				}
			}
			if tt.wantBody == "" {
				if len(got) != 0 {
					t.Errorf("the upstream got %v; want nothing", got)
				}
				if strings.TrimSpace(body) != tt.wantErr {
					t.Errorf("error body\n%s\nwant\n%s", body, tt.wantErr)
				}
				return
			}
			if len(got) != 1 || got[0].body != tt.wantBody {
				t.Fatalf("upstream bodies %v; want exactly\n%s", got, tt.wantBody)
			}
			if got[0].header.Get("Content-Length") != "" && got[0].header.Get("Content-Length") != fmt.Sprint(len(tt.wantBody)) {
				t.Errorf("Content-Length %s; want %d", got[0].header.Get("Content-Length"), len(tt.wantBody))
			}
		})
	}
	if n := modelsCalls(); n != 1 {
		t.Errorf("/models fetched %d times; want once", n)
	}
	if err := promtest.GatherAndCompare(reg, strings.NewReader(`
# HELP copilot_proxy_model_resolutions_total Request model names resolved, by rule: exact (a catalog id), builtin (a client's name for one), alias (the alias file), unknown (sent as it is), none (no model named).
# TYPE copilot_proxy_model_resolutions_total counter
copilot_proxy_model_resolutions_total{rule="alias"} 3
copilot_proxy_model_resolutions_total{rule="builtin"} 3
copilot_proxy_model_resolutions_total{rule="exact"} 2
copilot_proxy_model_resolutions_total{rule="none"} 2
copilot_proxy_model_resolutions_total{rule="unknown"} 1
`), "copilot_proxy_model_resolutions_total"); err != nil {
		t.Error(err)
	}
	if err := promtest.GatherAndCompare(reg, strings.NewReader(`
# HELP copilot_proxy_model_routes_total Requests naming a model, by routing decision: pass (the model serves the endpoint), unsupported (translated to an endpoint the model has, or refused when none fits), unknown (not in the catalog, forwarded), no_catalog (forwarded unchecked).
# TYPE copilot_proxy_model_routes_total counter
copilot_proxy_model_routes_total{decision="no_catalog"} 0
copilot_proxy_model_routes_total{decision="pass"} 8
copilot_proxy_model_routes_total{decision="unknown"} 1
copilot_proxy_model_routes_total{decision="unsupported"} 0
`), "copilot_proxy_model_routes_total"); err != nil {
		t.Error(err)
	}
}

func TestModelsFetchedWithCopilotHeaders(t *testing.T) {
	e, _, _ := modelsEnv(t, "", 200)
	e.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[]}`, nil)
	var fetch *seen
	for _, s := range e.up.requests() {
		if s.path == "/models" {
			fetch = &s
		}
	}
	if fetch == nil {
		t.Fatal("no /models request upstream")
	}
	want := map[string]string{
		"Authorization": "Bearer " + e.src.tok.Value.Reveal(), "Openai-Intent": "model-access",
		"Copilot-Integration-Id": "vscode-chat", "Editor-Version": identity.DefaultEditorVersion,
		"X-Github-Api-Version": identity.DefaultAPIVersion,
	}
	for k, v := range want {
		if g := fetch.header.Get(k); g != v {
			t.Errorf("/models %s = %q; want %q", k, g, v)
		}
	}
	if !uuidV4.MatchString(fetch.header.Get("X-Request-Id")) {
		t.Errorf("/models X-Request-Id = %q; want a UUID", fetch.header.Get("X-Request-Id"))
	}
}

func TestModelsSingleFlightThroughTheHandler(t *testing.T) {
	e, _, modelsCalls := modelsEnv(t, "", 200)
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			resp, body := e.do(t, "POST", "/v1/messages", `{"model":"claude-sonnet-4-5-20250929","messages":[]}`, nil)
			if resp.StatusCode != 200 {
				t.Errorf("status %d %s", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if n := modelsCalls(); n != 1 {
		t.Errorf("100 concurrent first requests: %d /models calls; want 1", n)
	}
	for _, s := range e.up.requests() {
		if s.path == "/v1/messages" && !strings.Contains(s.body, `"claude-sonnet-4.5"`) {
			t.Errorf("upstream body %s; want the resolved name", s.body)
		}
	}
}

func TestNoCatalogForwardsAsSent(t *testing.T) {
	e, _, modelsCalls := modelsEnv(t, "", 500)
	body := `{"model":"claude-sonnet-4-5-20250929","messages":[]}`
	resp, _ := e.do(t, "POST", "/v1/chat/completions", body, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d; want the upstream's 200", resp.StatusCode)
	}
	reqs := e.up.requests()
	if last := reqs[len(reqs)-1]; last.path != "/chat/completions" || last.body != body {
		t.Errorf("upstream got %s %s; want the body as sent", last.path, last.body)
	}
	// The list falls back to the upstream's.
	resp, got := e.do(t, "GET", "/v1/models", "", nil)
	if resp.StatusCode != 500 || modelsCalls() != 2 {
		t.Errorf("GET /v1/models = %d after %d /models calls; want the upstream's 500 after 2 (the catalog's, then the forwarded one): %s", resp.StatusCode, modelsCalls(), got)
	}
	resp, got = e.do(t, "GET", "/v1/models/gpt-4.1", "", nil)
	if resp.StatusCode != 503 || !strings.Contains(got, "model catalog is not available") {
		t.Errorf("GET /v1/models/gpt-4.1 = %d %s; want 503 naming the catalog", resp.StatusCode, got)
	}
}

func TestModelListings(t *testing.T) {
	e, _, modelsCalls := modelsEnv(t, "fast: gpt-4.1\nclaude-opus-4-1: gpt-4.1\nnowhere: gpt-0\n", 200)
	anth := map[string]string{"Anthropic-Version": "2023-06-01"}

	resp, body := e.do(t, "GET", "/v1/models", "", nil)
	var list struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil || resp.StatusCode != 200 || list.Object != "list" {
		t.Fatalf("GET /v1/models = %d %s (%v)", resp.StatusCode, body, err)
	}
	if n := len(e.up.requests()); n != 1 || modelsCalls() != 1 {
		t.Errorf("upstream calls %d; want the one /models fetch", n)
	}
	// The upstream's entries pass as they came, then the alias in effect
	// (claude-opus-4-1 is a built-in name, nowhere has no catalog target).
	if !strings.Contains(body, `"x_future":{"kept":true}`) || !strings.Contains(body, `{"id":"gpt-4.1","name":"GPT-4.1","vendor":"Azure OpenAI"`) {
		t.Errorf("list lost the upstream's entry bytes: %s", body)
	}
	var ids []string
	for _, raw := range list.Data {
		var m struct {
			ID string `json:"id"`
		}
		json.Unmarshal(raw, &m)
		ids = append(ids, m.ID)
	}
	if diff := cmp.Diff([]string{"gpt-4.1", "gpt-5.2-codex", "claude-sonnet-4.5", "claude-opus-4.1", "text-embedding-3-small", "fast"}, ids); diff != "" {
		t.Errorf("listed ids (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(list.Data[5]), `"x_future":{"kept":true}`) {
		t.Errorf("alias entry %s; want the target's fields", list.Data[5])
	}

	// Anthropic's shape and paging.
	type page struct {
		Data []struct {
			Type, ID, DisplayName, CreatedAt string
		} `json:"data"`
		HasMore bool    `json:"has_more"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
	}
	var p page
	resp, body = e.do(t, "GET", "/v1/models?limit=4", "", anth)
	if err := json.Unmarshal([]byte(body), &p); err != nil || resp.StatusCode != 200 {
		t.Fatalf("Anthropic list = %d %s", resp.StatusCode, body)
	}
	if len(p.Data) != 4 || !p.HasMore || *p.FirstID != "gpt-4.1" || *p.LastID != "claude-opus-4.1" ||
		p.Data[2].Type != "model" || !strings.Contains(body, `"display_name":"Claude Sonnet 4.5","created_at":"2026-01-01T00:00:00Z"`) {
		t.Errorf("Anthropic page 1 = %s", body)
	}
	p = page{}
	_, body = e.do(t, "GET", "/v1/models?limit=4&after_id=claude-opus-4.1", "", anth)
	json.Unmarshal([]byte(body), &p)
	if len(p.Data) != 2 || p.HasMore || *p.FirstID != "text-embedding-3-small" || *p.LastID != "fast" {
		t.Errorf("Anthropic page 2 = %s", body)
	}
	p = page{}
	_, body = e.do(t, "GET", "/v1/models?limit=2&before_id=claude-sonnet-4.5", "", anth)
	json.Unmarshal([]byte(body), &p)
	if len(p.Data) != 2 || p.HasMore || *p.FirstID != "gpt-4.1" {
		t.Errorf("Anthropic before_id page = %s", body)
	}
	resp, body = e.do(t, "GET", "/v1/models?limit=0", "", anth)
	if resp.StatusCode != 400 || !strings.HasPrefix(body, `{"type":"error"`) {
		t.Errorf("limit=0 = %d %s; want an Anthropic 400", resp.StatusCode, body)
	}

	// One model, in either shape, under a client's name too.
	tests := []struct {
		path   string
		hdr    map[string]string
		status int
		want   string
	}{
		{"/v1/models/gpt-4.1", nil, 200, `{"id":"gpt-4.1","name":"GPT-4.1","vendor":"Azure OpenAI"`},
		{"/v1/models/fast", nil, 200, `"id":"fast"`},
		{"/models/claude-sonnet-4-5-20250929", anth, 200, `{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2026-01-01T00:00:00Z"}`},
		{"/v1/models/gpt-0", nil, 404, `"code":"not_found"`},
		{"/v1/models/nope", anth, 404, `{"type":"error","error":{"type":"not_found_error"`},
	}
	for _, tt := range tests {
		resp, body := e.do(t, "GET", tt.path, "", tt.hdr)
		if resp.StatusCode != tt.status || !strings.Contains(body, tt.want) || resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("GET %s = %d %s; want %d containing %s and an X-Request-Id", tt.path, resp.StatusCode, body, tt.status, tt.want)
		}
	}
	if n := modelsCalls(); n != 1 {
		t.Errorf("/models fetched %d times; want once", n)
	}
}

func TestModelRouteWithoutCatalog(t *testing.T) {
	e := newEnv(t, nil, nil)
	resp, body := e.do(t, "GET", "/v1/models/gpt-4.1", "", nil)
	if resp.StatusCode != 404 {
		t.Errorf("GET /v1/models/gpt-4.1 without a catalog = %d %s; want 404", resp.StatusCode, body)
	}
	resp, _ = e.do(t, "POST", "/v1/chat/completions", `{"model":"claude-sonnet-4-5-20250929"}`, nil)
	reqs := e.up.requests()
	if resp.StatusCode != 200 || len(reqs) != 1 || reqs[0].body != `{"model":"claude-sonnet-4-5-20250929"}` {
		t.Errorf("without a catalog: %d, upstream %v; want the body forwarded as sent", resp.StatusCode, reqs)
	}
}

// TestCatalogPerAccount: each account's catalog is fetched with its own
// token and decides for the requests of that account, pool members
// included.
func TestCatalogPerAccount(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	exp := clk.Now().Add(30 * time.Minute)
	accts := &fakeAccounts{srcs: map[string]*fakeSource{}, all: []string{"alice", "bob"}}
	for _, n := range accts.all {
		accts.srcs[n] = &fakeSource{tok: acctToken(n, 1, exp)}
	}
	var mu sync.Mutex
	fetched := map[string]int{}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		a := accountOf(r)
		if r.URL.Path == "/v1/messages" { // a translated call: a Messages answer
			fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4.5","content":[{"type":"text","text":"account %s"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}`, a)
			return
		}
		if r.URL.Path != "/models" {
			fmt.Fprintf(w, `{"account":%q}`, a)
			return
		}
		mu.Lock()
		fetched[a]++
		mu.Unlock()
		// alice has claude-sonnet-4.5 on /v1/messages only, bob on chat too.
		ends := `["/v1/messages"]`
		if a == "bob" {
			ends = `["/chat/completions","/v1/messages"]`
		}
		fmt.Fprintf(w, `{"data":[{"id":"claude-sonnet-4.5","supported_endpoints":%s}]}`, ends)
	})
	ks, err := keys.Parse(strings.NewReader("alice:" + aliceKey + "\nbob:" + testKey2 + "\npool:" + poolKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(up.srv.URL)
	tr := NewTransport(TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	h, err := New(Config{
		Source: &fakeSource{tok: acctToken("default", 1, exp)}, DefaultAccount: "default",
		Keys: ks, APIURL: u, Clock: clk, Transport: tr, Accounts: accts,
		Targets: map[string]Target{"alice": {Accounts: []string{"alice"}}, "bob": {Accounts: []string{"bob"}}, "pool": {Accounts: []string{"bob"}}},
		Pool:    pool.New(pool.Config{Clock: clk}), Models: &ModelsConfig{},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	p := httptest.NewServer(h)
	t.Cleanup(p.Close)
	e := &poolEnv{env: &env{up: up, proxy: p, clk: clk, handler: h}, accts: accts}
	body := `{"model":"claude-sonnet-4-5-20250929","messages":[{"role":"user","content":"hi"}]}`
	for _, tt := range []struct {
		key, want string
		status    int
	}{
		// alice's model lacks /chat/completions: translated to /v1/messages.
		{aliceKey, `"content":"account alice"`, 200},
		{testKey2, `"account":"bob"`, 200},
		{poolKey, `"account":"bob"`, 200},
	} {
		resp, got := e.post(t, tt.key, "/v1/chat/completions", body)
		if resp.StatusCode != tt.status || !strings.Contains(got, tt.want) {
			t.Errorf("key %s: %d %s; want %d containing %s", tt.key, resp.StatusCode, got, tt.status, tt.want)
		}
	}
	for _, s := range up.requests() {
		if s.path == "/chat/completions" && !strings.Contains(s.body, `"claude-sonnet-4.5"`) {
			t.Errorf("upstream body %s; want the resolved name", s.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fetched["alice"] != 1 || fetched["bob"] != 1 || len(fetched) != 2 {
		t.Errorf("/models fetched per account %v; want alice and bob once each", fetched)
	}
}
