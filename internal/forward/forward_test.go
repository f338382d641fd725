package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testKey  = "client-key-0123456789"
	testKey2 = "other-key-0123456789"
)

// fakeSource is a TokenSource under the test's control.
type fakeSource struct {
	mu        sync.Mutex
	tok       *Token
	err       error
	next      *Token // what Refresh installs and returns; nil: no newer token
	refreshed []uint64
}

func (f *fakeSource) Token() (*Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tok, f.err
}

func (f *fakeSource) Refresh(_ context.Context, rejected *Token) (*Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshed = append(f.refreshed, rejected.Generation)
	if f.next == nil {
		return rejected, nil
	}
	f.tok, f.next = f.next, nil
	return f.tok, nil
}

func (f *fakeSource) refreshes() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.refreshed...)
}

func tokenGen(gen uint64, expires time.Time) *Token {
	return &Token{Value: secret.New(fmt.Sprintf("tid=t%d;exp=1:sig", gen)), Generation: gen, Epoch: "e1", ExpiresAt: expires, APIBaseURL: "https://api.githubcopilot.com"}
}

// seen is one request as the fake upstream received it.
type seen struct {
	path   string
	query  string
	header http.Header
	body   string
}

type upstream struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []seen
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, seen{r.URL.Path, r.URL.RawQuery, r.Header.Clone(), string(b)})
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.got...)
}

type env struct {
	src     *fakeSource
	up      *upstream
	proxy   *httptest.Server
	clk     *clock.Fake
	handler *Handler
}

