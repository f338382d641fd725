// Package console serves the team console: a few pages under /ui/ that
// show the broker's accounts, managed keys and usage in a browser, and let
// an admin create, edit and revoke keys.
//
// The console holds no state of the broker's own: its server side forwards
// the browser's calls to the broker's REST API in process (the handler the
// REST listener serves), with the signed-in broker key as the bearer, so
// the API's authentication and authorisation apply unchanged. What the
// console adds is the sign-in (a session cookie that stands for the key,
// which never reaches the page), CSRF protection on every change, a
// Content-Security-Policy without inline scripts, and a rate limit on
// failed sign-ins. The assets are embedded: nothing is fetched from the
// internet at run time.
//
// An admin key (issue 23: the keys file's fourth field) may do everything
// the API lets it. Any other valid broker key signs in read-only: it sees
// the overview of the accounts its key may read; the keys and usage pages
// say that they need an admin key (the API answers 403 to it).
package console

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/prometheus/client_golang/prometheus"
)

//go:embed assets
var assetFS embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// Defaults of [Config].
const (
	DefaultSessionTTL   = 12 * time.Hour
	DefaultMaxSessions  = 1024
	DefaultSignInLimit  = 5
	DefaultSignInWindow = time.Minute
)

// csp allows only the console's own scripts, styles and connections.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Config configures a console.
type Config struct {
	// API is the broker's REST API (required). The console calls it in
	// process with the signed-in key.
	API http.Handler
	// AuthEnabled says whether the broker checks keys. Without keys the
	// console refuses to sign anyone in: it would have nothing to check.
	AuthEnabled bool
	// TLS marks the session cookie Secure.
	TLS bool
	// ProxyURL is where users reach a proxy, shown in the lines a new key's
	// owner pastes (ANTHROPIC_BASE_URL, OPENAI_BASE_URL).
	ProxyURL string
	// Gatherer is the broker's metric registry, read for the overview's
	// watchers and token refresh failures; nil shows none.
	Gatherer prometheus.Gatherer
	// Registerer receives the console's own metrics; nil registers none.
	Registerer prometheus.Registerer

	SessionTTL   time.Duration // how long a session lasts; DefaultSessionTTL when 0
	MaxSessions  int           // sessions held at most (the oldest goes); DefaultMaxSessions when 0
	SignInLimit  int           // failed sign-ins per client address and window; DefaultSignInLimit when 0
	SignInWindow time.Duration // DefaultSignInWindow when 0

	Clock  clock.Clock
	Logger *slog.Logger
}

// Console is the console's HTTP handler.
type Console struct {
	cfg      Config
	clock    clock.Clock
	log      *slog.Logger
	sessions *sessions
	limiter  *limiter
	stats    *stats
	metrics  *metrics
	mux      *http.ServeMux
}

// New returns a console serving under [Prefix].
func New(cfg Config) (*Console, error) {
	if cfg.API == nil {
		return nil, errors.New("console: no API handler")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.SignInLimit <= 0 {
		cfg.SignInLimit = DefaultSignInLimit
	}
	if cfg.SignInWindow <= 0 {
		cfg.SignInWindow = DefaultSignInWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	clk := clock.OrReal(cfg.Clock)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Console{
		cfg: cfg, clock: clk, log: cfg.Logger, metrics: m,
		sessions: newSessions(clk, cfg.SessionTTL, cfg.MaxSessions, m),
		limiter:  newLimiter(clk, cfg.SignInLimit, cfg.SignInWindow, maxLimiterEntries),
		stats:    newStats(clk, cfg.Gatherer),
	}
	assets, err := fs.Sub(assetFS, "assets")
	if err != nil {
		return nil, err
	}
	files, err := assetHandler(assets)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", c.page)
	mux.Handle("GET /ui/assets/", http.StripPrefix("/ui/assets/", files))
	mux.HandleFunc("GET /ui/session", c.getSession)
	mux.HandleFunc("POST /ui/session", c.signIn)
	mux.HandleFunc("DELETE /ui/session", c.signOut)
	mux.HandleFunc("GET /ui/stats", c.getStats)
	mux.HandleFunc("/ui/api/", c.forward)
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such page")
	})
	c.mux = mux
	return c, nil
}

// ServeHTTP serves the console with its security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	b, err := assetFS.ReadFile("assets/index.html")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "page missing")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// assetType is the content type of a console file by its extension; ""
// for one the console does not ship.
func assetType(ext string) string {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return ""
}

