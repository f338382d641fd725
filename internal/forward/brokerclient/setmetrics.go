package brokerclient

import (
	"errors"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// forgetIfNotFound drops the cached token when the broker says the account
// does not exist (it was removed, or the broker key may not read it): a
// removed account must stop serving at once, not when its token expires.
func (c *Client) forgetIfNotFound(err error) {
	if status.Code(errors.Unwrap(err)) != codes.NotFound && status.Code(err) != codes.NotFound {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.state.Load()
	if cur.tok == nil && cur.lastErr != "" {
		return
	}
	next := *cur
	next.tok, next.lastErr, next.notFound = nil, "the broker does not serve this account (NOT_FOUND)", true
	if cur.tok != nil {
		c.log.Warn("broker reports the account NOT_FOUND; dropping the cached token", "generation", cur.tok.Generation)
	}
	c.state.Store(&next)
	close(c.woken)
	c.woken = make(chan struct{})
}

// setMetrics exports the set's accounts at scrape time:
//
//   - copilot_proxy_account_connected{account}: 1 while the account's
//     WatchToken stream delivers.
//   - copilot_proxy_account_token_expiry_timestamp_seconds{account}: the
//     held token's expiry (absent without one).
//   - copilot_proxy_account_token_status{account,status}: 1 for the
//     broker's last reported status of the account's token.
type setMetrics struct{ s *Set }

var (
	descAcctConnected = prometheus.NewDesc("copilot_proxy_account_connected",
		"1 while the account's WatchToken stream to the broker is delivering, else 0.", []string{"account"}, nil)
	descAcctExpiry = prometheus.NewDesc("copilot_proxy_account_token_expiry_timestamp_seconds",
		"Expiry of the account's held Copilot token as a Unix time; absent without a token.", []string{"account"}, nil)
	descAcctStatus = prometheus.NewDesc("copilot_proxy_account_token_status",
		"1 for the broker's last reported status of the account's token (PENDING, VALID, STALE, EXPIRED, REJECTED).", []string{"account", "status"}, nil)
)

func newSetMetrics(reg prometheus.Registerer, s *Set) *setMetrics {
	m := &setMetrics{s}
	if reg != nil {
		reg.MustRegister(m)
	}
	return m
}

func (m *setMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAcctConnected
	ch <- descAcctExpiry
	ch <- descAcctStatus
}

func (m *setMetrics) Collect(ch chan<- prometheus.Metric) {
	m.s.mu.Lock()
	clients := make(map[string]*Client, len(m.s.clients))
	for n, r := range m.s.clients {
		clients[n] = r.c
	}
	m.s.mu.Unlock()
	for name, c := range clients {
		st := c.state.Load()
		conn := 0.0
		if st.connErr == nil {
			conn = 1
		}
		ch <- prometheus.MustNewConstMetric(descAcctConnected, prometheus.GaugeValue, conn, name)
		if st.tok != nil {
			ch <- prometheus.MustNewConstMetric(descAcctExpiry, prometheus.GaugeValue, float64(st.tok.ExpiresAt.Unix()), name)
		}
		if st.seen && st.status != brokerv1.TokenStatus_TOKEN_STATUS_UNSPECIFIED {
			ch <- prometheus.MustNewConstMetric(descAcctStatus, prometheus.GaugeValue, 1, name, statusName(st.status))
		}
	}
}
