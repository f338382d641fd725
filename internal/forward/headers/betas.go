package headers

import (
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultAnthropicBetas returns the betas forwarded on /v1/messages: those
// the reference client forwards (docs/protocol.md section 4). A pattern
// ending in "*" matches by prefix; others match exactly.
func DefaultAnthropicBetas() []string {
	return []string{"interleaved-thinking-*", "context-management-*", "advanced-tool-use-*", "extended-cache-ttl-*"}
}

// betaFilter keeps the anthropic-beta values the Copilot API accepts and
// counts the rest. The API answers 400 "unsupported beta header(s)" to an
// unknown one, so a request never fails because a client asked for one: it
// is dropped.
type betaFilter struct {
	exact    map[string]bool // read only
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
