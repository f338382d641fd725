package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/prometheus/client_golang/prometheus"
)

// cookieName is the session cookie's name.
const cookieName = "copilot_console"

// csrfHeader carries a session's CSRF token on every change.
const csrfHeader = "X-CSRF-Token"

// session is one signed-in browser. The key stays on the server.
type session struct {
	id         string
	csrf       string
	key        secret.Secret
	name       string
	admin      bool
	keysAPI    bool
	usageAPI   bool
	proxiesAPI bool
	expires    time.Time
}

// csrfOK reports whether r carries the session's CSRF token.
func (s *session) csrfOK(r *http.Request) bool {
	got := r.Header.Get(csrfHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sessions holds the signed-in sessions, at most max; the one that expires
// first goes when a new one needs room.
type sessions struct {
	clock   clock.Clock
	ttl     time.Duration
	max     int
	metrics *metrics

	mu   sync.Mutex
	byID map[string]*session
}

func newSessions(clk clock.Clock, ttl time.Duration, max int, m *metrics) *sessions {
	return &sessions{clock: clk, ttl: ttl, max: max, metrics: m, byID: map[string]*session{}}
}

// randomToken returns 256 random bits, URL-safe.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("console: random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (ss *sessions) create(key secret.Secret, r role) (*session, error) {
	id, err := randomToken()
	if err != nil {
		return nil, err
	}
	csrf, err := randomToken()
	if err != nil {
		return nil, err
	}
	now := ss.clock.Now()
	s := &session{id: id, csrf: csrf, key: key, name: r.name, admin: r.admin, keysAPI: r.keysAPI, usageAPI: r.usageAPI, proxiesAPI: r.proxiesAPI, expires: now.Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.expireLocked(now)
	if len(ss.byID) >= ss.max {
		var oldest *session
		for _, o := range ss.byID {
			if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
		delete(ss.byID, oldest.id)
	}
	ss.byID[id] = s
	ss.metrics.sessions.Set(float64(len(ss.byID)))
	return s, nil
}

// expireLocked drops the sessions past their expiry.
func (ss *sessions) expireLocked(now time.Time) {
	for id, s := range ss.byID {
		if !now.Before(s.expires) {
			delete(ss.byID, id)
		}
	}
}

// fromRequest returns the live session r's cookie names, or nil.
func (ss *sessions) fromRequest(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s := ss.byID[c.Value]
	if s == nil {
		return nil
	}
	if !ss.clock.Now().Before(s.expires) {
		delete(ss.byID, s.id)
		ss.metrics.sessions.Set(float64(len(ss.byID)))
		return nil
	}
	return s
}

func (ss *sessions) remove(id string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	delete(ss.byID, id)
	ss.metrics.sessions.Set(float64(len(ss.byID)))
}

// maxLimiterEntries bounds the client addresses whose failures are held.
const maxLimiterEntries = 10000

// limiter counts failed sign-ins per client address in fixed windows: past
// limit failures an address is refused until its window ends. When it holds
// max addresses with live windows, new addresses are refused too (failing
// closed beats forgetting an attacker).
type limiter struct {
	clock  clock.Clock
	limit  int
	window time.Duration
	max    int

	mu   sync.Mutex
	byIP map[string]*failures
}

type failures struct {
	start time.Time
	n     int
}

func newLimiter(clk clock.Clock, limit int, window time.Duration, max int) *limiter {
	return &limiter{clock: clk, limit: limit, window: window, max: max, byIP: map[string]*failures{}}
}

// allow reports whether addr may try to sign in, and if not, how long
// until it may.
func (l *limiter) allow(addr string) (bool, time.Duration) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.byIP[addr]
	if f == nil {
		if len(l.byIP) >= l.max {
			l.sweepLocked(now)
			if len(l.byIP) >= l.max {
				return false, l.window
			}
		}
		return true, 0
	}
	if end := f.start.Add(l.window); now.Before(end) && f.n >= l.limit {
		return false, end.Sub(now)
	}
	return true, 0
}

// failed counts a failed sign-in of addr.
func (l *limiter) failed(addr string) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.byIP[addr]
	if f == nil || !now.Before(f.start.Add(l.window)) {
		if f == nil && len(l.byIP) >= l.max {
			return
		}
		f = &failures{start: now}
		l.byIP[addr] = f
	}
	f.n++
}

func (l *limiter) sweepLocked(now time.Time) {
	for a, f := range l.byIP {
		if !now.Before(f.start.Add(l.window)) {
			delete(l.byIP, a)
		}
	}
}

// metrics are the console's own series.
type metrics struct {
	sessions prometheus.Gauge
	signIns  *prometheus.CounterVec
	csrf     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_broker_console_sessions",
			Help: "Signed-in console sessions held (bounded; the oldest goes first).",
		}),
		signIns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_console_signins_total",
			Help: "Console sign-ins by result (ok, refused: unknown key, limited: too many failures from the address).",
		}, []string{"result"}),
		csrf: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_broker_console_csrf_refused_total",
			Help: "Console changes refused for a missing or wrong CSRF token or a cross-site origin.",
		}),
	}
	for _, r := range []string{"ok", "refused", "limited"} {
		m.signIns.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sessions, m.signIns, m.csrf} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("console: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) signIn(result string) { m.signIns.WithLabelValues(result).Inc() }
func (m *metrics) csrfRefused()         { m.csrf.Inc() }
