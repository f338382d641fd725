package broker

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metrics holds the broker's Prometheus collectors in a registry of its own
// (never the global one, so tests and several brokers in one process do not
// collide). A nil *Metrics is valid and records nothing.
type Metrics struct {
	reg          *prometheus.Registry
	refreshes    *prometheus.CounterVec
	acctWatchers prometheus.Gauge
	keyWatchers  prometheus.Gauge
	grpcRequests *prometheus.CounterVec
	grpcLatency  *prometheus.HistogramVec
	httpRequests *prometheus.CounterVec
	httpLatency  *prometheus.HistogramVec
	authFailures *prometheus.CounterVec

	// Resolved children by method (gRPC) and route (REST), so a request
	// costs no label hashing nor the vectors' locks.
	unary   sync.Map // full method -> *rpcMetrics
	streams sync.Map // full method -> *rpcMetrics (no latency)
	routes  sync.Map // route -> *routeMetrics
}

// rpcMetrics are one gRPC method's series, counters made on first use of
// each code so that only codes seen are exported.
type rpcMetrics struct {
	latency prometheus.Observer // nil for streaming methods
	byCode  [codes.Unauthenticated + 1]atomic.Pointer[counter]
}

// routeMetrics are one REST route's series.
type routeMetrics struct {
	latency prometheus.Observer
	byCode  sync.Map // HTTP status -> prometheus.Counter
}

type counter struct{ prometheus.Counter }

// rpc returns method's series from byMethod (m.unary or m.streams); only
// unary methods are timed.
func (m *Metrics) rpc(byMethod *sync.Map, method string) *rpcMetrics {
	if r, ok := byMethod.Load(method); ok {
		return r.(*rpcMetrics)
	}
	r := &rpcMetrics{}
	if byMethod == &m.unary {
		r.latency = m.grpcLatency.WithLabelValues(method)
	}
	got, _ := byMethod.LoadOrStore(method, r)
	return got.(*rpcMetrics)
}

// count counts one finished call of method with code.
func (m *Metrics) count(method string, r *rpcMetrics, code codes.Code) {
	if int(code) >= len(r.byCode) {
		m.grpcRequests.WithLabelValues(method, code.String()).Inc()
		return
	}
	c := r.byCode[code].Load()
	if c == nil {
		c = &counter{m.grpcRequests.WithLabelValues(method, code.String())}
		r.byCode[code].Store(c) // a racing store holds the same child
	}
	c.Inc()
}

func (m *Metrics) route(route string) *routeMetrics {
	if r, ok := m.routes.Load(route); ok {
		return r.(*routeMetrics)
	}
	r, _ := m.routes.LoadOrStore(route, &routeMetrics{latency: m.httpLatency.WithLabelValues(route)})
	return r.(*routeMetrics)
}

func (m *Metrics) countHTTP(route string, r *routeMetrics, code int) {
	if c, ok := r.byCode.Load(code); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c, _ := r.byCode.LoadOrStore(code, m.httpRequests.WithLabelValues(route, statusText(code)))
	c.(prometheus.Counter).Inc()
}

// NewMetrics returns the broker's metrics, registered with a new registry
// that also carries the Go runtime and process collectors.
func NewMetrics() *Metrics {
	latencyBuckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_token_refreshes_total",
			Help: "Token exchanges with GitHub by account and result (success, rejected, no_access, rate_limited, identity_rejected, error).",
		}, []string{"account", "result"}),
		acctWatchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_broker_account_watchers",
			Help: "Open WatchAccounts streams (REST watches included).",
		}),
		keyWatchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_broker_key_watchers",
			Help: "Open WatchKeys streams (REST watches included).",
		}),
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_grpc_requests_total",
			Help: "Finished gRPC calls by method and code (REST calls arrive through the gateway and count here too).",
		}, []string{"method", "code"}),
		grpcLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "copilot_broker_grpc_request_duration_seconds",
			Help:    "Latency of unary gRPC calls by method.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_http_requests_total",
			Help: "Finished REST requests by route and HTTP status.",
		}, []string{"route", "code"}),
		httpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "copilot_broker_http_request_duration_seconds",
			Help:    "Latency of REST requests by route (the watch route measures whole streams).",
			Buckets: latencyBuckets,
		}, []string{"route"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_auth_failures_total",
			Help: "Calls refused for want of a valid broker key, by transport (grpc, http) and reason (missing, malformed, unknown).",
		}, []string{"transport", "reason"}),
	}
	m.reg.MustRegister(m.refreshes, m.acctWatchers, m.keyWatchers, m.grpcRequests, m.grpcLatency, m.httpRequests, m.httpLatency, m.authFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry to serve on /metrics; nil for a nil
// Metrics.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// ObserveService registers gauges read at scrape time for every account svc
// serves, so a removed account's series go with it: the token's local expiry
// and planned refresh as unix times, generation, status (one series per
// status, 1 for the current one), and the quota gauges.
func (m *Metrics) ObserveService(svc *Service) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(&stateCollector{each: svc.eachAccount})
}

