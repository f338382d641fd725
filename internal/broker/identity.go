package broker

import (
	"context"
	"errors"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"github.com/prometheus/client_golang/prometheus"
)

// The upstream profile (internal/identity) is held by the broker: every
// Token message carries it, a change of it is sent to every WatchToken
// stream at once, and a refusal of it, by the exchange or by a proxy's
// Copilot API call (RefreshToken with REFRESH_REASON_IDENTITY_REJECTED),
// shows as ACCOUNT_STATUS_IDENTITY_REJECTED until the profile changes or,
// for the exchange, an exchange succeeds. Readiness does not follow it.

// identityAlarm is one account's last refusal of the profile by the API.
type identityAlarm struct {
	detail   string
	at       time.Time
	revision string // of the profile refused
}

// profileMsg is the API form of a held profile, made once per profile.
type profileMsg struct {
	cur *identity.Current
	msg *brokerv1.UpstreamProfile
}

// currentProfile returns the held profile and its API form; nil, nil when
// the service holds none.
func (s *Service) currentProfile() (*identity.Current, *brokerv1.UpstreamProfile) {
	if s.profile == nil {
		return nil, nil
	}
	cur := s.profile.Get()
	if c := s.profileMsg.Load(); c != nil && c.cur == cur {
		return cur, c.msg
	}
	e := cur.Profile.WithDefaults()
	m := &brokerv1.UpstreamProfile{
		EditorVersion: e.Version, EditorPluginVersion: e.PluginVersion, UserAgent: e.UserAgent,
		IntegrationId: e.IntegrationID, ExchangeApiVersion: e.ExchangeAPIVersion, ApiVersion: e.APIVersion,
		Headers: cur.Profile.Headers, Revision: cur.Revision, Source: cur.Source,
	}
	s.profileMsg.Store(&profileMsg{cur: cur, msg: m})
	return cur, m
}

// profileChanged returns a channel closed at the next profile change; nil
// (never ready) without a profile.
func (s *Service) profileChanged() <-chan struct{} {
	if s.profile == nil {
		return nil
	}
	return s.profile.Changed()
}

// identityRejected records a proxy's report that the Copilot API refused
// the profile for account a.
func (s *Service) identityRejected(ctx context.Context, a *account, detail string) {
	cur, _ := s.currentProfile()
	al := &identityAlarm{detail: detail, at: s.clock.Now()}
	source := ""
	if cur != nil {
		al.revision, source = cur.Revision, cur.Source
	}
	a.alarm.Store(al)
	n := a.rejections.Add(1)
	s.identityMetrics.rejected(a.name, "api")
	if source == "" {
		source = "(none: the built-in default; start the broker with --upstream-profile FILE)"
	}
	s.log.Error("the Copilot API refused the upstream profile (identity_rejected): edit the profile file",
		"account", a.name, "key", KeyName(ctx), "profile_file", source, "revision", al.revision,
		"detail", detail, "rejections", n)
	select {
	case a.poke <- struct{}{}:
	default:
	}
}

// accountView is an account's API form with its identity status.
func (s *Service) accountView(a *account, st tokens.State, q quota.Reading) *brokerv1.Account {
	v := accountProto(a.name, st, q)
	v.AccountStatus = brokerv1.AccountStatus_ACCOUNT_STATUS_OK
	v.UsageLimits = s.proxies.UsageLimits(a.name)
	cur, _ := s.currentProfile()
	var rev, source string
	if cur != nil {
		rev, source = cur.Revision, cur.Source
	}
	var r *brokerv1.IdentityRejection
	if st.IdentityRejected {
		r = &brokerv1.IdentityRejection{Origin: "exchange", Detail: st.LastError}
	} else if al := a.alarm.Load(); al != nil && al.revision == rev {
		r = &brokerv1.IdentityRejection{Origin: "api", Detail: al.detail, At: timestamp(al.at)}
	}
	if r != nil {
		r.ProfileRevision, r.ProfileSource, r.Count = rev, source, a.rejections.Load()
		v.AccountStatus = brokerv1.AccountStatus_ACCOUNT_STATUS_IDENTITY_REJECTED
		v.IdentityRejection = r
	}
	return v
}

// IdentityMetrics counts refusals of the upstream profile and its reloads.
type IdentityMetrics struct {
	rejectedTotal *prometheus.CounterVec
	reloads       *prometheus.CounterVec
	info          *prometheus.GaugeVec
}

// NewIdentityMetrics registers the upstream-profile metrics on reg:
// copilot_broker_identity_rejected_total{account,origin},
// copilot_broker_upstream_profile_reloads_total{result} and
// copilot_broker_upstream_profile_info{revision,source}.
func NewIdentityMetrics(reg prometheus.Registerer) *IdentityMetrics {
	m := &IdentityMetrics{
		rejectedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_identity_rejected_total",
			Help: "Refusals of the upstream profile (editor identity or API version) by account and origin (exchange: the broker's token exchange; api: reported by a proxy).",
		}, []string{"account", "origin"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_upstream_profile_reloads_total",
			Help: "Reads of the --upstream-profile file that found new content, by result (ok, invalid: the old profile was kept).",
		}, []string{"result"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "copilot_broker_upstream_profile_info",
			Help: "The upstream profile held: 1 for its revision and source file.",
		}, []string{"revision", "source"}),
	}
	m.reloads.WithLabelValues("ok")
	m.reloads.WithLabelValues("invalid")
	reg.MustRegister(m.rejectedTotal, m.reloads, m.info)
	return m
}

// init makes account's series exist at zero, so alerts and dashboards see
// the account before its first refusal.
func (m *IdentityMetrics) init(account string) {
	if m != nil {
		m.rejectedTotal.WithLabelValues(account, "exchange")
		m.rejectedTotal.WithLabelValues(account, "api")
	}
}

func (m *IdentityMetrics) rejected(account, origin string) {
	if m != nil {
		m.rejectedTotal.WithLabelValues(account, origin).Inc()
	}
}

// Loaded counts a read of the profile file: nil for a profile taken.
func (m *IdentityMetrics) Loaded(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.reloads.WithLabelValues("invalid").Inc()
		return
	}
	m.reloads.WithLabelValues("ok").Inc()
}

// Held records the profile now held.
func (m *IdentityMetrics) Held(c *identity.Current) {
	if m != nil {
		m.info.Reset()
		m.info.WithLabelValues(c.Revision, c.Source).Set(1)
	}
}

// InstrumentIdentity wraps an exchange function so that its refusals of the
// profile are counted for account.
func (m *IdentityMetrics) InstrumentIdentity(account string, f tokens.ExchangeFunc) tokens.ExchangeFunc {
	if m == nil {
		return f
	}
	return func(ctx context.Context, githubToken secret.Secret) (*tokens.CopilotToken, error) {
		tok, err := f(ctx, githubToken)
		if isIdentityRejected(err) {
			m.rejected(account, "exchange")
		}
		return tok, err
	}
}

// Forget drops a removed account's series.
func (m *IdentityMetrics) Forget(account string) {
	if m != nil {
		m.rejectedTotal.DeletePartialMatch(prometheus.Labels{"account": account})
	}
}

func isIdentityRejected(err error) bool {
	var ir *tokens.IdentityRejectedError
	return errors.As(err, &ir)
}
