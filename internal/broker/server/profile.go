package server

import (
	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// openProfile makes the upstream profile the broker holds and pushes: the
// built-in default with the broker's identity flags applied, and over it
// the --upstream-profile file when there is one (read now: a bad file
// stops the start; later a bad edit keeps the profile held).
func (s *Server) openProfile(im *broker.IdentityMetrics) (*identity.Holder, error) {
	base, _ := identity.DefaultProfile().Override(s.cfg.Exchange.Editor)
	h := identity.NewHolder(base, "")
	if s.cfg.UpstreamProfile == "" {
		im.Held(h.Get())
		s.log.Info("upstream profile: the built-in default (no --upstream-profile)", "revision", h.Get().Revision,
			"editor_version", base.Version, "editor_plugin_version", base.PluginVersion, "api_version", base.APIVersion)
		return h, nil
	}
	w, err := identity.NewWatcher(identity.WatchConfig{
		Path: s.cfg.UpstreamProfile, Base: base, Holder: h, Interval: s.cfg.UpstreamProfilePoll,
		Clock: s.cfg.Clock, Logger: s.cfg.Logger,
		OnLoad: func(err error) {
			im.Loaded(err)
			im.Held(h.Get())
		},
	})
	if err != nil {
		return nil, err
	}
	s.profileWatcher = w
	return h, nil
}
