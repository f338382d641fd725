package broker

import (
	"cmp"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The fleet as the broker sees it (ProxyService): every proxy reports who
// it is and what it sees of the Copilot API. [Proxies] keeps the latest of
// each proxy, bounded in number and forgotten after a while unheard, and
// merges the accounts' session and weekly usage limits across proxies (per
// account and kind, the reading seen last) into the accounts' status.

// Defaults of [ProxiesConfig].
const (
	DefaultMaxProxies  = 1000
	DefaultProxyExpiry = 10 * time.Minute
	// proxyNotifyGap is the least time between two wake-ups of the
	// accounts' watchers for new usage limits: under traffic every
	// proxy's report carries new figures, and every proxy watches the
	// accounts.
	proxyNotifyGap = time.Second
	// maxErrorKinds bounds the distinct upstream error classes the broker
	// counts; later ones are counted as "other".
	maxErrorKinds = 64
)

// ProxiesConfig configures [Proxies].
type ProxiesConfig struct {
	// MaxProxies bounds the proxies tracked (default [DefaultMaxProxies]).
	// A proxy reporting when that many are tracked takes the place of the
	// one heard from least recently among those disconnected, or is
	// refused.
	MaxProxies int
	// Expiry is how long a proxy unheard is kept (default
	// [DefaultProxyExpiry]).
	Expiry time.Duration
	// KnownAccount reports whether the broker serves an account; the usage
	// limits of others are ignored. Nil: every account.
	KnownAccount func(name string) bool
	// Registerer receives the fleet's series; nil registers nothing.
	Registerer prometheus.Registerer
	Clock      clock.Clock
	Logger     *slog.Logger
}

// Proxies is the broker's view of its proxies. Safe for concurrent use.
type Proxies struct {
	clock   clock.Clock
	log     *slog.Logger
	max     int
	expiry  time.Duration
	known   func(string) bool
	started time.Time // proxies started before it: their first error counts are a baseline

	mu         sync.Mutex
	byInstance map[string]*proxyRecord
	limits     map[string]map[string]*mergedLimit // account → kind
	errorKinds map[string]bool
	changed    chan struct{} // closed (and replaced) when merged limits changed
	notifyAt   time.Time     // last wake-up of changed
	notifyTmr  clock.Timer   // pending wake-up; nil when none

	errorsTotal *prometheus.CounterVec
	reports     *prometheus.CounterVec
	evicted     *prometheus.CounterVec
}

// proxyRecord is one proxy instance.
type proxyRecord struct {
	info     *brokerv1.ProxyInfo
	address  string
	streams  int // open report streams
	lastSeen time.Time
	errors   map[string]uint64 // cumulative, as last reported
	counted  bool              // growth of errors is counted; false until the baseline of a proxy older than the broker
	accounts []*brokerv1.AccountUsageLimits
}

// mergedLimit is an account's reading of one kind, the latest across
// proxies. seen moves with every report of it; l.SeenAt only when the value
// changes (so repeats wake no watcher).
type mergedLimit struct {
	l    *brokerv1.UsageLimit
	seen time.Time
}

// NewProxies returns an empty view of the fleet.
func NewProxies(cfg ProxiesConfig) (*Proxies, error) {
	if cfg.MaxProxies <= 0 {
		cfg.MaxProxies = DefaultMaxProxies
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultProxyExpiry
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	clk := clock.OrReal(cfg.Clock)
	p := &Proxies{
		clock: clk, log: cfg.Logger, max: cfg.MaxProxies, expiry: cfg.Expiry, known: cfg.KnownAccount, started: clk.Now(),
		byInstance: map[string]*proxyRecord{}, limits: map[string]map[string]*mergedLimit{}, errorKinds: map[string]bool{},
		changed: make(chan struct{}),
		errorsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_proxy_upstream_errors_total",
			Help: "Copilot API error answers the proxies reported, summed over proxies, by class of the error taxonomy (docs/protocol.md section 8).",
		}, []string{"kind"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_proxy_reports_total",
			Help: "Proxy status reports (ProxyService.ReportStatus messages) by result: ok, invalid (refused as malformed), refused (the broker tracks --max-proxies proxies).",
		}, []string{"result"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_proxies_forgotten_total",
			Help: "Proxies the broker stopped tracking, by reason: expired (unheard for --proxy-expiry), capacity (made room for another), restarted (the same id reported from a new process).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"ok", "invalid", "refused"} {
		p.reports.WithLabelValues(r)
	}
	for _, r := range []string{"expired", "capacity", "restarted"} {
		p.evicted.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.errorsTotal, p.reports, p.evicted, proxiesCollector{p}} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// ErrTooManyProxies is returned by [Proxies.Seen] when the bound is reached
// and no disconnected proxy can make room.
var ErrTooManyProxies = errorString("the broker tracks as many proxies as its bound (--max-proxies), all connected")

type errorString string

func (e errorString) Error() string { return string(e) }

// Counted counts a report's outcome (ok, invalid, refused).
func (p *Proxies) Counted(result string) { p.reports.WithLabelValues(result).Inc() }

// Connect records an open report stream of the proxy info (already
// validated) from address, and returns its release.
func (p *Proxies) Connect(info *brokerv1.ProxyInfo, address string) (release func(), err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	p.expireLocked(now)
	r, err := p.recordLocked(info, address, now)
	if err != nil {
		return nil, err
	}
	r.streams++
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			// By instance: the record may have expired and come back.
			if cur := p.byInstance[info.GetInstance()]; cur != nil && cur.streams > 0 {
				cur.streams--
				cur.lastSeen = p.clock.Now()
			}
		})
	}, nil
}

