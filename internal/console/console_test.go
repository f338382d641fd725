package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	adminKey  = "admin-secret-0123456789"
	proxyKey  = "proxy-secret-0123456789"
	unknownIP = "192.0.2.7:5555"
)

// fakeAPI answers like the broker's REST API: adminKey may do everything,
// proxyKey may read accounts, other keys get 401. It records what reached it.
type fakeAPI struct {
	got []string // method path auth accept
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.got = append(f.got, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Authorization")+" "+r.Header.Get("Accept"))
	switch r.Header.Get("Authorization") {
	case "Bearer " + adminKey:
	case "Bearer " + proxyKey:
		if strings.HasPrefix(r.URL.Path, "/v1/keys") || r.URL.Path == "/v1/usage" {
			http.Error(w, `{"code":7}`, http.StatusForbidden)
			return
		}
	default:
		http.Error(w, `{"code":16}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func newTest(t *testing.T, clk clock.Clock) (*Console, *fakeAPI, *prometheus.Registry) {
	t.Helper()
	api := &fakeAPI{}
	reg := prometheus.NewRegistry()
	c, err := New(Config{API: api, AuthEnabled: true, Clock: clk, Registerer: reg, Gatherer: reg, SessionTTL: time.Hour, SignInLimit: 3})
	if err != nil {
		t.Fatal(err)
	}
	return c, api, reg
}

func serve(c http.Handler, method, path, body string, mod func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = unknownIP
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, r)
	return w
}

// signIn signs in with key and returns the cookie and the CSRF token.
func signIn(t *testing.T, c http.Handler, key string) (*http.Cookie, string) {
	t.Helper()
	w := serve(c, "POST", "/ui/session", `{"key":"`+key+`"}`, nil)
	if w.Code != 200 {
		t.Fatalf("sign-in = %d %s", w.Code, w.Body)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 {
		t.Fatalf("sign-in set %d cookies", len(cookies))
	}
	body := w.Body.String()
	i := strings.Index(body, `"csrf":"`)
	csrf := body[i+8:]
	return cookies[0], csrf[:strings.IndexByte(csrf, '"')]
}

func TestSignInCookieAndSession(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	c, _, _ := newTest(t, clk)
	w := serve(c, "POST", "/ui/session", `{"key":"`+adminKey+`"}`, nil)
	if w.Code != 200 {
		t.Fatalf("sign-in = %d %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), adminKey) {
		t.Errorf("the sign-in answer shows the key: %s", w.Body)
	}
	if !strings.Contains(w.Body.String(), `"admin":true`) {
		t.Errorf("an admin key's session is not admin: %s", w.Body)
	}
	ck := w.Result().Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" || ck.Secure || ck.MaxAge != 3600 {
		t.Errorf("cookie = %+v; want HttpOnly, SameSite=Strict, path /ui/, not Secure without TLS, 1 h", ck)
	}
	if w.Header().Get("Content-Security-Policy") == "" || strings.Contains(w.Header().Get("Content-Security-Policy"), "unsafe-inline") {
		t.Errorf("CSP = %q", w.Header().Get("Content-Security-Policy"))
	}
	withCookie := func(r *http.Request) { r.AddCookie(ck) }
	if w := serve(c, "GET", "/ui/session", "", withCookie); w.Code != 200 {
		t.Errorf("GET /ui/session with the cookie = %d", w.Code)
	}
	clk.Advance(time.Hour)
	if w := serve(c, "GET", "/ui/session", "", withCookie); w.Code != 200 || !strings.Contains(w.Body.String(), `"signed_in":false`) {
		t.Errorf("GET /ui/session after the session's hour = %d %s; want signed out", w.Code, w.Body)
	}
}

func TestSecureCookieUnderTLS(t *testing.T) {
	c, err := New(Config{API: &fakeAPI{}, AuthEnabled: true, TLS: true})
	if err != nil {
		t.Fatal(err)
	}
	ck, _ := signIn(t, c, adminKey)
	if !ck.Secure {
		t.Errorf("cookie under TLS = %+v; want Secure", ck)
	}
}

func TestReadOnlyKey(t *testing.T) {
	c, _, _ := newTest(t, nil)
	w := serve(c, "POST", "/ui/session", `{"key":"`+proxyKey+`"}`, nil)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"admin":false`) || !strings.Contains(w.Body.String(), `"keys_api":true`) {
		t.Errorf("a proxy key's sign-in = %d %s; want a read-only session", w.Code, w.Body)
	}
}

func TestSignInRefusedAndLimited(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	c, _, reg := newTest(t, clk)
	for i := range 3 {
		if w := serve(c, "POST", "/ui/session", `{"key":"wrong"}`, nil); w.Code != 401 || len(w.Result().Cookies()) != 0 {
			t.Fatalf("wrong key, try %d = %d (cookies %v); want 401 and no cookie", i, w.Code, w.Result().Cookies())
		}
	}
	w := serve(c, "POST", "/ui/session", `{"key":"`+adminKey+`"}`, nil)
	if w.Code != 429 || w.Header().Get("Retry-After") != "60" {
		t.Errorf("after 3 failures even the right key = %d (Retry-After %q); want 429, 60", w.Code, w.Header().Get("Retry-After"))
	}
	other := serve(c, "POST", "/ui/session", `{"key":"`+adminKey+`"}`, func(r *http.Request) { r.RemoteAddr = "192.0.2.8:1" })
	if other.Code != 200 {
		t.Errorf("another address = %d; want 200", other.Code)
	}
	clk.Advance(time.Minute)
	if w := serve(c, "POST", "/ui/session", `{"key":"`+adminKey+`"}`, nil); w.Code != 200 {
		t.Errorf("after the window = %d; want 200", w.Code)
	}
	if got := testutil.ToFloat64(c.metrics.signIns.WithLabelValues("limited")); got != 1 {
		t.Errorf("limited sign-ins = %v; want 1", got)
	}
	_ = reg
}

func TestLimiterBound(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	l := newLimiter(clk, 1, time.Minute, 2)
	l.failed("a")
	l.failed("b")
	l.failed("c") // not held: full
	if ok, _ := l.allow("c"); ok {
		t.Error("a new address with the table full is allowed; want refused")
	}
	clk.Advance(time.Minute)
	if ok, _ := l.allow("c"); !ok {
		t.Error("after the windows ended a new address is refused")
	}
}

func TestForwardCSRFAndAllowList(t *testing.T) {
	c, api, _ := newTest(t, nil)
	ck, csrf := signIn(t, c, adminKey)
	tests := []struct {
		name, method, path string
		csrf               string
		origin             string
		want               int
		reached            string
	}{
		{"read accounts", "GET", "/ui/api/v1/accounts", "", "", 200, "GET /v1/accounts Bearer " + adminKey},
		{"read budgets", "GET", "/ui/api/v1/budgets?key=alice", "", "", 200, "GET /v1/budgets?key=alice Bearer " + adminKey},
		{"budgets are not set through the console", "POST", "/ui/api/v1/budgets", csrf, "", 404, ""},
		{"token is never forwarded", "GET", "/ui/api/v1/token", "", "", 404, ""},
		{"token watch neither", "GET", "/ui/api/v1/token:watch", "", "", 404, ""},
		{"create without csrf", "POST", "/ui/api/v1/keys", "", "", 403, ""},
		{"create with a wrong csrf", "POST", "/ui/api/v1/keys", "nope", "", 403, ""},
		{"create cross-site", "POST", "/ui/api/v1/keys", csrf, "http://evil.example", 403, ""},
		{"create", "POST", "/ui/api/v1/keys", csrf, "http://example.com", 200, "POST /v1/keys Bearer " + adminKey},
		{"revoke", "DELETE", "/ui/api/v1/keys/alice", csrf, "", 200, "DELETE /v1/keys/alice Bearer " + adminKey},
		{"nested path", "DELETE", "/ui/api/v1/keys/a/b", csrf, "", 404, ""},
		{"csv", "GET", "/ui/api/v1/usage?from=2026-12-01&format=csv", "", "", 200, "GET /v1/usage?from=2026-12-01 Bearer " + adminKey + " text/csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api.got = nil
			w := serve(c, tt.method, tt.path, `{}`, func(r *http.Request) {
				r.AddCookie(ck)
				if tt.csrf != "" {
					r.Header.Set(csrfHeader, tt.csrf)
				}
				if tt.origin != "" {
					r.Header.Set("Origin", tt.origin)
				}
			})
			if w.Code != tt.want {
				t.Errorf("%s %s = %d %s; want %d", tt.method, tt.path, w.Code, w.Body, tt.want)
			}
			if tt.reached == "" && len(api.got) != 0 {
				t.Errorf("reached the API: %v", api.got)
			}
			if tt.reached != "" && (len(api.got) != 1 || strings.TrimSpace(api.got[0]) != tt.reached) {
				t.Errorf("the API got %q; want %q", api.got, tt.reached)
			}
		})
	}
	if w := serve(c, "GET", "/ui/api/v1/accounts", "", nil); w.Code != 401 {
		t.Errorf("without a session = %d; want 401", w.Code)
	}
}

func TestNoAuthRefusesSignIn(t *testing.T) {
	c, err := New(Config{API: &fakeAPI{}})
	if err != nil {
		t.Fatal(err)
	}
	if w := serve(c, "POST", "/ui/session", `{"key":"`+adminKey+`"}`, nil); w.Code != 403 {
		t.Errorf("sign-in on a broker without keys = %d; want 403", w.Code)
	}
}

func TestSessionsBound(t *testing.T) {
	c, err := New(Config{API: &fakeAPI{}, AuthEnabled: true, MaxSessions: 2})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := signIn(t, c, adminKey)
	signIn(t, c, adminKey)
	signIn(t, c, adminKey)
	if got := testutil.ToFloat64(c.metrics.sessions); got != 2 {
		t.Errorf("sessions = %v; want 2", got)
	}
	if w := serve(c, "GET", "/ui/session", "", func(r *http.Request) { r.AddCookie(first) }); !strings.Contains(w.Body.String(), `"signed_in":false`) {
		t.Errorf("the oldest session after a third = %d; want 401 (evicted)", w.Code)
	}
}

func TestAssetsServed(t *testing.T) {
	c, _, _ := newTest(t, nil)
	for _, p := range []string{"/ui/", "/ui/assets/app.js", "/ui/assets/style.css"} {
		w := serve(c, "GET", p, "", nil)
		if w.Code != 200 || w.Body.Len() == 0 {
			t.Errorf("GET %s = %d", p, w.Code)
		}
	}
	tests := []struct {
		name, path string
		hdr        map[string]string
		code       int
		ctype      string
	}{
		{"script", "/ui/assets/app.js", nil, 200, "text/javascript; charset=utf-8"},
		{"style", "/ui/assets/style.css", nil, 200, "text/css; charset=utf-8"},
		{"unknown", "/ui/assets/nope.js", nil, 404, ""},
		{"directory", "/ui/assets/", nil, 404, ""},
		{"range is ignored", "/ui/assets/app.js", map[string]string{"Range": "bytes=0-1,2-3,4-5"}, 200, "text/javascript; charset=utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serve(c, "GET", tt.path, "", func(r *http.Request) {
				for k, v := range tt.hdr {
					r.Header.Set(k, v)
				}
			})
			if w.Code != tt.code {
				t.Fatalf("GET %s = %d; want %d", tt.path, w.Code, tt.code)
			}
			if tt.ctype != "" && w.Header().Get("Content-Type") != tt.ctype {
				t.Errorf("GET %s: Content-Type %q; want %q", tt.path, w.Header().Get("Content-Type"), tt.ctype)
			}
		})
	}
	etag := serve(c, "GET", "/ui/assets/app.js", "", nil).Header().Get("ETag")
	if etag == "" {
		t.Fatal("app.js has no ETag")
	}
	if w := serve(c, "GET", "/ui/assets/app.js", "", func(r *http.Request) { r.Header.Set("If-None-Match", etag) }); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("revalidation with the ETag = %d, %d bytes; want 304 and no body", w.Code, w.Body.Len())
	}
	page := serve(c, "GET", "/ui/", "", nil).Body.String()
	if strings.Contains(page, "<script>") || strings.Contains(page, " style=") || strings.Contains(page, "http://") && !strings.Contains(page, "w3.org") {
		t.Errorf("the page has an inline script, an inline style or an external URL")
	}
}

func TestStatsWindow(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	reg := prometheus.NewRegistry()
	refreshes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "copilot_broker_token_refreshes_total", Help: "h"}, []string{"account", "result"})
	reg.MustRegister(refreshes)
	refreshes.WithLabelValues("a", "error").Add(5)
	st := newStats(clk, reg)
	if got, _ := st.read(); len(got.RefreshErrors) != 0 {
		t.Errorf("first read = %v; want nothing (its own baseline)", got.RefreshErrors)
	}
	for range 70 {
		clk.Advance(time.Minute)
		refreshes.WithLabelValues("a", "error").Inc()
		if _, err := st.read(); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := st.read()
	if got.RefreshErrors["error"] != 60 || clk.Now().Sub(got.Since) != time.Hour {
		t.Errorf("after 70 minutes of one error a minute = %v since %s; want 60 over the last hour", got.RefreshErrors, got.Since)
	}
	if len(st.samples) > 62 {
		t.Errorf("%d samples held; want at most 62", len(st.samples))
	}
}
