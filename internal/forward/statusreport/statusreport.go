// Package statusreport tells the broker what this proxy sees: who it is
// (id, a random instance id, its build version and start time) and, every
// few seconds and soon after a change, the session and weekly usage limits
// it last read per account (x-usage-ratelimit-session / -weekly) and its
// upstream error counts by class. The broker merges the limits into the
// accounts' status and lists the proxies to admins (ProxyService).
//
// A [Reporter] holds one ReportStatus stream and sends on it; a broken
// stream is opened again with a jittered backoff. Reports carry whole
// states (cumulative error counts), so nothing is buffered: a lost report
// is made good by the next.
package statusreport

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/backoff"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward/pool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults of [Config].
const (
	// DefaultInterval is how often a status goes out when nothing changes.
	DefaultInterval = 10 * time.Second
	// DefaultMinGap is the least time between two reports: under traffic
	// every answer carries new usage figures.
	DefaultMinGap = 2 * time.Second
)

// Config configures a [Reporter].
type Config struct {
	// Client reports to the broker. Required.
	Client brokerv1.ProxyServiceClient
	// ProxyID names the proxy (its --proxy-id).
	ProxyID string
	// Started is when the proxy started (default: when New was called).
	Started time.Time
	// Accounts returns the accounts' health as the pool tracks it; their
	// session and weekly snapshots are reported. Required.
	Accounts func() []pool.Status
	// Errors returns the upstream error counts by class since the proxy
	// started. Nil reports none.
	Errors func() map[string]uint64
	// Interval and MinGap: see [DefaultInterval] and [DefaultMinGap].
	Interval, MinGap time.Duration
	// MinBackoff and MaxBackoff bound the delay between failed streams
	// (defaults 100 ms and 10 s).
	MinBackoff, MaxBackoff time.Duration
	// Registerer receives the reporter's series; nil registers nothing.
	Registerer prometheus.Registerer
	Clock      clock.Clock
	Logger     *slog.Logger
}

// Reporter reports to the broker. [Reporter.Changed] is safe for
// concurrent use and never blocks.
type Reporter struct {
	cfg    Config
	info   *brokerv1.ProxyInfo
	clock  clock.Clock
	log    *slog.Logger
	wake   chan struct{} // capacity 1: something changed
	errors prometheus.Counter
	sent   prometheus.Counter
}

// New returns a Reporter; [Reporter.Run] reports.
func New(cfg Config) (*Reporter, error) {
	if cfg.Client == nil || cfg.Accounts == nil {
		return nil, errorString("statusreport: a broker client and the accounts are required")
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = DefaultMinGap
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(10*time.Second, cfg.MinBackoff)
	}
	if cfg.Started.IsZero() {
		cfg.Started = cfg.Clock.Now()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reporter{
		cfg: cfg, clock: cfg.Clock, log: cfg.Logger, wake: make(chan struct{}, 1),
		info: &brokerv1.ProxyInfo{Id: cfg.ProxyID, Instance: newInstance(), Version: Version(), StartedAt: timestamppb.New(cfg.Started)},
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_status_report_stream_errors_total",
			Help: "Status report streams to the broker (ProxyService.ReportStatus) that failed; the next report is sent on a new one.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_proxy_status_reports_total",
			Help: "Status reports the broker acknowledged.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.errors, r.sent} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

// Info returns who the proxy says it is.
func (r *Reporter) Info() *brokerv1.ProxyInfo { return r.info }

// Changed says something worth reporting changed: a report goes out soon
// (within MinGap of the last).
func (r *Reporter) Changed() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		sent, err := r.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			// A broker that predates ProxyService: ask again now and then.
			if failures == 0 {
				r.log.Info("the broker takes no status reports (an older version); the proxy is not listed there")
			}
			failures++
			if !backoff.Sleep(ctx, r.clock, 5*time.Minute) {
				return
			}
			continue
		}
		r.errors.Inc()
		if sent {
			failures = 0
		}
		if failures == 0 {
			r.log.Warn("status report stream to the broker failed; reporting again", "error", err)
		}
		d := backoff.Delay(r.cfg.MinBackoff, r.cfg.MaxBackoff, failures)
		failures++
		if !backoff.Sleep(ctx, r.clock, d) {
			return
		}
	}
}

