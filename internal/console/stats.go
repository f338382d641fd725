package console

import (
	"strings"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
)

// Stats is the overview's view of the broker's own metrics.
type Stats struct {
	// Watchers is the number of open WatchToken streams by account (each
	// proxy holds one per account it serves; REST watches count too).
	Watchers map[string]int `json:"watchers"`
	// AccountWatchers is the number of open WatchAccounts streams
	// (consoles and dashboards).
	AccountWatchers int `json:"account_watchers"`
	// KeyWatchers is the number of open WatchKeys streams: proxies that
	// follow the broker's managed keys.
	KeyWatchers int `json:"key_watchers"`
	// RefreshErrors counts failed token exchanges with GitHub by result
	// (rejected, no_access, rate_limited, error) since Since.
	RefreshErrors map[string]int `json:"refresh_errors"`
	// UpstreamErrors counts the Copilot API's error answers the proxies
	// reported (copilot_broker_proxy_upstream_errors_total) by class since
	// Since.
	UpstreamErrors map[string]int `json:"upstream_errors"`
	Since          time.Time      `json:"since"`
}

// upstreamPrefix marks the upstream error classes among the sampled
// counters (the refresh results have no colon).
const upstreamPrefix = "upstream:"

// statsWindow is how far back RefreshErrors and UpstreamErrors look.
const statsWindow = time.Hour

// stats reads the broker's registry. For the last hour's errors it keeps
// one sample of the refresh counters a minute (taken when asked, at most
// statsWindow/time.Minute+1 of them) and subtracts the oldest one still in
// the window.
type stats struct {
	clock    clock.Clock
	gatherer prometheus.Gatherer

	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at     time.Time
	counts map[string]float64
}

func newStats(clk clock.Clock, g prometheus.Gatherer) *stats {
	return &stats{clock: clk, gatherer: g}
}

func (s *stats) read() (Stats, error) {
	now := s.clock.Now()
	out := Stats{Watchers: map[string]int{}, RefreshErrors: map[string]int{}, UpstreamErrors: map[string]int{}, Since: now}
	if s.gatherer == nil {
		return out, nil
	}
	mfs, err := s.gatherer.Gather()
	if err != nil {
		return out, err
	}
	counts := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			label := func(name string) string {
				for _, l := range m.GetLabel() {
					if l.GetName() == name {
						return l.GetValue()
					}
				}
				return ""
			}
			switch mf.GetName() {
			case "copilot_broker_watchers":
				out.Watchers[label("account")] = int(m.GetGauge().GetValue())
			case "copilot_broker_account_watchers":
				out.AccountWatchers = int(m.GetGauge().GetValue())
			case "copilot_broker_key_watchers":
				out.KeyWatchers = int(m.GetGauge().GetValue())
			case "copilot_broker_token_refreshes_total":
				if r := label("result"); r != "success" {
					counts[r] += m.GetCounter().GetValue()
				}
			case "copilot_broker_proxy_upstream_errors_total":
				counts[upstreamPrefix+label("kind")] += m.GetCounter().GetValue()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.samples); n == 0 || now.Sub(s.samples[n-1].at) >= time.Minute {
		s.samples = append(s.samples, sample{at: now, counts: counts})
	}
	for len(s.samples) > 1 && now.Sub(s.samples[0].at) > statsWindow {
		s.samples = s.samples[1:]
	}
	base := s.samples[0]
	out.Since = base.at
	for r, v := range counts {
		d := int(v - base.counts[r])
		switch {
		case d <= 0:
		case strings.HasPrefix(r, upstreamPrefix):
			out.UpstreamErrors[r[len(upstreamPrefix):]] = d
		default:
			out.RefreshErrors[r] = d
		}
	}
	return out, nil
}
