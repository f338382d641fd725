package forward

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// The headers of a forwarded request are built from an allow list
// (docs/protocol.md section 4, "Request headers"): agent CLIs send SDK
// telemetry and session headers (X-Stainless-*, X-App,
// X-Claude-Code-Session-Id, Anthropic-Dangerous-Direct-Browser-Access, ...)
// that are no business of the Copilot API. What a request carries upstream
// depends on the endpoint it is sent to (its target), which a translated
// request picks, never on the client's path.

// clientHeaders are the client's headers forwarded to every endpoint:
// content negotiation, and the headers the reference client itself sends
// that the proxy does not set.
var clientHeaders = map[string]bool{
	"Accept":             true,
	"Accept-Encoding":    true, // the transport does no transparent gzip
	"Accept-Language":    true,
	"Content-Type":       true,
	"Content-Encoding":   true,
	"X-Interaction-Id":   true,
	"X-Interaction-Type": true,
	"X-Agent-Task-Id":    true,
}

// anthropicHeaders are forwarded only to the Anthropic endpoints;
// Anthropic-Beta is filtered by the beta allow list.
var anthropicHeaders = map[string]bool{
	"Anthropic-Version": true,
	"Anthropic-Beta":    true,
}

// isAnthropicTarget reports whether the upstream path speaks Anthropic
// Messages.
func isAnthropicTarget(target string) bool {
	return target == "/v1/messages" || target == "/v1/messages/count_tokens"
}

// headerPolicy decides which client headers go upstream, and remembers the
// names it dropped so each is logged once.
type headerPolicy struct {
	extra   map[string]bool // operator-allowed names (canonical)
	betas   *betaFilter
	log     *slog.Logger
	dropped seenSet
}

func newHeaderPolicy(extra []string, betas *betaFilter, log *slog.Logger) *headerPolicy {
	p := &headerPolicy{extra: map[string]bool{}, betas: betas, log: log, dropped: seenSet{max: 256}}
	for _, n := range extra {
		if n = strings.TrimSpace(n); n != "" {
			p.extra[http.CanonicalHeaderKey(n)] = true
		}
	}
	return p
}

// filter returns the client headers of in that may go to target. in has
// already lost its hop-by-hop headers. The headers the proxy sets itself
// (credentials, identity, X-Request-Id, X-Initiator, vision) are set by
// the caller afterwards.
func (p *headerPolicy) filter(target string, in http.Header) http.Header {
	out := make(http.Header, len(in)+10)
	anthropic := isAnthropicTarget(target)
	for name, vals := range in {
		switch {
		case clientHeaders[name] || p.extra[name]:
			out[name] = vals
		case anthropic && name == "Anthropic-Beta":
			if v := p.betas.filter(vals); v != "" {
				out.Set(name, v)
			}
		case anthropic && anthropicHeaders[name]:
			out[name] = vals
		default:
			p.drop(name)
		}
	}
	return out
}

// drop notes a dropped header name, logging each once at debug level.
func (p *headerPolicy) drop(name string) {
	if proxySet[name] || !p.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if p.dropped.add(name) {
		p.log.Debug("client header not forwarded (not on the allow list)", "header", name)
	}
}

// proxySet are headers the proxy replaces or strips on purpose; dropping
// them is not worth a log line.
var proxySet = map[string]bool{
	"Authorization": true, "X-Api-Key": true, "Cookie": true, "Proxy-Authorization": true,
	"Copilot-Integration-Id": true, "Editor-Version": true, "Editor-Plugin-Version": true,
	"User-Agent": true, "Openai-Intent": true, "X-Github-Api-Version": true,
	"X-Request-Id": true, "X-Initiator": true, "Copilot-Vision-Request": true,
}

// seenSet remembers up to max names; past that, add reports every new name
// as seen, so a client sending endless distinct names cannot grow it.
type seenSet struct {
	max int
	mu  sync.Mutex
	m   map[string]struct{}
}

func (s *seenSet) add(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[name]; ok || len(s.m) >= s.max {
		return false
	}
	if s.m == nil {
		s.m = map[string]struct{}{}
	}
	s.m[name] = struct{}{}
	return true
}

// DefaultAnthropicBetas are the betas forwarded on /v1/messages: those the
// reference client forwards (docs/protocol.md section 4). A pattern ending in
// "*" matches by prefix; others match exactly.
var DefaultAnthropicBetas = []string{"interleaved-thinking-*", "context-management-*", "advanced-tool-use-*", "extended-cache-ttl-*"}

// betaFilter keeps the anthropic-beta values the Copilot API accepts and
// counts the rest. The API answers 400 "unsupported beta header(s)" to an
// unknown one, so a request never fails because a client asked for one: it
// is dropped.
type betaFilter struct {
	exact    map[string]bool
	prefixes []string
	dropped  *prometheus.CounterVec
	log      *slog.Logger
	labels   seenSet // beta names used as metric labels, each logged once
}

// maxBetaLabels bounds the distinct beta label values; later names count
// as "other".
const maxBetaLabels = 64