// stream runs one ReportStatus stream until it fails; sent says whether a
// report was acknowledged on it.
func (r *Reporter) stream(ctx context.Context) (sent bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := r.cfg.Client.ReportStatus(sctx, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	interval := r.cfg.Interval
	msg := &brokerv1.ReportStatusRequest{Proxy: r.info, Status: r.status()}
	var last *brokerv1.ProxyStatus
	for {
		if err := st.Send(msg); err != nil {
			_, err = st.Recv() // the stream's status says why
			return sent, err
		}
		ack, err := st.Recv()
		if err != nil {
			return sent, err
		}
		r.sent.Inc()
		sent, last = true, msg.GetStatus()
		if d := ack.GetReportInterval().AsDuration(); d >= time.Second && d <= 5*time.Minute {
			interval = d
		}
		next, ok := r.next(ctx, last, interval)
		if !ok {
			return sent, ctx.Err()
		}
		msg = &brokerv1.ReportStatusRequest{Status: next}
	}
}

// next waits for the next report: a change (no sooner than MinGap) or the
// interval.
func (r *Reporter) next(ctx context.Context, last *brokerv1.ProxyStatus, interval time.Duration) (*brokerv1.ProxyStatus, bool) {
	gap := r.clock.NewTimer(r.cfg.MinGap)
	defer gap.Stop()
	select { // nothing goes out within the gap
	case <-ctx.Done():
		return nil, false
	case <-gap.C():
	}
	beat := r.clock.NewTimer(interval - r.cfg.MinGap)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, false
		case <-beat.C():
			return r.status(), true
		case <-r.wake:
			if st := r.status(); !sameView(st, last) {
				return st, true
			}
		}
	}
}

// sameView reports whether two statuses hold the same limits and counts.
func sameView(a, b *brokerv1.ProxyStatus) bool {
	return proto.Equal(&brokerv1.ProxyStatus{Accounts: a.GetAccounts(), UpstreamErrors: a.GetUpstreamErrors()},
		&brokerv1.ProxyStatus{Accounts: b.GetAccounts(), UpstreamErrors: b.GetUpstreamErrors()})
}

// status takes the proxy's current view.
func (r *Reporter) status() *brokerv1.ProxyStatus {
	st := &brokerv1.ProxyStatus{At: timestamppb.New(r.clock.Now())}
	if r.cfg.Errors != nil {
		st.UpstreamErrors = r.cfg.Errors()
	}
	accounts := r.cfg.Accounts()
	slices.SortFunc(accounts, func(a, b pool.Status) int { return strings.Compare(a.Name, b.Name) })
	for _, a := range accounts {
		if len(a.Usage) == 0 {
			continue
		}
		au := &brokerv1.AccountUsageLimits{Account: a.Name}
		usage := slices.Clone(a.Usage)
		slices.SortFunc(usage, func(x, y pool.Snapshot) int { return strings.Compare(x.Kind, y.Kind) })
		for _, s := range usage {
			l := &brokerv1.UsageLimit{
				Kind: s.Kind, PercentRemaining: percent(s), Entitlement: s.Entitlement, Remaining: max(s.Remaining, 0),
				Unlimited: s.Unlimited, SeenAt: timestamppb.New(a.UsageSeen),
			}
			if !s.Reset.IsZero() {
				l.ResetAt = timestamppb.New(s.Reset)
			}
			au.Limits = append(au.Limits, l)
		}
		st.Accounts = append(st.Accounts, au)
	}
	return st
}

// percent is what is left of a limit, 0 to 100.
func percent(s pool.Snapshot) float64 {
	switch {
	case s.Unlimited:
		return 100
	case s.Entitlement <= 0:
		if s.Remaining > 0 {
			return 100
		}
		return 0
	}
	return min(100, max(0, s.Remaining/s.Entitlement*100))
}

// Version is this binary's build: the main module's version and, when the
// build recorded it, the VCS revision (12 digits, "+dirty" when modified).
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += " " + rev[:min(12, len(rev))]
		if settings["vcs.modified"] == "true" {
			v += "+dirty"
		}
	}
	return v
}

func newInstance() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}