func newEnv(t *testing.T, h http.HandlerFunc, mod func(*Config)) *env {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	src := &fakeSource{tok: tokenGen(1, clk.Now().Add(30*time.Minute))}
	up := newUpstream(t, h)
	ks, err := keys.Parse(strings.NewReader("alice:" + testKey + "\nbob:" + testKey2 + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(up.srv.URL)
	tr := NewTransport(TransportConfig{})
	t.Cleanup(tr.CloseIdleConnections)
	cfg := Config{Source: src, Keys: ks, APIURL: u, Clock: clk, Transport: tr}
	if mod != nil {
		mod(&cfg)
	}
	h2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := httptest.NewServer(h2)
	t.Cleanup(p.Close)
	return &env{src: src, up: up, proxy: p, clk: clk, handler: h2}
}

func (e *env) do(t *testing.T, method, path, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	return e.send(t, method, path, rb, hdr)
}

// doPastWait POSTs body to path, and once the handler waits on the fake
// clock (for room in the body budget), moves the clock on by wait.
func (e *env) doPastWait(t *testing.T, path, body string, wait time.Duration) (*http.Response, string) {
	t.Helper()
	pending := e.clk.Pending()
	type answer struct {
		resp *http.Response
		body string
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		req, err := http.NewRequest("POST", e.proxy.URL+path, strings.NewReader(body))
		if err != nil {
			done <- answer{err: err}
			return
		}
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := e.proxy.Client().Do(req)
		if err != nil {
			done <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- answer{resp, string(b), err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.clk.WaitForTimers(ctx, pending+1); err != nil {
		t.Fatalf("POST %s: the handler did not wait on the clock: %v", path, err)
	}
	e.clk.Advance(wait)
	a := <-done
	if a.err != nil {
		t.Fatalf("POST %s: %v", path, a.err)
	}
	return a.resp, a.body
}

// send is do with a body of the caller's (an io.NopCloser hides its length,
// so the client sends it chunked).
func (e *env) send(t *testing.T, method, path string, rb io.Reader, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.proxy.URL+path, rb)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.proxy.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestRoutes(t *testing.T) {
	// count_tokens forwarded here; answered locally by default (counttokens_test.go).
	e := newEnv(t, nil, func(c *Config) { c.CountTokens = CountTokensUpstream })
	tests := []struct {
		method, path, want string
	}{
		{"POST", "/v1/chat/completions", "/chat/completions"},
		{"POST", "/chat/completions", "/chat/completions"},
		{"GET", "/v1/models", "/models"},
		{"GET", "/models", "/models"},
		{"POST", "/v1/embeddings", "/embeddings"},
		{"POST", "/embeddings", "/embeddings"},
		{"POST", "/v1/responses", "/responses"},
		{"POST", "/responses", "/responses"},
		{"POST", "/v1/messages", "/v1/messages"},
		{"POST", "/messages", "/v1/messages"},
		{"POST", "/v1/messages/count_tokens", "/v1/messages/count_tokens"},
		{"POST", "/messages/count_tokens", "/v1/messages/count_tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			n := len(e.up.requests())
			body := ""
			if tt.method == "POST" {
				body = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
			}
			resp, _ := e.do(t, tt.method, tt.path+"?x=1", body, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s = %d; want 200", tt.method, tt.path, resp.StatusCode)
			}
			got := e.up.requests()[n]
			if got.path != tt.want || got.query != "x=1" || got.body != body {
				t.Errorf("upstream got %s?%s body %q; want %s?x=1 body %q", got.path, got.query, got.body, tt.want, body)
			}
		})
	}
}

func TestLocalErrors(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.MaxBodyBytes = 64 })
	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 100) + `"}]}`
	tests := []struct {
		name, method, path, body string
		hdr                      map[string]string
		wantStatus               int
		wantAnthropic            bool
		wantType                 string
	}{
		{"unknown path", "GET", "/v1/nope", "", nil, 404, false, "invalid_request_error"},
		{"unknown anthropic path", "GET", "/v1/messages/batches", "", nil, 404, true, "not_found_error"},
		{"wrong method", "GET", "/v1/chat/completions", "", nil, 405, false, "invalid_request_error"},
		{"wrong method anthropic", "GET", "/v1/messages", "", nil, 405, true, "invalid_request_error"},
		{"no key openai", "POST", "/v1/chat/completions", "{}", map[string]string{"Authorization": ""}, 401, false, "invalid_request_error"},
		{"wrong key openai", "POST", "/v1/chat/completions", "{}", map[string]string{"Authorization": "Bearer wrong-key-0123456789"}, 401, false, "invalid_request_error"},
		{"no key anthropic", "POST", "/v1/messages", "{}", map[string]string{"Authorization": ""}, 401, true, "authentication_error"},
		{"wrong x-api-key anthropic", "POST", "/v1/messages", "{}", map[string]string{"Authorization": "", "X-Api-Key": "nope"}, 401, true, "authentication_error"},
		{"too large", "POST", "/v1/chat/completions", big, nil, 413, false, "invalid_request_error"},
		{"too large anthropic", "POST", "/v1/messages", big, nil, 413, true, "request_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := len(e.up.requests())
			resp, body := e.do(t, tt.method, tt.path, tt.body, tt.hdr)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s %s = %d %s; want %d", tt.method, tt.path, resp.StatusCode, body, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
			checkDialect(t, body, tt.wantAnthropic, tt.wantType)
			if len(e.up.requests()) != n {
				t.Errorf("the upstream was called; want no call")
			}
		})
	}
}

