package brokerclient

import (
	"context"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// takeProfile hands the upstream profile a broker message carries to the
// proxy's holder (Config.Profile). A profile that does not validate is
// logged and ignored: the one held stays.
func (c *Client) takeProfile(m *brokerv1.UpstreamProfile, via string) {
	if c.profile == nil || m == nil {
		return
	}
	if cur := c.profile.Get(); cur.Revision == m.GetRevision() && cur.Source == m.GetSource() {
		return // the common case: every message repeats the profile held
	}
	p := identity.Profile{Editor: identity.Editor{
		Version: m.GetEditorVersion(), PluginVersion: m.GetEditorPluginVersion(), UserAgent: m.GetUserAgent(),
		IntegrationID: m.GetIntegrationId(), ExchangeAPIVersion: m.GetExchangeApiVersion(), APIVersion: m.GetApiVersion(),
	}, Headers: m.GetHeaders()}
	if err := p.Validate(); err != nil {
		c.log.Error("the broker sent an upstream profile that does not validate; keeping the one held",
			"via", via, "revision", m.GetRevision(), "error", err)
		return
	}
	p.Editor = p.WithDefaults()
	if c.profile.Set(p, m.GetSource()) {
		c.log.Info("upstream profile from the broker", "via", via, "revision", p.Revision(), "source", m.GetSource(),
			"editor_version", p.Version, "editor_plugin_version", p.PluginVersion, "api_version", p.APIVersion)
	}
}

// identityReportFloor is the least time between two reports of a refused
// profile for one account.
const identityReportFloor = 5 * time.Second

// ReportIdentityRejected tells the broker that the Copilot API refused the
// upstream profile for the account (466 and kin), so that the account shows
// IDENTITY_REJECTED; in the background, at most once per
// identityReportFloor.
func (h *handle) ReportIdentityRejected(rejected *forward.Token, detail string) {
	if rejected == nil {
		return
	}
	h.reportInBackground(&h.lastIdentity, identityReportFloor, &brokerv1.RefreshTokenRequest{
		Account: h.name, RejectedGeneration: rejected.Generation,
		Reason: brokerv1.RefreshReason_REFRESH_REASON_IDENTITY_REJECTED, Detail: detail,
	}, "identity-report")
}

// reportInBackground sends req to the broker's RefreshToken from a
// goroutine the set waits for, unless one was sent less than floor ago
// (last, under h.qmu), and applies the answer.
func (h *handle) reportInBackground(last *time.Time, floor time.Duration, req *brokerv1.RefreshTokenRequest, via string) {
	c := h.set.client(h.name)
	if c == nil {
		return
	}
	now := c.clock.Now()
	h.qmu.Lock()
	if !last.IsZero() && now.Sub(*last) < floor {
		h.qmu.Unlock()
		return
	}
	*last = now
	h.qmu.Unlock()
	s := h.set
	s.mu.Lock()
	ctx := s.runCtx
	if ctx == nil || ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		resp, err := c.broker.RefreshToken(cctx, req)
		if err != nil {
			s.log.Debug("reporting to the broker failed", "account", h.name, "via", via, "error", err)
			return
		}
		c.apply(resp.GetToken(), via)
	}()
}