// InstrumentExchange wraps an exchange function so that every exchange is
// counted by result.
func (m *Metrics) InstrumentExchange(account string, f tokens.ExchangeFunc) tokens.ExchangeFunc {
	if m == nil {
		return f
	}
	return func(ctx context.Context, githubToken secret.Secret) (*tokens.CopilotToken, error) {
		tok, err := f(ctx, githubToken)
		m.refreshes.WithLabelValues(account, exchangeResult(err)).Inc()
		return tok, err
	}
}

func exchangeResult(err error) string {
	var noAccess *tokens.NoAccessError
	var limited *tokens.RateLimitedError
	var identityRejected *tokens.IdentityRejectedError
	switch {
	case err == nil:
		return "success"
	case errors.As(err, &identityRejected):
		return "identity_rejected"
	case errors.Is(err, tokens.ErrCredentialRejected):
		return "rejected"
	case errors.As(err, &noAccess):
		return "no_access"
	case errors.As(err, &limited):
		return "rate_limited"
	default:
		return "error"
	}
}

// ForgetAccount drops a removed account's labelled series, so that the
// cardinality follows the accounts served.
func (m *Metrics) ForgetAccount(account string) {
	if m != nil {
		m.refreshes.DeletePartialMatch(prometheus.Labels{"account": account})
	}
}

func (m *Metrics) accountWatcherAdded() {
	if m != nil {
		m.acctWatchers.Inc()
	}
}

func (m *Metrics) accountWatcherRemoved() {
	if m != nil {
		m.acctWatchers.Dec()
	}
}

func (m *Metrics) keyWatcherAdded() {
	if m != nil {
		m.keyWatchers.Inc()
	}
}

func (m *Metrics) keyWatcherRemoved() {
	if m != nil {
		m.keyWatchers.Dec()
	}
}

func (m *Metrics) authFailed(transport, reason string) {
	if m != nil {
		m.authFailures.WithLabelValues(transport, reason).Inc()
	}
}

// UnaryInterceptor counts unary calls by method and code and times them.
// Install it before the authenticator so refused calls count too.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	if m == nil {
		return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return handler(ctx, req)
		}
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		r := m.rpc(&m.unary, info.FullMethod)
		r.latency.Observe(time.Since(start).Seconds())
		m.count(info.FullMethod, r, status.Code(err))
		return resp, err
	}
}

// StreamInterceptor counts streaming calls by method and code when they end.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	if m == nil {
		return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, ss)
		}
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		m.count(info.FullMethod, m.rpc(&m.streams, info.FullMethod), status.Code(err))
		return err
	}
}

// HTTPMiddleware counts REST requests by route and status and times them.
// route maps a request to a label of bounded cardinality.
func (m *Metrics) HTTPMiddleware(route func(*http.Request) string, next http.Handler) http.Handler {
	if m == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		code := rec.status
		if code == 0 {
			code = http.StatusOK
		}
		rt := route(r)
		rm := m.route(rt)
		rm.latency.Observe(time.Since(start).Seconds())
		m.countHTTP(rt, rm, code)
	})
}

// statusRecorder remembers the status written; Unwrap lets
// http.ResponseController reach Flush on the real writer, which the
// gateway's streaming needs.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusText avoids an allocation per request for the common codes.
func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 401:
		return "401"
	case 404:
		return "404"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}

// stateCollector exports the token state and quota of every account at
// scrape time.
type stateCollector struct {
	each func(func(a *account))
}