func checkDialect(t *testing.T, body string, anthropic bool, wantType string) {
	t.Helper()
	if anthropic {
		var a struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil || a.Type != "error" || a.Error.Type != wantType || a.Error.Message == "" {
			t.Errorf("body = %s; want Anthropic error of type %s", body, wantType)
		}
		return
	}
	var o struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal([]byte(body), &o); err != nil || o.Error.Type != wantType || o.Error.Message == "" || o.Error.Code == "" {
		t.Errorf("body = %s; want OpenAI error of type %s with a code", body, wantType)
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestCopilotHeaders(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.Editor.Version = "vscode/9.9.9" })
	hdr := map[string]string{
		"Cookie":                 "session=secret",
		"Proxy-Authorization":    "Basic " + testKey,
		"Connection":             "X-Client-Secret, keep-alive",
		"X-Client-Secret":        testKey,
		"Copilot-Vision-Request": "true",
		"X-Initiator":            "user",
		"X-Request-Id":           "client-chosen",
		"Anthropic-Version":      "2023-06-01",
	}
	body := `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"1"}]}]}`
	resp1, _ := e.do(t, "POST", "/v1/chat/completions", body, hdr)
	resp2, _ := e.do(t, "POST", "/v1/messages", body, map[string]string{"Authorization": "", "X-Api-Key": testKey2})
	got := e.up.requests()
	want := map[string]string{
		"Authorization":          "Bearer " + e.src.tok.Value.Reveal(),
		"Copilot-Integration-Id": "vscode-chat",
		"Editor-Version":         "vscode/9.9.9",
		"Editor-Plugin-Version":  identity.DefaultEditorPluginVersion,
		"User-Agent":             identity.DefaultUserAgent,
		"Openai-Intent":          "conversation-agent",
		"X-Interaction-Type":     "conversation-agent",
		"X-Github-Api-Version":   identity.DefaultAPIVersion,
		"X-Initiator":            "agent",
	}
	for k, v := range want {
		if g := got[0].header.Get(k); g != v {
			t.Errorf("upstream %s = %q; want %q", k, g, v)
		}
	}
	if id := got[0].header.Get("X-Request-Id"); id == "" || got[0].header.Get("X-Agent-Task-Id") != id {
		t.Errorf("X-Agent-Task-Id = %q; want the request id %q", got[0].header.Get("X-Agent-Task-Id"), id)
	}
	for _, k := range []string{"Cookie", "Copilot-Vision-Request", "X-Api-Key", "X-Forwarded-For", "Proxy-Authorization", "X-Client-Secret", "Forwarded", "Anthropic-Version"} {
		for i := range got {
			if v, ok := got[i].header[k]; ok {
				t.Errorf("request %d: upstream %s = %q; want absent", i, k, v)
			}
		}
	}
	for _, s := range []string{testKey, testKey2} {
		for i := range got {
			if strings.Contains(fmt.Sprint(got[i].header), s) {
				t.Errorf("request %d: the client's key reached the upstream", i)
			}
		}
	}
	id1, id2 := got[0].header.Get("X-Request-Id"), got[1].header.Get("X-Request-Id")
	if !uuidV4.MatchString(id1) || !uuidV4.MatchString(id2) || id1 == id2 {
		t.Errorf("X-Request-Id = %q, %q; want two distinct UUIDv4", id1, id2)
	}
	if resp1.Header.Get("X-Request-Id") != id1 || resp2.Header.Get("X-Request-Id") != id2 {
		t.Errorf("client saw X-Request-Id %q, %q; want %q, %q", resp1.Header.Get("X-Request-Id"), resp2.Header.Get("X-Request-Id"), id1, id2)
	}
}

func TestTokenUnavailable(t *testing.T) {
	e := newEnv(t, nil, nil)
	e.src.mu.Lock()
	e.src.err = fmt.Errorf("%w: broker unreachable: connection refused", ErrNoToken)
	e.src.mu.Unlock()
	resp, body := e.do(t, "POST", "/v1/messages", `{}`, nil)
	if resp.StatusCode != 503 || !strings.Contains(body, "broker unreachable") {
		t.Errorf("POST /v1/messages = %d %s; want 503 naming the cause", resp.StatusCode, body)
	}
	checkDialect(t, body, true, "api_error")

	// A source that hands out an expired token is overruled.
	e.src.mu.Lock()
	e.src.err = nil
	e.src.mu.Unlock()
	e.clk.Advance(31 * time.Minute)
	resp, body = e.do(t, "POST", "/v1/chat/completions", `{}`, nil)
	if resp.StatusCode != 503 || !strings.Contains(body, "expired") {
		t.Errorf("POST /v1/chat/completions = %d %s; want 503 saying the token expired", resp.StatusCode, body)
	}
	checkDialect(t, body, false, "server_error")

	// Nor is a token whose expiry is unknown.
	e.src.mu.Lock()
	e.src.tok = tokenGen(2, time.Time{})
	e.src.mu.Unlock()
	resp, body = e.do(t, "GET", "/v1/models", "", nil)
	if resp.StatusCode != 503 || !strings.Contains(body, "no expiry") {
		t.Errorf("GET /v1/models with a token without expiry = %d %s; want 503", resp.StatusCode, body)
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("upstream calls = %d; want 0", n)
	}
}

func TestBaseURLFromToken(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.APIURL = nil })
	e.src.mu.Lock()
	e.src.tok.APIBaseURL = "https://evil.example.com"
	e.src.mu.Unlock()
	resp, body := e.do(t, "GET", "/v1/models", "", nil)
	if resp.StatusCode != 503 || !strings.Contains(body, "githubcopilot.com") {
		t.Errorf("GET /v1/models with a foreign api_base_url = %d %s; want 503 naming the rule", resp.StatusCode, body)
	}
}

