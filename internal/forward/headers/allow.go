package headers

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
)

// Agent CLIs send SDK telemetry and session headers (X-Stainless-*, X-App,
// X-Claude-Code-Session-Id, Anthropic-Dangerous-Direct-Browser-Access, ...)
// that are no business of the Copilot API: only the allowed ones pass.

// clientHeader reports whether the client's header name (canonical) is
// forwarded to every endpoint: content negotiation, and the headers the
// reference client itself sends that the proxy does not set.
func clientHeader(name string) bool {
	switch name {
	case "Accept",
		"Accept-Encoding", // the transport does no transparent gzip
		"Accept-Language",
		"Content-Type",
		"Content-Encoding",
		"X-Interaction-Id",
		"X-Interaction-Type",
		"X-Agent-Task-Id":
		return true
	}
	return false
}

// IsAnthropicTarget reports whether the upstream path speaks Anthropic
// Messages; Anthropic-Version and Anthropic-Beta (filtered by the beta
// allow list) go only there.
func IsAnthropicTarget(target string) bool {
	return target == "/v1/messages" || target == "/v1/messages/count_tokens"
}

// proxySet reports whether the header name is one the proxy replaces or
// strips on purpose; dropping it is not worth a log line.
func proxySet(name string) bool {
	switch name {
	case "Authorization", "X-Api-Key", "Cookie", "Proxy-Authorization",
		"Copilot-Integration-Id", "Editor-Version", "Editor-Plugin-Version",
		"User-Agent", "Openai-Intent", "X-Github-Api-Version",
		"X-Request-Id", "X-Initiator", "Copilot-Vision-Request":
		return true
	}
	return false
}

// policy decides which client headers go upstream, and remembers the names
// it dropped so each is logged once.
type policy struct {
	extra   map[string]bool // operator-allowed names (canonical), read only
	betas   *betaFilter
	log     *slog.Logger
	dropped seenSet
}

func newPolicy(extra []string, betas *betaFilter, log *slog.Logger) *policy {
	p := &policy{extra: map[string]bool{}, betas: betas, log: log, dropped: seenSet{max: 256}}
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
func (p *policy) filter(target string, in http.Header) http.Header {
	out := make(http.Header, len(in)+10)
	anthropic := IsAnthropicTarget(target)
	for name, vals := range in {
		switch {
		case clientHeader(name) || p.extra[name]:
			out[name] = vals
		case anthropic && name == "Anthropic-Beta":
			if v := p.betas.filter(vals); v != "" {
				out.Set(name, v)
			}
		case anthropic && name == "Anthropic-Version":
			out[name] = vals
		default:
			p.drop(name)
		}
	}
	return out
}

// drop notes a dropped header name, logging each once at debug level.
func (p *policy) drop(name string) {
	if proxySet(name) || !p.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	if p.dropped.add(name) {
		p.log.Debug("client header not forwarded (not on the allow list)", "header", name)
	}
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

func (s *seenSet) has(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[name]
	return ok
}

func (s *seenSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
