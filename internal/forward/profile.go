package forward

import (
	"net/http"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// The upstream profile (internal/identity) comes from the broker with the
// token (brokerclient puts it in Config.Profile); the proxy's own identity
// flags (Config.Editor, non-empty fields) override it, and the proxy logs
// that once per profile. The preset headers are rebuilt once per profile
// change: a request pays one atomic load and a pointer compare.

// profilePreset is the preset headers made for one held profile.
type profilePreset struct {
	cur    *identity.Current
	p      *presetHeaders
	editor identity.Editor
}

// currentPreset returns the preset headers of the profile held now.
func (h *Handler) currentPreset() *presetHeaders {
	return h.currentProfile().p
}

// currentEditor returns the identity sent now.
func (h *Handler) currentEditor() identity.Editor {
	return h.currentProfile().editor
}

func (h *Handler) currentProfile() *profilePreset {
	if h.profile == nil {
		return h.fixedPreset
	}
	cur := h.profile.Get()
	if pp := h.preset.Load(); pp != nil && pp.cur == cur {
		return pp
	}
	eff, overridden := cur.Profile.Override(h.flagEditor)
	eff.Editor = eff.WithDefaults()
	p := newPresetHeaders(eff.Editor, h.intents)
	for k, v := range eff.Headers {
		p.identity = append(p.identity, presetHeader{http.CanonicalHeaderKey(k), []string{v}})
	}
	pp := &profilePreset{cur: cur, p: p, editor: eff.Editor}
	if old := h.preset.Swap(pp); old == nil || old.cur.Revision != cur.Revision {
		h.log.Info("upstream profile in use", "revision", cur.Revision, "source", cur.Source,
			"editor_version", eff.Version, "editor_plugin_version", eff.PluginVersion, "api_version", eff.APIVersion)
		if len(overridden) > 0 {
			h.log.Warn("this proxy's flags override the broker's upstream profile", "flags", overridden,
				"editor_version", eff.Version, "editor_plugin_version", eff.PluginVersion, "user_agent", eff.UserAgent, "api_version", eff.APIVersion)
		}
	}
	return pp
}

// Interaction types (X-Interaction-Type, docs/protocol.md section 4): the
// intent unless the request is a subagent's or a compaction.
const (
	interactionSubagent   = "conversation-subagent"
	interactionCompaction = "conversation-compaction"
)

// clientInteractionTypes are the X-Interaction-Type values a client may
// set itself (forwarded as given); anything else is ignored.
var clientInteractionTypes = map[string]bool{
	"conversation-agent": true, interactionSubagent: true, interactionCompaction: true, "conversation-background": true,
}

// interactionType decides X-Interaction-Type of a request: a value the
// client set from clientInteractionTypes, else "conversation-compaction"
// for a compaction request (a Messages body whose last turn carries Claude
// Code's compaction instruction, found by the body's one scan:
// inspect.Result.Compaction), else "" (the caller sends the intent).
func interactionType(in http.Header, compaction bool) string {
	if v := in.Get("X-Interaction-Type"); clientInteractionTypes[v] {
		return v
	}
	if compaction {
		return interactionCompaction
	}
	return ""
}
