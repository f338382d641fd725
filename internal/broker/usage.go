package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of a usage report.
const (
	// MaxUsageBatch is the most events one ReportUsage message may carry.
	MaxUsageBatch = 1000
	// maxUsageField bounds each string field of an event.
	maxUsageField = 200
	// maxUsageFuture is how far ahead of the broker's clock an event's time
	// may be (clock skew between proxy and broker).
	maxUsageFuture = time.Hour
)

// UsageConfig configures a [UsageService].
type UsageConfig struct {
	// Ledger stores the events. Required.
	Ledger store.Ledger
	// KnownKey reports whether name is a client key the broker manages;
	// events for other keys are refused. Nil: every key is known.
	KnownKey func(ctx context.Context, name string) (bool, error)
	// Budgets, when set, is told of stored usage and serves SetBudget and
	// WatchBudgets.
	Budgets *BudgetBook
	// TouchKeys, when set, records each reported key's latest use (the
	// keys' last-used time). Its failure is logged and never refuses a
	// batch: the events are stored by then.
	TouchKeys func(ctx context.Context, used map[string]time.Time) error
	// MaxStreamAge and StreamAgeJitter bound WatchBudgets streams as
	// [Config] does WatchToken streams, so proxies spread over broker
	// replicas added later.
	MaxStreamAge    time.Duration
	StreamAgeJitter float64
	// Rand returns uniform numbers in [0, 1) for jitter (nil: math/rand/v2).
	Rand func() float64
	// Registerer receives the ledger's series; nil registers nothing.
	Registerer prometheus.Registerer
	Clock      clock.Clock
	Logger     *slog.Logger
}

// UsageService is the UsageService of the contract: the ledger's intake
// from proxies and its queries for admins.
type UsageService struct {
	brokerv1.UnimplementedUsageServiceServer
	ledger   store.Ledger
	budgets  *BudgetBook
	known    func(ctx context.Context, name string) (bool, error)
	touch    func(ctx context.Context, used map[string]time.Time) error
	clock    clock.Clock
	log      *slog.Logger
	events   *prometheus.CounterVec // by result: stored, duplicate, rejected
	batches  prometheus.Counter
	warnOnce sync.Map // rejection reason → struct{}: one log line per reason
	maxAge   time.Duration
	jitter   float64
	rand     func() float64
	drain    chan struct{}
	drainMu  sync.Once
}

// Drain ends every ReportUsage stream (proxies resend what was not
// acknowledged, to this broker's successor); the server's graceful stop
// would otherwise wait for them.
func (u *UsageService) Drain() { u.drainMu.Do(func() { close(u.drain) }) }

// NewUsageService returns the service over cfg.Ledger.
func NewUsageService(cfg UsageConfig) (*UsageService, error) {
	if cfg.Ledger == nil {
		return nil, errors.New("broker: the usage service needs a ledger")
	}
	u := &UsageService{
		ledger: cfg.Ledger, budgets: cfg.Budgets, known: cfg.KnownKey, touch: cfg.TouchKeys, drain: make(chan struct{}), clock: clock.OrReal(cfg.Clock), log: cfg.Logger,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_usage_events_total",
			Help: "Usage events reported by proxies, by result: stored, duplicate (stored before, resent) or rejected.",
		}, []string{"result"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "copilot_broker_usage_batches_total",
			Help: "Usage report batches acknowledged.",
		}),
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.maxAge, u.jitter, u.rand = streamAgeDefaults(cfg.MaxStreamAge, cfg.StreamAgeJitter, cfg.Rand)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(u.events); err != nil {
			return nil, err
		}
		if err := cfg.Registerer.Register(u.batches); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// callerKey returns the broker key of the call, or nil when authentication
// is off.
func callerKey(ctx context.Context) *keys.Key {
	k, _ := ctx.Value(keyCtxKey{}).(*keys.Key)
	return k
}

// ReportUsage stores the batches a proxy sends and acknowledges each.
func (u *UsageService) ReportUsage(stream brokerv1.UsageService_ReportUsageServer) error {
	ctx := stream.Context()
	if k := callerKey(ctx); k != nil && k.Admin {
		return status.Errorf(codes.PermissionDenied, "ReportUsage takes reports from proxies' broker keys; %q is an admin key", k.Name)
	}
	in := newInbox(ctx, u.drain, stream.Recv)
	for {
		req, ok, err := in.next()
		if !ok {
			return err
		}
		if n := len(req.GetEvents()); n > MaxUsageBatch {
			return status.Errorf(codes.InvalidArgument, "usage batch %d holds %d events; at most %d", req.GetBatch(), n, MaxUsageBatch)
		}
		ack, err := u.store(ctx, req)
		if err != nil {
			u.log.Warn("usage batch not stored; the proxy resends it", "batch", req.GetBatch(), "events", len(req.GetEvents()), "error", err)
			return status.Errorf(codes.Unavailable, "usage batch %d not stored: %v", req.GetBatch(), err)
		}
		if err := stream.Send(ack); err != nil {
			return err
		}
	}
}