// recordLocked returns the record of info, making room or refusing when it
// is new.
func (p *Proxies) recordLocked(info *brokerv1.ProxyInfo, address string, now time.Time) (*proxyRecord, error) {
	if r, ok := p.byInstance[info.GetInstance()]; ok {
		r.lastSeen, r.address = now, address
		return r, nil
	}
	// A new process under an id whose old one is gone: the old one
	// restarted.
	for inst, r := range p.byInstance {
		if r.info.GetId() == info.GetId() && r.streams == 0 {
			delete(p.byInstance, inst)
			p.evicted.WithLabelValues("restarted").Inc()
		}
	}
	if len(p.byInstance) >= p.max {
		var oldest *proxyRecord
		for _, r := range p.byInstance {
			if r.streams == 0 && (oldest == nil || r.lastSeen.Before(oldest.lastSeen)) {
				oldest = r
			}
		}
		if oldest == nil {
			return nil, ErrTooManyProxies
		}
		delete(p.byInstance, oldest.info.GetInstance())
		p.evicted.WithLabelValues("capacity").Inc()
	}
	r := &proxyRecord{info: proto.CloneOf(info), address: address, lastSeen: now, errors: map[string]uint64{}}
	// Errors counted before this broker started are no news to it: the
	// first report of such a proxy is a baseline.
	r.counted = !info.GetStartedAt().AsTime().Before(p.started)
	p.byInstance[info.GetInstance()] = r
	p.log.Info("proxy reporting", "proxy", info.GetId(), "instance", info.GetInstance(), "version", info.GetVersion(), "address", address)
	return r, nil
}

// Report records a status (already validated) of the proxy info, whose
// stream is open.
func (p *Proxies) Report(info *brokerv1.ProxyInfo, address string, st *brokerv1.ProxyStatus) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	p.expireLocked(now)
	r, err := p.recordLocked(info, address, now)
	if err != nil {
		return err
	}
	if r.streams == 0 {
		r.streams = 1 // expired while its stream stayed open: seen again
	}
	p.countErrorsLocked(r, st.GetUpstreamErrors())
	r.accounts = st.GetAccounts()
	// Times of the proxy's clock become the broker's: how long before its
	// report the proxy saw a value is kept, the clocks' offset is not.
	at := st.GetAt().AsTime()
	if st.GetAt() == nil {
		at = now
	}
	changed := false
	for _, a := range st.GetAccounts() {
		if p.known != nil && !p.known(a.GetAccount()) {
			continue
		}
		for _, l := range a.GetLimits() {
			seen := now
			if l.GetSeenAt() != nil {
				seen = now.Add(-max(0, at.Sub(l.GetSeenAt().AsTime())))
			}
			if p.mergeLocked(a.GetAccount(), l, seen, info.GetId()) {
				changed = true
			}
		}
	}
	if changed {
		p.notifyLocked(now)
	}
	return nil
}

