package broker

import (
	"context"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func newTestProxies(t *testing.T, clk clock.Clock, max int, known ...string) (*Proxies, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := ProxiesConfig{MaxProxies: max, Expiry: 10 * time.Minute, Clock: clk, Registerer: reg}
	if len(known) > 0 {
		cfg.KnownAccount = func(name string) bool {
			for _, k := range known {
				if k == name {
					return true
				}
			}
			return false
		}
	}
	p, err := NewProxies(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, reg
}

func proxyInfo(id, instance string, started time.Time) *brokerv1.ProxyInfo {
	return &brokerv1.ProxyInfo{Id: id, Instance: instance, Version: "v1.2.3", StartedAt: timestamppb.New(started)}
}

// limitStatus is a status with one account's session limit seen at seen.
func limitStatus(at, seen time.Time, account string, percent float64) *brokerv1.ProxyStatus {
	return &brokerv1.ProxyStatus{At: timestamppb.New(at), Accounts: []*brokerv1.AccountUsageLimits{{
		Account: account, Limits: []*brokerv1.UsageLimit{{Kind: "session", PercentRemaining: percent, Entitlement: 100, Remaining: percent,
			ResetAt: timestamppb.New(t0.Add(5 * time.Hour)), SeenAt: timestamppb.New(seen)}},
	}}}
}

func mustConnect(t *testing.T, p *Proxies, info *brokerv1.ProxyInfo) func() {
	t.Helper()
	release, err := p.Connect(info, "127.0.0.1:1")
	if err != nil {
		t.Fatalf("Connect(%s) = %v", info.GetId(), err)
	}
	return release
}

// TestProxiesMergeLatest: per account and kind the reading seen last wins,
// across proxies, with each proxy's clock offset taken out.
func TestProxiesMergeLatest(t *testing.T) {
	clk := clock.NewFake(t0)
	p, reg := newTestProxies(t, clk, 0, "alice")
	a, b := proxyInfo("a", "ia", t0), proxyInfo("b", "ib", t0)
	defer mustConnect(t, p, a)()
	defer mustConnect(t, p, b)()

	// a saw 40 % two seconds before its report; its clock is an hour ahead.
	skew := time.Hour
	if err := p.Report(a, "", limitStatus(t0.Add(skew), t0.Add(skew-2*time.Second), "alice", 40)); err != nil {
		t.Fatal(err)
	}
	got := p.UsageLimits("alice")
	if len(got) != 1 || got[0].GetPercentRemaining() != 40 || got[0].GetProxyId() != "a" || !got[0].GetSeenAt().AsTime().Equal(t0.Add(-2*time.Second)) {
		t.Fatalf("UsageLimits(alice) = %v; want 40 %% from a, seen at t0-2s", got)
	}
	// b reports a reading seen before a's: a's stays.
	if err := p.Report(b, "", limitStatus(t0, t0.Add(-5*time.Second), "alice", 90)); err != nil {
		t.Fatal(err)
	}
	if got := p.UsageLimits("alice"); got[0].GetPercentRemaining() != 40 {
		t.Errorf("after an older reading, percent = %v; want 40", got[0].GetPercentRemaining())
	}
	// b saw a newer one.
	clk.Advance(time.Second)
	if err := p.Report(b, "", limitStatus(t0.Add(time.Second), t0.Add(time.Second), "alice", 35)); err != nil {
		t.Fatal(err)
	}
	if got := p.UsageLimits("alice"); got[0].GetPercentRemaining() != 35 || got[0].GetProxyId() != "b" {
		t.Errorf("after a newer reading = %v; want 35 %% from b", got[0])
	}
	// b's next report, which a slower transit of the last one makes look
	// older: still b's newer reading.
	if err := p.Report(b, "", limitStatus(t0.Add(2*time.Second), t0.Add(-time.Second), "alice", 34)); err != nil {
		t.Fatal(err)
	}
	if got := p.UsageLimits("alice"); got[0].GetPercentRemaining() != 34 {
		t.Errorf("after b's next report = %v; want 34 %%", got[0])
	}
	// An account the broker does not serve is not merged.
	if err := p.Report(a, "", limitStatus(t0.Add(skew+time.Second), t0.Add(skew+time.Second), "mallory", 1)); err != nil {
		t.Fatal(err)
	}
	if got := p.UsageLimits("mallory"); got != nil {
		t.Errorf("UsageLimits(mallory) = %v; want none", got)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "copilot_broker_account_usage_limit_percent_remaining", "alice", "session")); v != 34 {
		t.Errorf("percent metric = %v; want 34", v)
	}
}

// gaugeOf finds one series of a gathered metric by its label values.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name string, values ...string) prometheus.Collector {
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
			for i, l := range m.GetLabel() {
				if i >= len(values) || l.GetValue() != values[i] {
					continue metrics
				}
			}
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
			g.Set(m.GetGauge().GetValue() + m.GetCounter().GetValue())
			return g
		}
	}
	t.Fatalf("no series %s%v", name, values)
	return nil
}