// asset is one embedded file, ready to send.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// assetHandler serves the embedded scripts and styles; they change only
// with the binary, so a browser may revalidate them (ETag, 304). It serves
// whole files only: no Range requests, no directory listings (the
// standard file server would parse Range headers, which Go 1.26.8 bounds
// badly: GO-2026-6609).
func assetHandler(assets fs.FS) (http.Handler, error) {
	files := map[string]asset{}
	err := fs.WalkDir(assets, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(assets, p)
		if err != nil {
			return err
		}
		// The console's own types first: the system's MIME tables, which
		// package mime also reads, differ between machines.
		ctype := assetType(path.Ext(p))
		if ctype == "" {
			ctype = mime.TypeByExtension(path.Ext(p))
		}
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		files[p] = asset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", a.etag)
		if r.Header.Get("If-None-Match") == a.etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		h.Set("Content-Type", a.ctype)
		h.Set("Content-Length", strconv.Itoa(len(a.body)))
		_, _ = w.Write(a.body)
	}), nil
}

// sessionInfo is what the page learns about its session: never the key.
type sessionInfo struct {
	SignedIn  bool      `json:"signed_in"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin"`
	KeysAPI   bool      `json:"keys_api"`
	UsageAPI  bool      `json:"usage_api"`
	CSRF      string    `json:"csrf"`
	ExpiresAt time.Time `json:"expires_at"`
	ProxyURL  string    `json:"proxy_url"`
}

func (c *Console) info(s *session) sessionInfo {
	return sessionInfo{SignedIn: true, Name: s.name, Admin: s.admin, KeysAPI: s.keysAPI, UsageAPI: s.usageAPI, CSRF: s.csrf, ExpiresAt: s.expires, ProxyURL: c.cfg.ProxyURL}
}

func (c *Console) getSession(w http.ResponseWriter, r *http.Request) {
	s := c.sessions.fromRequest(r)
	if s == nil {
		// 200, not 401: a page that is not signed in yet is no error.
		writeJSON(w, http.StatusOK, sessionInfo{})
		return
	}
	writeJSON(w, http.StatusOK, c.info(s))
}