func newBetaFilter(patterns []string, dropped *prometheus.CounterVec, log *slog.Logger) *betaFilter {
	f := &betaFilter{exact: map[string]bool{}, dropped: dropped, log: log, labels: seenSet{max: maxBetaLabels}}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case p == "":
		case strings.HasSuffix(p, "*"):
			f.prefixes = append(f.prefixes, strings.TrimSuffix(p, "*"))
		default:
			f.exact[p] = true
		}
	}
	return f
}

func (f *betaFilter) allowed(beta string) bool {
	if f.exact[beta] {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(beta, p) {
			return true
		}
	}
	return false
}

// filter returns the allowed betas of the header values vals (each a
// comma-separated list), joined by ", ", and counts the dropped ones.
func (f *betaFilter) filter(vals []string) string {
	var b strings.Builder
	for _, v := range vals {
		for beta := range strings.SplitSeq(v, ",") {
			beta = strings.ToLower(strings.TrimSpace(beta))
			if beta == "" {
				continue
			}
			if !f.allowed(beta) {
				f.drop(beta)
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(beta)
		}
	}
	return b.String()
}

func (f *betaFilter) drop(beta string) {
	label := "other"
	if saneBeta(beta) {
		if f.labels.add(beta) {
			f.log.Info("anthropic-beta not forwarded (not on --anthropic-betas); the Copilot API refuses unknown betas", "beta", beta)
		}
		if f.labels.has(beta) {
			label = beta
		}
	}
	f.dropped.WithLabelValues(label).Inc()
}

func (s *seenSet) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[name]
	return ok
}

// saneBeta reports whether a beta name looks like Anthropic's
// (name-YYYY-MM-DD: lower-case letters, digits and dashes, at most 64
// bytes), so only such names become metric labels.
func saneBeta(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// requestFacts are what the headers of a request depend on besides its
// target: learned from the client's request by inspect.
type requestFacts struct {
	requestID string
	agent     bool // X-Initiator: agent
	vision    bool // Copilot-Vision-Request: true
	// interaction is X-Interaction-Type when not the intent (profile.go).
	interaction string
}

func (c *call) facts(in http.Header) requestFacts {
	f := requestFacts{requestID: c.requestID, agent: c.in.Agent, vision: c.in.Vision}
	f.interaction = interactionType(in, c.route == routeMessages && c.in.Compaction)
	return f
}

// upstreamHeader returns the headers of a request to target: the allowed
// client headers of in, the identity, the endpoint's Openai-Intent, and
// X-Request-Id, X-Initiator and Copilot-Vision-Request from facts.
func (h *Handler) upstreamHeader(target *route, in http.Header, f requestFacts) http.Header {
	hd := h.headers.filter(target.upstream, in)
	p := h.currentPreset()
	for _, kv := range p.identity {
		hd[kv.name] = kv.vals
	}
	intent := p.intent(target.upstream)
	hd["Openai-Intent"] = intent
	// Since 2026 the reference client sends X-Interaction-Type on every
	// call (the intent unless overridden) and X-Agent-Task-Id equal to the
	// request id (docs/protocol.md section 4).
	if f.interaction != "" {
		hd["X-Interaction-Type"] = []string{f.interaction}
	} else {
		hd["X-Interaction-Type"] = intent
	}
	rid := []string{f.requestID}
	hd["X-Request-Id"] = rid
	hd["X-Agent-Task-Id"] = rid
	if target.hasBody() {
		if f.agent {
			hd["X-Initiator"] = p.agent
		} else {
			hd["X-Initiator"] = p.user
		}
	}
	if f.vision {
		hd["Copilot-Vision-Request"] = p.vision
	}
	return hd
}

// presetHeaders are the header values every request shares, made once:
// setting them is then a map assignment, not a canonicalisation and a new
// one-element slice each. The slices are shared between requests and never
// written: net/http's Set and Add replace or grow a slice, never write into
// one (and a one-element slice has no room to grow into).
type presetHeaders struct {
	identity []presetHeader      // canonical names
	intents  map[string][]string // the upstream paths of the routes
	in       Intents             // for any other path
	agent    []string
	user     []string
	vision   []string
}

type presetHeader struct {
	name string
	vals []string
}

func newPresetHeaders(e identity.Editor, in Intents) *presetHeaders {
	id := http.Header{}
	e.SetAPIHeaders(id)
	p := &presetHeaders{intents: map[string][]string{}, in: in,
		agent: []string{"agent"}, user: []string{"user"}, vision: []string{"true"}}
	for name, vals := range id {
		p.identity = append(p.identity, presetHeader{name, vals})
	}
	for _, rt := range []*route{routeChat, routeModels, routeModel, routeEmbeddings, routeResponses, routeMessages, routeCountTokens} {
		p.intents[rt.upstream] = []string{in.of(rt.upstream)}
	}
	return p
}

func (p *presetHeaders) intent(path string) []string {
	if v, ok := p.intents[path]; ok {
		return v
	}
	return []string{p.in.of(path)} // Intents.of stays the one mapping

}