// TestProxiesNotify: watchers wake on a changed value, not on repeats, and
// at most once per proxyNotifyGap.
func TestProxiesNotify(t *testing.T) {
	clk := clock.NewFake(t0)
	p, _ := newTestProxies(t, clk, 0)
	a := proxyInfo("a", "ia", t0)
	defer mustConnect(t, p, a)()
	report := func(percent float64) {
		t.Helper()
		if err := p.Report(a, "", limitStatus(clk.Now(), clk.Now(), "alice", percent)); err != nil {
			t.Fatal(err)
		}
	}
	ch := p.Changed()
	report(50)
	if !closed(ch) {
		t.Fatal("a first reading woke no watcher")
	}
	ch = p.Changed()
	clk.Advance(2 * time.Second)
	report(50) // the same value, seen again
	if closed(ch) {
		t.Error("a repeated value woke the watchers")
	}
	report(49) // a new value, 2 s after the last wake-up
	if !closed(ch) {
		t.Fatal("a new value woke no watcher")
	}
	ch = p.Changed()
	report(48) // right after the last wake-up: deferred
	if closed(ch) {
		t.Error("a second wake-up within the gap")
	}
	if got := p.UsageLimits("alice"); got[0].GetPercentRemaining() != 48 {
		t.Errorf("the value is %v before the wake-up; want 48 already", got[0].GetPercentRemaining())
	}
	clk.Advance(proxyNotifyGap)
	if !closed(ch) {
		t.Error("the deferred wake-up did not come after the gap")
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestProxiesExpiryAndBounds: unheard proxies are forgotten; at the bound a
// new proxy takes the place of the disconnected one heard from least
// recently, or is refused when all are connected; a restarted proxy
// replaces its old record.
func TestProxiesExpiryAndBounds(t *testing.T) {
	clk := clock.NewFake(t0)
	p, reg := newTestProxies(t, clk, 2)
	releaseA := mustConnect(t, p, proxyInfo("a", "ia", t0))
	releaseB := mustConnect(t, p, proxyInfo("b", "ib", t0))
	if _, err := p.Connect(proxyInfo("c", "ic", t0), ""); err != ErrTooManyProxies {
		t.Fatalf("a third proxy with two connected: err = %v; want ErrTooManyProxies", err)
	}
	releaseA()
	clk.Advance(time.Minute)
	releaseB()
	releaseC := mustConnect(t, p, proxyInfo("c", "ic", t0)) // takes a's place (heard from least recently)
	defer releaseC()
	if ids := proxyIDs(p.List()); ids != "b,c" {
		t.Errorf("proxies = %s; want b,c", ids)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "copilot_broker_proxies_forgotten_total", "capacity")); v != 1 {
		t.Errorf("forgotten{capacity} = %v; want 1", v)
	}
	// b restarts: its old record goes.
	releaseB2 := mustConnect(t, p, proxyInfo("b", "ib2", t0.Add(time.Minute)))
	if got := p.List(); len(got) != 2 || got[0].GetInfo().GetInstance() != "ib2" || !got[0].GetConnected() {
		t.Errorf("after b restarted: %v", got)
	}
	releaseB2()
	// b is unheard for the expiry: forgotten; c, connected and silent too.
	clk.Advance(10 * time.Minute)
	if got := p.List(); len(got) != 0 {
		t.Errorf("after the expiry: %v; want none", got)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "copilot_broker_proxies_forgotten_total", "expired")); v != 2 {
		t.Errorf("forgotten{expired} = %v; want 2", v)
	}
	// c reports again on its open stream: tracked again.
	if err := p.Report(proxyInfo("c", "ic", t0), "", &brokerv1.ProxyStatus{}); err != nil {
		t.Fatal(err)
	}
	if got := p.List(); len(got) != 1 || !got[0].GetConnected() {
		t.Errorf("c after reporting again: %v", got)
	}
}