// TestBaseURLAllowList checks that Config.AllowedAPIHosts reaches the
// handler: a ghe.com api_base_url is refused by default and used once
// allowed.
func TestBaseURLAllowList(t *testing.T) {
	for _, tt := range []struct {
		allowed  []string
		wantHost string // "": refused with 503
	}{
		{nil, ""},
		{[]string{".githubcopilot.com", ".ghe.com"}, "copilot-api.acme.ghe.com"},
		{[]string{"copilot-api.acme.ghe.com"}, "copilot-api.acme.ghe.com"},
	} {
		var mu sync.Mutex
		var hosts []string
		e := newEnv(t, nil, func(c *Config) {
			c.APIURL, c.AllowedAPIHosts = nil, tt.allowed
			c.Transport = roundTripFunc(func(r *http.Request) (*http.Response, error) {
				mu.Lock()
				hosts = append(hosts, r.URL.Scheme+"://"+r.URL.Host)
				mu.Unlock()
				return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
					Body: io.NopCloser(strings.NewReader(`{"data":[]}`)), Request: r}, nil
			})
		})
		e.src.mu.Lock()
		e.src.tok.APIBaseURL = "https://copilot-api.acme.ghe.com"
		e.src.mu.Unlock()
		resp, body := e.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[]}`, nil)
		mu.Lock()
		got := slices.Clone(hosts)
		mu.Unlock()
		switch {
		case tt.wantHost == "" && (resp.StatusCode != 503 || !strings.Contains(body, "githubcopilot.com") || len(got) != 0):
			t.Errorf("allowed %q: POST = %d %s, upstream %q; want 503 naming the rule, no upstream call", tt.allowed, resp.StatusCode, body, got)
		case tt.wantHost != "" && (resp.StatusCode != 200 || !slices.Contains(got, "https://"+tt.wantHost)):
			t.Errorf("allowed %q: POST = %d %s, upstream %q; want 200 from https://%s", tt.allowed, resp.StatusCode, body, got, tt.wantHost)
		}
	}
}

func TestValidateBaseURL(t *testing.T) {
	tests := []struct {
		in      string
		want    string   // "" means refused
		allowed []string // nil: the default
	}{
		{in: "https://copilot-api.acme.ghe.com", want: ""},
		{"https://copilot-api.acme.ghe.com", "https://copilot-api.acme.ghe.com", []string{".githubcopilot.com", ".ghe.com"}},
		{"https://copilot-api.acme.ghe.com/", "https://copilot-api.acme.ghe.com", []string{"copilot-api.acme.ghe.com"}},
		{"https://COPILOT-API.acme.ghe.com", "https://COPILOT-API.acme.ghe.com", []string{" Copilot-API.ACME.ghe.com "}},
		{"https://copilot-api.other.ghe.com", "", []string{"copilot-api.acme.ghe.com"}},
		{"https://x.copilot-api.acme.ghe.com", "", []string{"copilot-api.acme.ghe.com"}},
		{"https://ghe.com", "", []string{".ghe.com"}},
		{"https://evil-ghe.com", "", []string{".ghe.com"}},
		{"https://api.githubcopilot.com", "", []string{".ghe.com"}},
		{"https://api.githubcopilot.com", "", []string{}},
		{"https://api.githubcopilot.com", "", []string{"", "."}},
		{"http://copilot-api.acme.ghe.com", "", []string{".ghe.com"}},
		{"https://copilot-api.acme.ghe.com:8443", "", []string{".ghe.com"}},
		{"https://u:p@copilot-api.acme.ghe.com", "", []string{".ghe.com"}},
		{"https://copilot-api.acme.ghe.com/../x", "", []string{".ghe.com"}},
		{"https://evil-githubcopilot.com", "", []string{".githubcopilot.com", ".ghe.com"}},
		{"https://githubcopilot.com.evil.net", "", []string{".githubcopilot.com", ".ghe.com"}},
		{in: "https://evil-githubcopilot.com"},
		{in: "https://githubcopilot.com.evil.net"},
		{"https://api.githubcopilot.com", "https://api.githubcopilot.com", nil},
		{"https://api.business.githubcopilot.com/", "https://api.business.githubcopilot.com", nil},
		{"https://API.Enterprise.GithubCopilot.com:443", "https://API.Enterprise.GithubCopilot.com:443", nil},
		{in: "http://api.githubcopilot.com"},
		{in: "https://githubcopilot.com"},
		{in: "https://.githubcopilot.com"},
		{in: "https://api.githubcopilot.com.evil.com"},
		{in: "https://evilgithubcopilot.com"},
		{in: "https://user:pw@api.githubcopilot.com"},
		{in: "https://api.githubcopilot.com:8443"},
		{in: "https://api.githubcopilot.com?x=1"},
		{in: "://bad"},
		{in: "https://api.githubcopilot.com:"},
		{in: "https://api.githubcopilot.com:0443"},
		{in: "https://api.githubcopilot.com?"},
		{in: "https://api.githubcopilot.com#frag"},
		{"https://api.githubcopilot.com/v2", "https://api.githubcopilot.com/v2", nil},
		{in: "https://api.githubcopilot.com/../x"},
		{in: "https://api.githubcopilot.com/a/./b"},
		{in: "https://api.githubcopilot.com/%2e%2e/x"},
		{in: "https://api.githubcopilot.com/a%2Fb"},
		{in: "https://api.githubcopilot.com//evil.com"},
		{in: "https://evil.com%2F@x.githubcopilot.com"},
		{in: "https://evil.com%2f.githubcopilot.com"},
		{in: "https://api.githubcopilot.com\\@evil.com"},
		{in: "https://api.githubcopilot.com."},
		{in: "ftp://api.githubcopilot.com"},
		{in: "http://user:hunter2@evil.com:8080/x"},
	}
	for _, tt := range tests {
		u, err := ValidateBaseURL(tt.in, tt.allowed)
		got := ""
		if err == nil {
			got = u.String()
		} else if !errors.Is(err, ErrBadBaseURL) {
			t.Errorf("ValidateBaseURL(%q) error = %v; want ErrBadBaseURL", tt.in, err)
		}
		if got != tt.want {
			t.Errorf("ValidateBaseURL(%q, %q) = %q, %v; want %q", tt.in, tt.allowed, got, err, tt.want)
		}
		if err != nil && (strings.Contains(err.Error(), "evil.com%2F@") || strings.Contains(err.Error(), "hunter2")) {
			t.Errorf("ValidateBaseURL(%q) error %q repeats the user info", tt.in, err)
		}
	}
}

func TestRetryAfter401(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer "+tokenGen(1, time.Time{}).Value.Reveal() {
			http.Error(w, `{"error":"expired"}`, http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}, nil)
	e.src.mu.Lock()
	e.src.next = tokenGen(2, e.clk.Now().Add(time.Hour))
	e.src.mu.Unlock()
	body := `{"messages":[{"role":"user","content":"hello"}]}`
	resp, _ := e.do(t, "POST", "/v1/chat/completions", body, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d; want 200 after one retry", resp.StatusCode)
	}
	if diff := cmp.Diff([]uint64{1}, e.src.refreshes()); diff != "" {
		t.Errorf("Refresh calls (-want +got):\n%s", diff)
	}
	got := e.up.requests()
	if len(got) != 2 || got[1].body != body || got[0].header.Get("X-Request-Id") != got[1].header.Get("X-Request-Id") {
		t.Errorf("upstream saw %d requests; want 2 with the same body and request id", len(got))
	}

	// No newer token: the 401 passes through after one refresh attempt.
	e.src.mu.Lock()
	e.src.tok = tokenGen(1, e.clk.Now().Add(time.Hour))
	e.src.mu.Unlock()
	resp, _ = e.do(t, "GET", "/v1/models", "", nil)
	if resp.StatusCode != 401 || len(e.src.refreshes()) != 2 || len(e.up.requests()) != 3 {
		t.Errorf("status = %d, refreshes %v, upstream calls %d; want 401, 2, 3", resp.StatusCode, e.src.refreshes(), len(e.up.requests()))
	}

	// A newer token that has already expired is never sent: the 401 passes
	// through without a retry.
	e.src.mu.Lock()
	e.src.tok = tokenGen(1, e.clk.Now().Add(time.Hour))
	e.src.next = tokenGen(3, e.clk.Now())
	e.src.mu.Unlock()
	resp, _ = e.do(t, "GET", "/v1/models", "", nil)
	if resp.StatusCode != 401 || len(e.src.refreshes()) != 3 || len(e.up.requests()) != 4 {
		t.Errorf("status = %d, refreshes %v, upstream calls %d; want 401, 3, 4 (no retry with an expired token)", resp.StatusCode, e.src.refreshes(), len(e.up.requests()))
	}
}

func TestRateLimitPassedThrough(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "17")
		http.Error(w, `{"error":{"message":"rate limited"}}`, http.StatusTooManyRequests)
	}, nil)
	resp, body := e.do(t, "POST", "/v1/chat/completions", `{}`, nil)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "17" || !strings.Contains(body, "rate limited") {
		t.Errorf("status = %d, Retry-After %q, body %q; want the upstream's 429", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if n := len(e.up.requests()); n != 1 || len(e.src.refreshes()) != 0 {
		t.Errorf("upstream calls = %d, refreshes %d; want 1, 0", n, len(e.src.refreshes()))
	}
}

func TestStreamingIsNotBuffered(t *testing.T) {
	step := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-step: // the client got this event before the next is written
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}, nil)
	req, _ := http.NewRequest("POST", e.proxy.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := e.proxy.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: {\"n\":%d}\n", i) {
			t.Fatalf("event %d = %q, %v; want it before the upstream writes the next", i, line, err)
		}
		_, _ = br.ReadString('\n')
		step <- struct{}{}
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "data: [DONE]\n\n" {
		t.Errorf("tail = %q; want the [DONE] event", rest)
	}
}

func TestClientLeavingCancelsUpstream(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
		close(cancelled)
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.proxy.URL+"/v1/messages", strings.NewReader(`{"stream":true}`))
	req.Header.Set("X-Api-Key", testKey)
	resp, err := e.proxy.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not cancelled after the client left")
	}
}

// TestBodyLimits: the size limit holds for bodies of unknown length
// (chunked), and a GET's body never goes upstream (it would bypass the limit).
func TestBodyLimits(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.MaxBodyBytes = 1000 })
	post := func(method, path string, body io.Reader) (*http.Response, string) {
		t.Helper()
		return e.send(t, method, path, body, nil)
	}
	// io.NopCloser hides the length: the client sends the body chunked.
	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}`
	resp, body := post("POST", "/v1/chat/completions", io.NopCloser(strings.NewReader(big)))
	if resp.StatusCode != 413 {
		t.Errorf("chunked %d-byte body = %d %s; want 413", len(big), resp.StatusCode, body)
	}
	if n := len(e.up.requests()); n != 0 {
		t.Errorf("upstream calls after an oversized chunked body = %d; want 0", n)
	}
	small := `{"messages":[{"role":"user","content":"hi"}]}`
	if resp, body := post("POST", "/v1/chat/completions", io.NopCloser(strings.NewReader(small))); resp.StatusCode != 200 {
		t.Fatalf("chunked small body = %d %s; want 200", resp.StatusCode, body)
	}
	if got := e.up.requests()[0]; got.body != small || got.header.Get("Content-Length") != "" && got.header.Get("Content-Length") != fmt.Sprint(len(small)) {
		t.Errorf("upstream got body %q; want %q", got.body, small)
	}
	// A GET body within the limit is dropped, over it refused; several in a
	// row on one keep-alive connection, which a body left unread would break.
	for range 5 {
		for _, r := range []io.Reader{strings.NewReader(small), io.NopCloser(strings.NewReader(small))} {
			if resp, body := post("GET", "/v1/models", r); resp.StatusCode != 200 {
				t.Fatalf("GET /v1/models with a small body = %d %s; want 200", resp.StatusCode, body)
			}
			got := e.up.requests()
			if last := got[len(got)-1]; last.body != "" || last.path != "/models" {
				t.Errorf("upstream got %s with a %d-byte body; want /models without one", last.path, len(last.body))
			}
		}
		n := len(e.up.requests())
		for _, r := range []io.Reader{strings.NewReader(big), io.NopCloser(strings.NewReader(big))} {
			if resp, body := post("GET", "/v1/models", r); resp.StatusCode != 413 {
				t.Fatalf("GET /v1/models with a %d-byte body = %d %s; want 413", len(big), resp.StatusCode, body)
			}
		}
		if len(e.up.requests()) != n {
			t.Errorf("an oversized GET body went upstream; want it stopped")
		}
	}
}