// store validates and stores one batch.
func (u *UsageService) store(ctx context.Context, req *brokerv1.ReportUsageRequest) (*brokerv1.ReportUsageResponse, error) {
	ack := &brokerv1.ReportUsageResponse{Batch: req.GetBatch()}
	events := make([]store.UsageEvent, 0, len(req.GetEvents()))
	knownKeys := map[string]bool{}
	for _, pe := range req.GetEvents() {
		e, reason := u.event(pe)
		if reason == "" {
			ok, seen := knownKeys[e.Key]
			if !seen && u.known != nil {
				var err error
				if ok, err = u.known(ctx, e.Key); err != nil {
					return nil, err
				}
				knownKeys[e.Key] = ok
			} else if !seen {
				ok = true
			}
			if !ok {
				reason = fmt.Sprintf("unknown key %q: the broker manages no such key (import the proxy's keys file with `broker keys import`)", e.Key)
			}
		}
		if reason != "" {
			ack.Rejected = append(ack.Rejected, &brokerv1.RejectedUsageEvent{Id: truncate(pe.GetId()), Reason: reason})
			continue
		}
		events = append(events, e)
	}
	stored, err := u.ledger.AddUsage(ctx, events)
	if err != nil {
		return nil, err
	}
	ack.Stored = uint32(stored)
	ack.Duplicates = uint32(len(events) - stored)
	u.events.WithLabelValues("stored").Add(float64(stored))
	u.events.WithLabelValues("duplicate").Add(float64(len(events) - stored))
	u.batches.Inc()
	u.touchKeys(ctx, events)
	if stored > 0 && u.budgets != nil {
		// A budgeted key's figures are recomputed before the
		// acknowledgement: a proxy stops counting an acknowledged request
		// as its own, so the figures must hold it by then.
		if u.budgets.Touches(knownKeys) {
			if err := u.budgets.recompute(ctx); err != nil {
				u.log.Warn("budgets not recomputed after usage; the next batch retries", "error", err)
			}
		} else {
			u.budgets.Kick()
		}
	}
	if n := len(ack.Rejected); n > 0 {
		u.events.WithLabelValues("rejected").Add(float64(n))
		reason := ack.Rejected[0].GetReason()
		if _, logged := u.warnOnce.LoadOrStore(reason, struct{}{}); !logged && mapLen(&u.warnOnce) < 100 {
			u.log.Warn("usage events refused", "batch", req.GetBatch(), "rejected", n, "first_reason", reason)
		}
	}
	return ack, nil
}

// touchKeys records the latest event time of each key in events as its
// last use. Resent events touch nothing new: the store only moves the time
// forward.
func (u *UsageService) touchKeys(ctx context.Context, events []store.UsageEvent) {
	if u.touch == nil || len(events) == 0 {
		return
	}
	used := make(map[string]time.Time)
	for _, e := range events {
		if e.Time.After(used[e.Key]) {
			used[e.Key] = e.Time
		}
	}
	if err := u.touch(ctx, used); err != nil {
		u.log.Warn("keys' last use not recorded", "keys", len(used), "error", err)
	}
}

func mapLen(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}

func truncate(s string) string {
	if len(s) > maxUsageField {
		return s[:maxUsageField]
	}
	return s
}