func proxyIDs(ps []*brokerv1.Proxy) string {
	ids := make([]string, len(ps))
	for i, x := range ps {
		ids[i] = x.GetInfo().GetId()
	}
	return strings.Join(ids, ",")
}

// TestProxiesErrorCounts: cumulative counts become the fleet's counter by
// their growth; a proxy that started before the broker starts as a
// baseline.
func TestProxiesErrorCounts(t *testing.T) {
	clk := clock.NewFake(t0)
	p, reg := newTestProxies(t, clk, 0)
	old, fresh := proxyInfo("old", "i1", t0.Add(-time.Hour)), proxyInfo("new", "i2", t0.Add(time.Second))
	defer mustConnect(t, p, old)()
	defer mustConnect(t, p, fresh)()
	report := func(info *brokerv1.ProxyInfo, counts map[string]uint64) {
		t.Helper()
		if err := p.Report(info, "", &brokerv1.ProxyStatus{UpstreamErrors: counts}); err != nil {
			t.Fatal(err)
		}
	}
	report(old, map[string]uint64{"rate_limited": 100})   // baseline
	report(fresh, map[string]uint64{"rate_limited": 2})   // counted
	report(old, map[string]uint64{"rate_limited": 103})   // +3
	report(fresh, map[string]uint64{"quota_exceeded": 1}) // +1, rate_limited unsent: unchanged
	for kind, want := range map[string]float64{"rate_limited": 5, "quota_exceeded": 1} {
		if v := testutil.ToFloat64(gaugeOf(t, reg, "copilot_broker_proxy_upstream_errors_total", kind)); v != want {
			t.Errorf("errors{%s} = %v; want %v", kind, v, want)
		}
	}
	if got := p.List()[0].GetUpstreamErrors()["rate_limited"]; got != 2 {
		t.Errorf("List: new's rate_limited = %d; want 2", got)
	}
}