// countErrorsLocked adds what r's cumulative error counts grew by to the
// fleet's counters.
func (p *Proxies) countErrorsLocked(r *proxyRecord, counts map[string]uint64) {
	for kind, n := range counts {
		prev := r.errors[kind]
		r.errors[kind] = n
		if !r.counted {
			continue
		}
		d := n - prev
		if n < prev { // cannot shrink within one process; take it as new
			d = n
		}
		if d == 0 {
			continue
		}
		if !p.errorKinds[kind] {
			if len(p.errorKinds) >= maxErrorKinds {
				kind = "other"
			} else {
				p.errorKinds[kind] = true
			}
		}
		p.errorsTotal.WithLabelValues(kind).Add(float64(d))
	}
	r.counted = true
}

// mergeLocked takes l as account's reading of its kind when it is the most
// recent; it reports whether the value changed.
func (p *Proxies) mergeLocked(account string, l *brokerv1.UsageLimit, seen time.Time, proxyID string) bool {
	kinds := p.limits[account]
	if kinds == nil {
		kinds = map[string]*mergedLimit{}
		p.limits[account] = kinds
	}
	cur := kinds[l.GetKind()]
	// A proxy's own reports come in order on its stream: the one whose
	// reading stands is replaced by its next, whatever the transit times
	// made of the times taken over.
	if cur != nil && seen.Before(cur.seen) && cur.l.GetProxyId() != proxyID {
		return false
	}
	if cur == nil && len(kinds) >= maxLimitsPerAccount {
		return false
	}
	next := &brokerv1.UsageLimit{
		Kind: l.GetKind(), PercentRemaining: l.GetPercentRemaining(), Entitlement: l.GetEntitlement(),
		Remaining: l.GetRemaining(), Unlimited: l.GetUnlimited(), ResetAt: l.GetResetAt(),
		SeenAt: timestamppb.New(seen), ProxyId: proxyID,
	}
	if cur != nil && sameLimit(cur.l, next) {
		cur.seen = seen
		return false
	}
	kinds[l.GetKind()] = &mergedLimit{l: next, seen: seen}
	return true
}

// sameLimit reports whether two readings hold the same value.
func sameLimit(a, b *brokerv1.UsageLimit) bool {
	return a.GetPercentRemaining() == b.GetPercentRemaining() && a.GetEntitlement() == b.GetEntitlement() &&
		a.GetRemaining() == b.GetRemaining() && a.GetUnlimited() == b.GetUnlimited() &&
		proto.Equal(a.GetResetAt(), b.GetResetAt())
}

// notifyLocked wakes the watchers of the merged limits, at most once per
// proxyNotifyGap.
func (p *Proxies) notifyLocked(now time.Time) {
	if p.notifyTmr != nil {
		return // a wake-up is planned
	}
	if wait := p.notifyAt.Add(proxyNotifyGap).Sub(now); wait > 0 {
		p.notifyTmr = p.clock.AfterFunc(wait, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.notifyTmr = nil
			p.wakeLocked(p.clock.Now())
		})
		return
	}
	p.wakeLocked(now)
}

func (p *Proxies) wakeLocked(now time.Time) {
	p.notifyAt = now
	close(p.changed)
	p.changed = make(chan struct{})
}