// event checks one reported event; reason is empty when it is sound.
func (u *UsageService) event(pe *brokerv1.UsageEvent) (e store.UsageEvent, reason string) {
	for _, f := range []struct{ name, v string }{
		{"id", pe.GetId()}, {"request_id", pe.GetRequestId()}, {"key", pe.GetKey()}, {"account", pe.GetAccount()},
		{"model", pe.GetModel()}, {"dialect", pe.GetDialect()}, {"endpoint", pe.GetEndpoint()}, {"proxy_id", pe.GetProxyId()},
	} {
		if len(f.v) > maxUsageField {
			return e, fmt.Sprintf("%s longer than %d bytes", f.name, maxUsageField)
		}
	}
	now := u.clock.Now()
	switch {
	case pe.GetId() == "":
		return e, "no id"
	case !keys.ValidName(pe.GetKey()) && pe.GetKey() != "-":
		return e, fmt.Sprintf("key %q is not a key name", pe.GetKey())
	case pe.GetTime() == nil || !pe.GetTime().IsValid():
		return e, "no time"
	case pe.GetTime().AsTime().After(now.Add(maxUsageFuture)):
		return e, fmt.Sprintf("time %s is in the future", pe.GetTime().AsTime().UTC().Format(time.RFC3339))
	case pe.GetStatus() < 100 || pe.GetStatus() > 599:
		return e, fmt.Sprintf("status %d is not an HTTP status", pe.GetStatus())
	case pe.GetInputTokens() < 0 || pe.GetOutputTokens() < 0 || pe.GetCachedTokens() < 0:
		return e, "negative token count"
	case pe.GetLatencyMicros() < 0 || pe.GetTtfbMicros() < 0:
		return e, "negative latency"
	case math.IsNaN(pe.GetPremiumUnits()) || pe.GetPremiumUnits() < 0 || pe.GetPremiumUnits() > 1000:
		return e, "premium_units out of range (0 to 1000)"
	}
	return store.UsageEvent{
		ID: pe.GetId(), Time: pe.GetTime().AsTime(), RequestID: pe.GetRequestId(), Key: pe.GetKey(), Account: pe.GetAccount(),
		Model: pe.GetModel(), Dialect: pe.GetDialect(), Endpoint: pe.GetEndpoint(), Status: int(pe.GetStatus()),
		Input: pe.GetInputTokens(), Output: pe.GetOutputTokens(), Cached: pe.GetCachedTokens(),
		Premium: pe.GetPremium(), PremiumUnits: pe.GetPremiumUnits(),
		Latency: time.Duration(pe.GetLatencyMicros()) * time.Microsecond, TTFB: time.Duration(pe.GetTtfbMicros()) * time.Microsecond,
		ProxyID: pe.GetProxyId(),
	}, ""
}

// QueryUsage answers a ledger query; admin keys only.
func (u *UsageService) QueryUsage(ctx context.Context, req *brokerv1.QueryUsageRequest) (*brokerv1.QueryUsageResponse, error) {
	if k := callerKey(ctx); k != nil && !k.Admin {
		return nil, status.Errorf(codes.PermissionDenied, "QueryUsage needs an admin broker key; %q is not one (a proxy's key may only report)", k.Name)
	}
	q, err := ParseUsageQuery(req, u.clock.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rows, err := u.ledger.QueryUsage(ctx, q)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "usage query failed: %v", err)
	}
	out := &brokerv1.QueryUsageResponse{Rows: make([]*brokerv1.UsageRow, 0, len(rows))}
	for _, r := range rows {
		row := &brokerv1.UsageRow{
			Key: r.Key, Account: r.Account, Model: r.Model, Requests: r.Requests, PremiumRequests: r.PremiumRequests,
			PremiumUnits: r.PremiumUnits, InputTokens: r.Input, OutputTokens: r.Output, CachedTokens: r.Cached,
		}
		if !r.Day.IsZero() {
			row.Day = r.Day.Format(time.DateOnly)
		}
		out.Rows = append(out.Rows, row)
	}
	return out, nil
}

// ParseUsageQuery turns a request into a ledger query: dates (UTC) or RFC
// 3339 times, groups split on commas; the range defaults to this month so
// far.
func ParseUsageQuery(req *brokerv1.QueryUsageRequest, now time.Time) (store.UsageQuery, error) {
	q := store.UsageQuery{Key: req.GetKey(), Account: req.GetAccount(), Model: req.GetModel()}
	now = now.UTC()
	q.From = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	q.To = now
	if s := req.GetFrom(); s != "" {
		t, _, err := parseUsageTime(s)
		if err != nil {
			return q, fmt.Errorf("from: %w", err)
		}
		q.From = t
	}
	if s := req.GetTo(); s != "" {
		t, date, err := parseUsageTime(s)
		if err != nil {
			return q, fmt.Errorf("to: %w", err)
		}
		if date {
			t = t.AddDate(0, 0, 1) // a date includes its day
		}
		q.To = t
	}
	if !q.From.Before(q.To) {
		return q, fmt.Errorf("from (%s) must be before to (%s)", q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	for _, g := range req.GetGroupBy() {
		for f := range strings.SplitSeq(g, ",") {
			f = strings.TrimSpace(f)
			switch f {
			case "":
			case store.GroupKey, store.GroupAccount, store.GroupModel, store.GroupDay:
				q.GroupBy = append(q.GroupBy, f)
			default:
				return q, fmt.Errorf("group_by: %q is not one of key, account, model, day", truncate(f))
			}
		}
	}
	return q, nil
}

func parseUsageTime(s string) (t time.Time, date bool, err error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, true, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), false, nil
	}
	return time.Time{}, false, fmt.Errorf("%q is neither a date (2026-12-01) nor an RFC 3339 time (2026-12-01T15:04:05Z)", truncate(s))
}