// TestNoSmuggling sends a request with both Transfer-Encoding and
// Content-Length: the upstream must see the one chunked body, framed by a
// Content-Length of its own, and nothing hidden after it as a second request.
func TestNoSmuggling(t *testing.T) {
	e := newEnv(t, nil, nil)
	body := `{"messages":[{"role":"user","content":"hi"}]}`
	smuggled := "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
	raw := "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer " + testKey + "\r\n" +
		"Content-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body) + smuggled
	c, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := e.up.requests()
	switch resp.StatusCode {
	case 400: // refused outright: fine, as long as nothing went upstream
		if len(got) != 0 {
			t.Errorf("upstream saw %d requests after a 400; want 0", len(got))
		}
	case 200:
		if len(got) != 1 || got[0].body != body || got[0].header.Get("Content-Length") != fmt.Sprint(len(body)) {
			t.Errorf("upstream saw %+v; want exactly one request with the chunked body and its own Content-Length", got)
		}
	default:
		t.Errorf("status = %d; want 200 or 400", resp.StatusCode)
	}
}

func TestNoAuthWhenNoKeys(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.Keys = nil })
	resp, _ := e.do(t, "GET", "/v1/models", "", map[string]string{"Authorization": ""})
	if resp.StatusCode != 200 {
		t.Errorf("GET /v1/models without keys configured = %d; want 200", resp.StatusCode)
	}
	if got := e.up.requests()[0].header.Get("X-Initiator"); got != "" {
		t.Errorf("X-Initiator on GET /models = %q; want none", got)
	}
}