// Changed returns a channel closed when the merged usage limits change
// next. Nil-safe: a nil *Proxies never changes.
func (p *Proxies) Changed() <-chan struct{} {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// UsageLimits returns account's merged usage limits in kind order; nil
// when none was reported. Nil-safe.
func (p *Proxies) UsageLimits(account string) []*brokerv1.UsageLimit {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	kinds := p.limits[account]
	if len(kinds) == 0 {
		return nil
	}
	out := make([]*brokerv1.UsageLimit, 0, len(kinds))
	for _, m := range kinds {
		out = append(out, m.l)
	}
	slices.SortFunc(out, func(a, b *brokerv1.UsageLimit) int { return strings.Compare(a.GetKind(), b.GetKind()) })
	return out
}

// List returns the proxies tracked, in id (then instance) order.
func (p *Proxies) List() []*brokerv1.Proxy {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(p.clock.Now())
	out := make([]*brokerv1.Proxy, 0, len(p.byInstance))
	for _, r := range p.byInstance {
		errs := make(map[string]uint64, len(r.errors))
		for k, v := range r.errors {
			errs[k] = v
		}
		out = append(out, &brokerv1.Proxy{
			Info: r.info, Address: r.address, Connected: r.streams > 0, LastSeenAt: timestamppb.New(r.lastSeen),
			UpstreamErrors: errs, Accounts: r.accounts,
		})
	}
	slices.SortFunc(out, func(a, b *brokerv1.Proxy) int {
		return cmp.Or(strings.Compare(a.GetInfo().GetId(), b.GetInfo().GetId()),
			strings.Compare(a.GetInfo().GetInstance(), b.GetInfo().GetInstance()))
	})
	return out
}

// expireLocked forgets the proxies unheard for the expiry, and the merged
// limits of accounts no longer served.
func (p *Proxies) expireLocked(now time.Time) {
	for inst, r := range p.byInstance {
		if now.Sub(r.lastSeen) >= p.expiry {
			delete(p.byInstance, inst)
			p.evicted.WithLabelValues("expired").Inc()
			p.log.Info("proxy forgotten: not heard from", "proxy", r.info.GetId(), "instance", inst, "last_seen", r.lastSeen)
		}
	}
	if p.known != nil {
		for account := range p.limits {
			if !p.known(account) {
				delete(p.limits, account)
			}
		}
	}
}

// proxiesCollector exports the fleet at scrape time.
type proxiesCollector struct{ p *Proxies }

var (
	descProxies = prometheus.NewDesc("copilot_broker_proxies",
		"Proxies reporting to this broker, by state: connected (report stream open) or disconnected (kept until --proxy-expiry).", []string{"state"}, nil)
	descProxyAge = prometheus.NewDesc("copilot_broker_proxy_last_seen_age_seconds",
		"Seconds since the broker last heard from a proxy, by proxy id and version.", []string{"proxy", "version"}, nil)
	descLimitPercent = prometheus.NewDesc("copilot_broker_account_usage_limit_percent_remaining",
		"Percent left of an account's session or weekly usage limit (x-usage-ratelimit-*), the latest reading across proxies.", []string{"account", "kind"}, nil)
	descLimitReset = prometheus.NewDesc("copilot_broker_account_usage_limit_reset_timestamp_seconds",
		"When an account's session or weekly usage limit resets, as a Unix time, the latest reading across proxies.", []string{"account", "kind"}, nil)
)

func (c proxiesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descProxies, descProxyAge, descLimitPercent, descLimitReset} {
		ch <- d
	}
}

func (c proxiesCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock.Now()
	p.expireLocked(now)
	connected, newest := 0, map[string]*proxyRecord{}
	for _, r := range p.byInstance {
		if r.streams > 0 {
			connected++
		}
		// One series per id: the one heard from last.
		if n := newest[r.info.GetId()]; n == nil || r.lastSeen.After(n.lastSeen) {
			newest[r.info.GetId()] = r
		}
	}
	ch <- prometheus.MustNewConstMetric(descProxies, prometheus.GaugeValue, float64(connected), "connected")
	ch <- prometheus.MustNewConstMetric(descProxies, prometheus.GaugeValue, float64(len(p.byInstance)-connected), "disconnected")
	for id, r := range newest {
		ch <- prometheus.MustNewConstMetric(descProxyAge, prometheus.GaugeValue, now.Sub(r.lastSeen).Seconds(), id, r.info.GetVersion())
	}
	for account, kinds := range p.limits {
		for kind, m := range kinds {
			ch <- prometheus.MustNewConstMetric(descLimitPercent, prometheus.GaugeValue, m.l.GetPercentRemaining(), account, kind)
			if m.l.GetResetAt() != nil {
				ch <- prometheus.MustNewConstMetric(descLimitReset, prometheus.GaugeValue, float64(m.l.GetResetAt().GetSeconds()), account, kind)
			}
		}
	}
}

// finite reports whether x is a number (not NaN or infinite).
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