// TestCheckReport: malformed reports are refused with a message naming the
// field.
func TestCheckReport(t *testing.T) {
	info := proxyInfo("p1", "i1", t0)
	limit := func(mod func(*brokerv1.UsageLimit)) *brokerv1.ReportStatusRequest {
		st := limitStatus(t0, t0, "alice", 50)
		mod(st.Accounts[0].Limits[0])
		return &brokerv1.ReportStatusRequest{Proxy: info, Status: st}
	}
	tests := []struct {
		name  string
		first *brokerv1.ProxyInfo
		req   *brokerv1.ReportStatusRequest
		want  string // "" for sound
	}{
		{"hello", nil, &brokerv1.ReportStatusRequest{Proxy: info}, ""},
		{"hello and status", nil, &brokerv1.ReportStatusRequest{Proxy: info, Status: limitStatus(t0, t0, "", 5)}, ""},
		{"status after hello", info, &brokerv1.ReportStatusRequest{Status: limitStatus(t0, t0, "alice", 5)}, ""},
		{"no hello", nil, &brokerv1.ReportStatusRequest{Status: &brokerv1.ProxyStatus{}}, "must say who the proxy is"},
		{"changed identity", info, &brokerv1.ReportStatusRequest{Proxy: proxyInfo("p2", "i1", t0)}, "proxy changed"},
		{"bad id", nil, &brokerv1.ReportStatusRequest{Proxy: proxyInfo("a b", "i1", t0)}, `id "a b"`},
		{"no instance", nil, &brokerv1.ReportStatusRequest{Proxy: proxyInfo("p", "", t0)}, "instance"},
		{"no start", nil, &brokerv1.ReportStatusRequest{Proxy: &brokerv1.ProxyInfo{Id: "p", Instance: "i"}}, "started_at missing"},
		{"future start", nil, &brokerv1.ReportStatusRequest{Proxy: proxyInfo("p", "i", t0.Add(2*time.Hour))}, "in the future"},
		{"percent over 100", nil, limit(func(l *brokerv1.UsageLimit) { l.PercentRemaining = 101 }), "percent_remaining 101"},
		{"bad kind", nil, limit(func(l *brokerv1.UsageLimit) { l.Kind = "Session!" }), "kind"},
		{"negative entitlement", nil, limit(func(l *brokerv1.UsageLimit) { l.Entitlement = -1 }), "entitlement"},
		{"bad account", nil, &brokerv1.ReportStatusRequest{Proxy: info, Status: limitStatus(t0, t0, "a/b", 5)}, `account "a/b"`},
		{"bad error class", nil, &brokerv1.ReportStatusRequest{Proxy: info, Status: &brokerv1.ProxyStatus{UpstreamErrors: map[string]uint64{"Rate Limited": 1}}}, "upstream_errors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkReport(tt.first, tt.req, t0)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("checkReport = %v; want %q", err, tt.want)
			}
		})
	}
}