// TestBaseURLsCachedPerURL checks that tokens of several accounts, each
// with its own api_base_url, get their own validated URL, each parsed once,
// and that a refused URL stays refused.
func TestBaseURLsCachedPerURL(t *testing.T) {
	h, err := New(Config{Source: &fakeSource{}, AllowedAPIHosts: []string{".githubcopilot.com"}})
	if err != nil {
		t.Fatal(err)
	}
	toks := []*Token{
		{APIBaseURL: "https://api.githubcopilot.com"},
		{APIBaseURL: "https://api.business.githubcopilot.com"},
		{APIBaseURL: "https://evil.example.com"},
	}
	for round := range 3 {
		for i, tok := range toks {
			next := *tok // a new token (generation) of the same account
			u, err := h.baseURL(&next)
			if i < 2 && (err != nil || "https://"+u.Host != tok.APIBaseURL) {
				t.Errorf("round %d: baseURL(%s) = %v, %v; want it, validated", round, tok.APIBaseURL, u, err)
			}
			if i == 2 && err == nil {
				t.Errorf("round %d: baseURL(%s) = %v; want it refused", round, tok.APIBaseURL, u)
			}
		}
	}
	if n := len(*h.bases.Load()); n != len(toks) {
		t.Errorf("%d cached validations; want one per URL (%d)", n, len(toks))
	}
}

// TestQueryStringCleaned: the client's query string reaches the upstream
// re-encoded, without raw bytes or unparsable pairs (issue 22: it went
// upstream verbatim, raw 0xff bytes included).
func TestQueryStringCleaned(t *testing.T) {
	e := newEnv(t, nil, nil)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	for _, c := range []struct{ raw, want string }{
		{"beta=true", "beta=true"},
		{"a=\xff&beta=true", "a=%FF&beta=true"},
		{"x=%zz&beta=true", "beta=true"},
		{"", ""},
	} {
		req, err := http.NewRequest("POST", e.proxy.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.URL.RawQuery = c.raw
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := e.up.requests()
		if q := got[len(got)-1].query; resp.StatusCode != 200 || q != c.want {
			t.Errorf("query %q: %d, upstream got %q; want 200, %q", c.raw, resp.StatusCode, q, c.want)
		}
	}
}
