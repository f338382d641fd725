package headers

import (
	"net/http"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// The upstream profile (internal/identity) comes from the broker with the
// token (brokerclient puts it in the proxy's Config.Profile); the proxy's
// own identity flags (Config.Editor, non-empty fields) override it, and the
// proxy logs that once per profile. The preset headers are rebuilt once per
// profile change: a request pays one atomic load and a pointer compare.

// profilePreset is the preset headers made for one held profile.
type profilePreset struct {
	cur    *identity.Current
	p      *preset
	editor identity.Editor
}

// Editor returns the identity sent now.
func (b *Builder) Editor() identity.Editor {
	return b.current().editor
}

// current returns the preset of the profile held now.
func (b *Builder) current() *profilePreset {
	if b.profile == nil {
		return b.fixed
	}
	cur := b.profile.Get()
	if pp := b.preset.Load(); pp != nil && pp.cur == cur {
		return pp
	}
	eff, overridden := cur.Profile.Override(b.flagEditor)
	eff.Editor = eff.WithDefaults()
	p := newPreset(eff.Editor, b.intents)
	for k, v := range eff.Headers {
		p.identity = append(p.identity, presetHeader{http.CanonicalHeaderKey(k), []string{v}})
	}
	pp := &profilePreset{cur: cur, p: p, editor: eff.Editor}
	if old := b.preset.Swap(pp); old == nil || old.cur.Revision != cur.Revision {
		b.log.Info("upstream profile in use", "revision", cur.Revision, "source", cur.Source,
			"editor_version", eff.Version, "editor_plugin_version", eff.PluginVersion, "api_version", eff.APIVersion)
		if len(overridden) > 0 {
			b.log.Warn("this proxy's flags override the broker's upstream profile", "flags", overridden,
				"editor_version", eff.Version, "editor_plugin_version", eff.PluginVersion, "user_agent", eff.UserAgent, "api_version", eff.APIVersion)
		}
	}
	return pp
}
