package pool

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a [Tracker]'s view at scrape time:
//
//   - copilot_proxy_account_inflight{account}: requests in flight.
//   - copilot_proxy_account_out{account,reason}: 1 while the account is out
//     of its pools ("rate_limited", "usage_limited", "quota_spent",
//     "token_refused") or busy ("usage_reserve": less than the reserve of
//     a session or weekly limit left, used only when no other member is).
//   - copilot_proxy_account_out_until_timestamp_seconds{account}: when a
//     rate limit or spent quota ends (absent when not out, or not known).
//   - copilot_proxy_quota_remaining{account,kind},
//     copilot_proxy_quota_entitlement{account,kind} (0 when unlimited),
//     copilot_proxy_quota_reset_timestamp_seconds{account,kind}: the last
//     quota snapshot seen in the upstream's x-quota-snapshot-* headers or
//     from the broker; kinds "session" and "weekly" are the usage limits
//     of x-usage-ratelimit-session / -weekly.
//
// Accounts are those configured and those the broker lists; kinds are at
// most a few per account, so the series stay bounded.
type Collector struct{ t *Tracker }

// NewCollector returns the collector of t.
func NewCollector(t *Tracker) *Collector { return &Collector{t} }

var (
	descInflight = prometheus.NewDesc("copilot_proxy_account_inflight",
		"Requests in flight per account.", []string{"account"}, nil)
	descOut = prometheus.NewDesc("copilot_proxy_account_out",
		"1 while an account is out of its pools, by reason: rate_limited (429), usage_limited (429 with a session or weekly limit used up), quota_spent (402 or exhausted quota), token_refused (401 after a refresh), usage_reserve (busy: below --pool-reserve-percent of a usage limit).",
		[]string{"account", "reason"}, nil)
	descOutUntil = prometheus.NewDesc("copilot_proxy_account_out_until_timestamp_seconds",
		"When an account out for a rate limit or a spent quota comes back, as a Unix time.", []string{"account"}, nil)
	descRemaining = prometheus.NewDesc("copilot_proxy_quota_remaining",
		"Quota left this period per account and kind, from the last snapshot seen.", []string{"account", "kind"}, nil)
	descEntitlement = prometheus.NewDesc("copilot_proxy_quota_entitlement",
		"Quota allowance per period per account and kind (0: unlimited), from the last snapshot seen.", []string{"account", "kind"}, nil)
	descReset = prometheus.NewDesc("copilot_proxy_quota_reset_timestamp_seconds",
		"When the quota resets, as a Unix time, from the last snapshot seen.", []string{"account", "kind"}, nil)
)

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInflight, descOut, descOutUntil, descRemaining, descEntitlement, descReset} {
		ch <- d
	}
}

// Collect implements [prometheus.Collector].
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.t.Statuses() {
		ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(st.InFlight), st.Name)
		if st.Out != "" {
			ch <- prometheus.MustNewConstMetric(descOut, prometheus.GaugeValue, 1, st.Name, st.Out)
			if !st.Until.IsZero() {
				ch <- prometheus.MustNewConstMetric(descOutUntil, prometheus.GaugeValue, float64(st.Until.Unix()), st.Name)
			}
		}
		for _, q := range st.Quota {
			ch <- prometheus.MustNewConstMetric(descRemaining, prometheus.GaugeValue, q.Remaining, st.Name, q.Kind)
			ch <- prometheus.MustNewConstMetric(descEntitlement, prometheus.GaugeValue, q.Entitlement, st.Name, q.Kind)
			if !q.Reset.IsZero() {
				ch <- prometheus.MustNewConstMetric(descReset, prometheus.GaugeValue, float64(q.Reset.Unix()), st.Name, q.Kind)
			}
		}
	}
}