// TestAccountUsageLimits: an account's status carries the merged limits,
// and its watchers see a new reading.
func TestAccountUsageLimits(t *testing.T) {
	clk := clock.NewFake(t0)
	p, _ := newTestProxies(t, clk, 0)
	svc, err := NewService(Config{Accounts: map[string]Source{"alice": newFake(validState(1))}, Proxies: p, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	set := svc.set.Load()
	info := proxyInfo("p1", "i1", t0)
	defer mustConnect(t, p, info)()
	if err := p.Report(info, "", limitStatus(t0, t0, "alice", 3)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select { // the account's view follows
	case <-set.changed:
	case <-ctx.Done():
		t.Fatal("the account set did not change after a usage limit")
	}
	resp, err := svc.ListAccounts(ctx, &brokerv1.ListAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if l := resp.GetAccounts()[0].GetUsageLimits(); len(l) != 1 || l[0].GetKind() != "session" || l[0].GetPercentRemaining() != 3 {
		t.Errorf("alice's usage limits = %v; want session 3 %%", l)
	}
}

// TestListProxiesAdminOnly: only an admin key lists proxies; only a
// proxy's key reports.
func TestListProxiesAdminOnly(t *testing.T) {
	p, _ := newTestProxies(t, clock.NewFake(t0), 0)
	s := NewProxyService(p, 0)
	proxyCtx := context.WithValue(context.Background(), keyCtxKey{}, &keys.Key{Name: "proxy"})
	adminCtx := context.WithValue(context.Background(), keyCtxKey{}, &keys.Key{Name: "ops", Admin: true})
	if _, err := s.ListProxies(proxyCtx, &brokerv1.ListProxiesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListProxies(proxy key) = %v; want PERMISSION_DENIED", err)
	}
	if _, err := s.ListProxies(adminCtx, &brokerv1.ListProxiesRequest{}); err != nil {
		t.Errorf("ListProxies(admin key) = %v", err)
	}
	if err := s.ReportStatus(&fakeReportStream{ctx: adminCtx}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ReportStatus(admin key) = %v; want PERMISSION_DENIED", err)
	}
}

type fakeReportStream struct {
	brokerv1.ProxyService_ReportStatusServer
	ctx  context.Context
	msgs []*brokerv1.ReportStatusRequest // Recv hands them out, then waits for ctx
	sent chan *brokerv1.ReportStatusResponse
}

func (f fakeReportStream) Context() context.Context { return f.ctx }

func (f *fakeReportStream) Recv() (*brokerv1.ReportStatusRequest, error) {
	if len(f.msgs) == 0 {
		<-f.ctx.Done()
		return nil, f.ctx.Err()
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func (f *fakeReportStream) Send(r *brokerv1.ReportStatusResponse) error {
	f.sent <- r
	return nil
}

// TestReportStatusStream: a sound report is acknowledged (with the
// broker's interval) and the proxy listed until its stream ends; a
// malformed one ends the stream with INVALID_ARGUMENT saying what is wrong.
func TestReportStatusStream(t *testing.T) {
	p, reg := newTestProxies(t, clock.NewFake(t0), 0)
	s := NewProxyService(p, 7*time.Second)
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), keyCtxKey{}, &keys.Key{Name: "proxy"}))
	st := &fakeReportStream{ctx: ctx, sent: make(chan *brokerv1.ReportStatusResponse, 2),
		msgs: []*brokerv1.ReportStatusRequest{{Proxy: proxyInfo("p1", "i1", t0)}, {Status: limitStatus(t0, t0, "alice", 5)}}}
	done := make(chan error)
	go func() { done <- s.ReportStatus(st) }()
	for range 2 {
		if ack := <-st.sent; ack.GetReportInterval().AsDuration() != 7*time.Second {
			t.Errorf("ack interval = %v; want 7s", ack.GetReportInterval().AsDuration())
		}
	}
	if got := p.List(); len(got) != 1 || !got[0].GetConnected() {
		t.Errorf("while reporting: %v; want p1 connected", got)
	}
	cancel()
	<-done
	if got := p.List(); len(got) != 1 || got[0].GetConnected() {
		t.Errorf("after the stream: %v; want p1 disconnected", got)
	}

	// gRPC ends a stream's context when its handler returns.
	badCtx, endBad := context.WithCancel(context.Background())
	bad := &fakeReportStream{ctx: badCtx, msgs: []*brokerv1.ReportStatusRequest{{Status: &brokerv1.ProxyStatus{}}}}
	err := s.ReportStatus(bad)
	endBad()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "must say who the proxy is") {
		t.Errorf("a report without the proxy = %v; want INVALID_ARGUMENT naming it", err)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "copilot_broker_proxy_reports_total", "invalid")); v != 1 {
		t.Errorf("reports{invalid} = %v; want 1", v)
	}
}

// FuzzReportStatus: any message either is refused by checkReport or is
// taken, and what is taken keeps the bounds (percentages 0 to 100, at most
// maxLimitsPerAccount kinds an account).
func FuzzReportStatus(f *testing.F) {
	for _, req := range []*brokerv1.ReportStatusRequest{
		{Proxy: proxyInfo("p1", "i1", t0), Status: limitStatus(t0, t0, "alice", 40)},
		{Proxy: proxyInfo("p1", "i1", t0), Status: &brokerv1.ProxyStatus{UpstreamErrors: map[string]uint64{"rate_limited": 3}}},
		{Proxy: proxyInfo("p1", "i1", t0)},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req brokerv1.ReportStatusRequest
		if proto.Unmarshal(b, &req) != nil || checkReport(nil, &req, t0) != nil {
			return
		}
		p, _ := newTestProxies(t, clock.NewFake(t0), 0)
		release, err := p.Connect(req.GetProxy(), "")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if req.GetStatus() == nil {
			return
		}
		if err := p.Report(req.GetProxy(), "", req.GetStatus()); err != nil {
			t.Fatal(err)
		}
		for _, a := range req.GetStatus().GetAccounts() {
			got := p.UsageLimits(a.GetAccount())
			if len(got) > maxLimitsPerAccount {
				t.Errorf("%d limits for %q", len(got), a.GetAccount())
			}
			for _, l := range got {
				if v := l.GetPercentRemaining(); !(v >= 0 && v <= 100) {
					t.Errorf("percent %v taken", v)
				}
			}
		}
	})
}