var (
	expiryDesc = prometheus.NewDesc("copilot_broker_token_expiry_timestamp_seconds",
		"Local (skew-safe) expiry of the account's token as a unix time; 0 without a token.", []string{"account"}, nil)
	refreshAtDesc = prometheus.NewDesc("copilot_broker_token_refresh_timestamp_seconds",
		"When the next exchange is planned, as a unix time; 0 when none is (REJECTED).", []string{"account"}, nil)
	generationDesc = prometheus.NewDesc("copilot_broker_token_generation",
		"Generation of the account's token; increases with every new token.", []string{"account"}, nil)
	watchersDesc = prometheus.NewDesc("copilot_broker_watchers",
		"Open WatchToken streams by account (REST watches included).", []string{"account"}, nil)
	statusDesc = prometheus.NewDesc("copilot_broker_token_status",
		"1 for the account's current token status, 0 for the others.", []string{"account", "status"}, nil)

	quotaLabels    = []string{"account", "kind"}
	quotaRemaining = prometheus.NewDesc("copilot_broker_quota_remaining",
		"What is left of the account's quota of this kind this period (copilot_internal/user).", quotaLabels, nil)
	quotaEntitlement = prometheus.NewDesc("copilot_broker_quota_entitlement",
		"The account's allowance of this kind per period; 0 when unlimited.", quotaLabels, nil)
	quotaPercent = prometheus.NewDesc("copilot_broker_quota_percent_remaining",
		"Remaining as a percentage of the entitlement; 100 when unlimited.", quotaLabels, nil)
	quotaUnlimited = prometheus.NewDesc("copilot_broker_quota_unlimited",
		"1 when the account's plan sets no limit on this kind.", quotaLabels, nil)
	quotaExhausted = prometheus.NewDesc("copilot_broker_quota_exhausted",
		"1 when the quota is limited, spent, and overage is not permitted: the Copilot API answers 402 until the reset.", quotaLabels, nil)
	quotaReset = prometheus.NewDesc("copilot_broker_quota_reset_timestamp_seconds",
		"When the account's quotas reset, as a unix time; 0 when unknown.", quotaLabels, nil)
	quotaFetched = prometheus.NewDesc("copilot_broker_quota_fetched_timestamp_seconds",
		"When the account's quota was last read successfully, as a unix time; 0 before the first reading.", []string{"account"}, nil)
)

var allStatuses = [...]tokens.Status{tokens.StatusPending, tokens.StatusValid, tokens.StatusStale, tokens.StatusExpired, tokens.StatusRejected}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- refreshAtDesc
	ch <- generationDesc
	ch <- statusDesc
	ch <- watchersDesc
	for _, d := range []*prometheus.Desc{quotaRemaining, quotaEntitlement, quotaPercent, quotaUnlimited, quotaExhausted, quotaReset, quotaFetched} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.each(func(a *account) {
		account, q := a.name, a.quota
		st := a.src.Snapshot()
		ch <- prometheus.MustNewConstMetric(watchersDesc, prometheus.GaugeValue, float64(a.watchers.Load()), account)
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, unixSeconds(st.ExpiresAt), account)
		ch <- prometheus.MustNewConstMetric(refreshAtDesc, prometheus.GaugeValue, unixSeconds(st.RefreshAt), account)
		ch <- prometheus.MustNewConstMetric(generationDesc, prometheus.GaugeValue, float64(st.Generation), account)
		for _, s := range allStatuses {
			v := 0.0
			if s == st.Status {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(statusDesc, prometheus.GaugeValue, v, account, s.String())
		}
		if q != nil {
			collectQuota(ch, account, q.Current())
		}
	})
}

func collectQuota(ch chan<- prometheus.Metric, account string, r quota.Reading) {
	if r.FetchedAt.IsZero() {
		return
	}
	ch <- prometheus.MustNewConstMetric(quotaFetched, prometheus.GaugeValue, unixSeconds(r.FetchedAt), account)
	for _, sn := range r.Snapshots {
		ch <- prometheus.MustNewConstMetric(quotaRemaining, prometheus.GaugeValue, sn.Remaining, account, sn.Kind)
		ch <- prometheus.MustNewConstMetric(quotaEntitlement, prometheus.GaugeValue, sn.Entitlement, account, sn.Kind)
		ch <- prometheus.MustNewConstMetric(quotaPercent, prometheus.GaugeValue, sn.PercentRemaining, account, sn.Kind)
		ch <- prometheus.MustNewConstMetric(quotaUnlimited, prometheus.GaugeValue, boolGauge(sn.Unlimited), account, sn.Kind)
		ch <- prometheus.MustNewConstMetric(quotaExhausted, prometheus.GaugeValue, boolGauge(sn.Exhausted()), account, sn.Kind)
		ch <- prometheus.MustNewConstMetric(quotaReset, prometheus.GaugeValue, unixSeconds(r.ResetAt), account, sn.Kind)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