// maxSignInBody bounds a sign-in request.
const maxSignInBody = 4 << 10

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-site sign-in refused")
		return
	}
	addr := clientAddr(r)
	if ok, retry := c.limiter.allow(addr); !ok {
		c.metrics.signIn("limited")
		w.Header().Set("Retry-After", fmt.Sprint(int(retry.Seconds()+0.999)))
		writeError(w, http.StatusTooManyRequests, "too many failed sign-ins; try again later")
		return
	}
	if !c.cfg.AuthEnabled {
		writeError(w, http.StatusForbidden, "this broker has no keys file (--keys-file): the console needs an admin broker key to sign in")
		return
	}
	var in struct {
		Key string `json:"key"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, maxSignInBody)).Decode(&in); err != nil || strings.TrimSpace(in.Key) == "" {
		writeError(w, http.StatusBadRequest, "send {\"key\": \"<broker key>\"}")
		return
	}
	key := secret.New(strings.TrimSpace(in.Key))
	role, err := c.probe(r.Context(), key)
	if errors.Is(err, errRefused) {
		c.limiter.failed(addr)
		c.metrics.signIn("refused")
		c.log.Warn("console sign-in refused", "remote", addr)
		writeError(w, http.StatusUnauthorized, "the broker does not know this key")
		return
	}
	if err != nil {
		c.log.Error("console sign-in", "error", err)
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	s, err := c.sessions.create(key, role)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	c.metrics.signIn("ok")
	c.log.Info("console sign-in", "key", role.name, "admin", role.admin, "remote", addr)
	http.SetCookie(w, c.cookie(s.id, s.expires))
	writeJSON(w, http.StatusOK, c.info(s))
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	s := c.sessions.fromRequest(r)
	if s == nil || !s.csrfOK(r) {
		writeError(w, http.StatusForbidden, "missing or wrong CSRF token")
		return
	}
	c.sessions.remove(s.id)
	http.SetCookie(w, c.cookie("", time.Unix(1, 0)))
	w.WriteHeader(http.StatusNoContent)
}

// cookie is the session cookie: HttpOnly, SameSite=Strict, Secure under
// TLS, scoped to the console's path.
func (c *Console) cookie(value string, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name: cookieName, Value: value, Path: "/ui/", Expires: expires,
		MaxAge:   max(int(expires.Sub(c.clock.Now()).Seconds()), -1),
		HttpOnly: true, Secure: c.cfg.TLS, SameSite: http.SameSiteStrictMode,
	}
}

// role is what a key may do in the console.
type role struct {
	name     string
	admin    bool
	keysAPI  bool // the broker serves /v1/keys
	usageAPI bool // the broker serves /v1/usage (its usage ledger)
}

var errRefused = errors.New("key refused")

// probe asks the API what key may do: any authenticated call proves the
// key; GET /v1/keys answers 200 to an admin key and 403 to the others (404
// on a broker without managed keys); GET /v1/usage, 404 on a broker without
// a usage ledger.
func (c *Console) probe(ctx context.Context, key secret.Secret) (role, error) {
	code, _ := c.call(ctx, key, http.MethodGet, "/v1/accounts")
	switch code {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return role{}, errRefused
	default:
		return role{}, fmt.Errorf("console: the broker answered GET /v1/accounts with %d", code)
	}
	r := role{name: "broker key"}
	switch code, _ := c.call(ctx, key, http.MethodGet, "/v1/keys"); code {
	case http.StatusOK:
		r.admin, r.keysAPI = true, true
	case http.StatusForbidden:
		r.keysAPI = true
	}
	if r.admin {
		day := c.clock.Now().UTC().Format(time.DateOnly)
		code, _ := c.call(ctx, key, http.MethodGet, "/v1/usage?from="+day+"&to="+day)
		r.usageAPI = code != http.StatusNotFound && code != http.StatusNotImplemented
	}
	return r, nil
}

// call runs one request against the API in process.
func (c *Console) call(ctx context.Context, key secret.Secret, method, path string) (int, []byte) {
	req := httptest.NewRequestWithContext(ctx, method, path, nil)
	req.Header.Set("Authorization", "Bearer "+key.Reveal())
	rec := httptest.NewRecorder()
	c.cfg.API.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// forwardable are the API routes the console calls: never /v1/token (the
// Copilot token is a secret the page must not see). Changes are for keys.
func forwardable(method, path string) bool {
	switch {
	case method == http.MethodGet && (path == "/v1/accounts" || path == "/v1/accounts:watch" ||
		path == "/v1/keys" || path == "/v1/keys:watch" || path == "/v1/usage" || path == "/v1/budgets"):
		return true
	case method == http.MethodPost && path == "/v1/keys":
		return true
	case (method == http.MethodPatch || method == http.MethodDelete) && strings.HasPrefix(path, "/v1/keys/") &&
		!strings.Contains(path[len("/v1/keys/"):], "/"):
		return true
	}
	return false
}

// maxForwardBody bounds a change's body.
const maxForwardBody = 64 << 10

// forward passes a call of the page to the API with the session's key.
func (c *Console) forward(w http.ResponseWriter, r *http.Request) {
	s := c.sessions.fromRequest(r)
	if s == nil {
		writeError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/ui/api")
	if !forwardable(r.Method, path) {
		writeError(w, http.StatusNotFound, "the console does not forward "+r.Method+" "+path)
		return
	}
	if r.Method != http.MethodGet && (!s.csrfOK(r) || !sameOrigin(r)) {
		c.metrics.csrfRefused()
		writeError(w, http.StatusForbidden, "missing or wrong CSRF token")
		return
	}
	out := r.Clone(r.Context())
	out.URL.Path, out.URL.RawPath, out.RequestURI = path, "", ""
	out.Header = http.Header{}
	out.Header.Set("Authorization", "Bearer "+s.key.Reveal())
	for _, h := range []string{"Accept", "Content-Type"} {
		if v := r.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	// A download link cannot set Accept: ?format=csv asks for the CSV.
	if q := out.URL.Query(); q.Get("format") == "csv" {
		q.Del("format")
		out.URL.RawQuery = q.Encode()
		out.Header.Set("Accept", "text/csv")
		w.Header().Set("Content-Disposition", `attachment; filename="usage.csv"`)
	}
	if r.Body != nil {
		out.Body = http.MaxBytesReader(w, r.Body, maxForwardBody)
	}
	w.Header().Set("Cache-Control", "no-store")
	c.cfg.API.ServeHTTP(w, out)
}

func (c *Console) getStats(w http.ResponseWriter, r *http.Request) {
	if c.sessions.fromRequest(r) == nil {
		writeError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	st, err := c.stats.read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// sameOrigin refuses a change a browser sent from another site: with
// Sec-Fetch-Site (every current browser) or Origin, when present, naming
// this host.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		o = strings.TrimPrefix(strings.TrimPrefix(o, "https://"), "http://")
		return o == r.Host
	}
	return true
}

// clientAddr is the address failed sign-ins are counted by.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers in the REST API's error shape.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}
