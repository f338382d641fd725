package headers

import (
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// Config configures a [Builder].
type Config struct {
	// Editor is the proxy's identity flags as given: its set fields
	// override the upstream profile's.
	Editor identity.Editor
	// Profile is the upstream profile the broker pushes; nil: Editor with
	// its defaults.
	Profile *identity.Holder
	// Intents are the Openai-Intent values; zero fields take
	// [DefaultIntents]'.
	Intents Intents
	// Forward are client header names forwarded besides the allow list.
	Forward []string
	// AnthropicBetas are the anthropic-beta patterns forwarded on
	// /v1/messages; nil means [DefaultAnthropicBetas], empty none.
	AnthropicBetas []string
	// BetasDropped counts the dropped betas by "beta"; nil: not counted.
	BetasDropped *prometheus.CounterVec
	// Logger gets the profile in use and the dropped names. Default: discard.
	Logger *slog.Logger
}

// Facts are what the headers of a request depend on besides its target:
// learned from the client's request by the body scan.
type Facts struct {
	RequestID string
	Agent     bool // X-Initiator: agent
	Vision    bool // Copilot-Vision-Request: true
	// Interaction is X-Interaction-Type when not the intent
	// ([InteractionType]).
	Interaction string
}

// Builder builds the upstream headers of requests. It is safe for
// concurrent use.
type Builder struct {
	policy     *policy
	intents    Intents
	flagEditor identity.Editor
	profile    *identity.Holder
	preset     atomic.Pointer[profilePreset] // of the profile last seen (profile.go)
	fixed      *profilePreset                // without a profile
	log        *slog.Logger
}

// New returns a Builder configured by cfg.
func New(cfg Config) *Builder {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	betas := cfg.AnthropicBetas
	if betas == nil {
		betas = DefaultAnthropicBetas()
	}
	dropped := cfg.BetasDropped
	if dropped == nil {
		dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anthropic_betas_dropped_total"}, []string{"beta"})
	}
	b := &Builder{
		policy:     newPolicy(cfg.Forward, newBetaFilter(betas, dropped, log), log),
		intents:    cfg.Intents.WithDefaults(),
		flagEditor: cfg.Editor,
		profile:    cfg.Profile,
		log:        log,
	}
	fixed := cfg.Editor.WithDefaults()
	b.fixed = &profilePreset{p: newPreset(fixed, b.intents), editor: fixed}
	return b
}

// Upstream returns the headers of a request to target: the allowed client
// headers of in, the identity, the endpoint's Openai-Intent, and
// X-Request-Id, X-Initiator (on a request with a body) and
// Copilot-Vision-Request from f.
func (b *Builder) Upstream(target string, hasBody bool, in http.Header, f Facts) http.Header {
	hd := b.policy.filter(target, in)
	p := b.current().p
	for _, kv := range p.identity {
		hd[kv.name] = kv.vals
	}
	intent := p.intents[endpointOf(target)]
	hd["Openai-Intent"] = intent
	// Since 2026 the reference client sends X-Interaction-Type on every
	// call (the intent unless overridden) and X-Agent-Task-Id equal to the
	// request id (docs/protocol.md section 4).
	if f.Interaction != "" {
		hd["X-Interaction-Type"] = []string{f.Interaction}
	} else {
		hd["X-Interaction-Type"] = intent
	}
	rid := []string{f.RequestID}
	hd["X-Request-Id"] = rid
	hd["X-Agent-Task-Id"] = rid
	if hasBody {
		if f.Agent {
			hd["X-Initiator"] = p.agent
		} else {
			hd["X-Initiator"] = p.user
		}
	}
	if f.Vision {
		hd["Copilot-Vision-Request"] = p.vision
	}
	return hd
}

// Interaction types (X-Interaction-Type, docs/protocol.md section 4): the
// intent unless the request is a subagent's or a compaction.
const (
	interactionSubagent   = "conversation-subagent"
	interactionCompaction = "conversation-compaction"
)

// clientInteractionType reports whether v is an X-Interaction-Type value a
// client may set itself (forwarded as given); anything else is ignored.
func clientInteractionType(v string) bool {
	switch v {
	case "conversation-agent", interactionSubagent, interactionCompaction, "conversation-background":
		return true
	}
	return false
}

// InteractionType decides X-Interaction-Type of a request ([Facts]): a
// value the client set that [clientInteractionType] accepts, else
// "conversation-compaction" for a compaction request (a Messages body
// whose last turn carries Claude Code's compaction instruction, found by
// the body's one scan: inspect.Result.Compaction), else "" (the intent is
// sent).
func InteractionType(in http.Header, compaction bool) string {
	if v := in.Get("X-Interaction-Type"); clientInteractionType(v) {
		return v
	}
	if compaction {
		return interactionCompaction
	}
	return ""
}

// preset is the header values every request shares, made once: setting
// them is then a map assignment, not a canonicalisation and a new
// one-element slice each. The slices are shared between requests and never
// written: net/http's Set and Add replace or grow a slice, never write into
// one (and a one-element slice has no room to grow into).
type preset struct {
	identity []presetHeader         // canonical names
	intents  [numEndpoints][]string // by endpointOf
	agent    []string
	user     []string
	vision   []string
}

type presetHeader struct {
	name string
	vals []string
}

func newPreset(e identity.Editor, in Intents) *preset {
	id := http.Header{}
	e.SetAPIHeaders(id)
	p := &preset{agent: []string{"agent"}, user: []string{"user"}, vision: []string{"true"}}
	for name, vals := range id {
		p.identity = append(p.identity, presetHeader{name, vals})
	}
	for ep, v := range in.values() {
		p.intents[ep] = []string{v}
	}
	return p
}
