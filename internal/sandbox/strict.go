package sandbox

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/identity"
)

// The sandbox is strict where the Copilot API is known to be
// (docs/protocol.md sections 4 and 5): a malformed editor identity, a
// retired client, an unknown anthropic-beta and the count_tokens path are
// refused as the API refuses them, so tests catch a proxy drifting from the
// protocol.

// DefaultMinPluginVersion is the oldest Editor-Plugin-Version the sandbox
// serves; older clients get 466. The real cut-off is not public: this one
// refuses the 2025 identity (copilot-chat/0.26.7) the proxy used to send.
const DefaultMinPluginVersion = "0.30.0"

// DefaultBetas are the anthropic-beta values the sandbox's /v1/messages
// accepts ("name-*" matches by prefix): those the reference client forwards.
// The list follows docs/protocol.md section 8 (December 2026): it gained
// extended-cache-ttl-*.
var DefaultBetas = []string{"interleaved-thinking-*", "context-management-*", "advanced-tool-use-*", "extended-cache-ttl-*"}

// checkClient answers 400 for a malformed Editor-Version and 466 for an
// Editor-Plugin-Version older than the configured minimum.
func (s *Server) checkClient(w http.ResponseWriter, r *http.Request) bool {
	if _, _, err := identity.ParseVersion(r.Header.Get("Editor-Version")); err != nil {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_header",
			"invalid Editor-Version header: "+err.Error())
		return false
	}
	pv := r.Header.Get("Editor-Plugin-Version")
	if pv == "" || s.minPlugin == (identity.Version{}) {
		return true
	}
	_, v, err := identity.ParseVersion(pv)
	if err != nil {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_header",
			"invalid Editor-Plugin-Version header: "+err.Error())
		return false
	}
	if v.Less(s.minPlugin) {
		writeAPIError(w, r, 466, "invalid_request_error", "client_not_supported",
			fmt.Sprintf("client not supported: %s is older than %s; please update", pv, s.minPlugin))
		return false
	}
	return true
}

// checkBetas answers 400 "unsupported beta header(s): ..." when an
// anthropic-beta on /v1/messages is not on the sandbox's list, as the API
// does (seen for context-1m-2025-08-07).
func (s *Server) checkBetas(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != pathMessages {
		return true
	}
	var bad []string
	for _, v := range r.Header.Values("Anthropic-Beta") {
		for b := range strings.SplitSeq(v, ",") {
			if b = strings.TrimSpace(b); b != "" && !s.betaAllowed(b) {
				bad = append(bad, b)
			}
		}
	}
	if len(bad) == 0 {
		return true
	}
	writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body",
		"unsupported beta header(s): "+strings.Join(bad, ", "))
	return false
}

func (s *Server) betaAllowed(b string) bool {
	for _, p := range s.cfg.Betas {
		if pre, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(b, pre) || b == p {
			return true
		}
	}
	return false
}

// handleCountTokensNotFound answers the count_tokens path as the Copilot API
// does: it does not serve it.
func handleCountTokensNotFound(w http.ResponseWriter, r *http.Request) {
	writeAPIError(w, r, http.StatusNotFound, "not_found_error", "not_found", "404 page not found: /v1/messages/count_tokens is not served")
}

// setQuotaHeaders sets the x-quota-snapshot-* headers of an answer from the
// account's quota: URL-encoded ent, rem, rst, ov, ovPerm (docs/protocol.md
// section 6). Unlimited quotas show ent=-1.
func (s *Server) setQuotaHeaders(w http.ResponseWriter, a *account) {
	reset := firstOfNextMonth(s.clock.Now()).Format("2006-01-02T15:04:05Z")
	snap := func(ent, used int64, overage bool) string {
		v := url.Values{}
		rem := max(ent-used, 0)
		if ent < 0 {
			rem = -1
		}
		if a.spent.Load() {
			rem = 0
		}
		v.Set("ent", strconv.FormatInt(ent, 10))
		v.Set("rem", strconv.FormatInt(rem, 10))
		v.Set("rst", reset)
		v.Set("ov", strconv.FormatInt(max(used-max(ent, 0), 0), 10))
		v.Set("ovPerm", strconv.FormatBool(overage))
		return v.Encode()
	}
	used := a.premiumUsed.Load()
	// An account whose entitlement is not enforced refuses nothing past it:
	// to a client that is overage permitted. A spent quota refuses all.
	overage := (a.overage || !a.enforce) && !a.spent.Load()
	h := w.Header()
	chat := int64(-1)
	if isFreeSKU(a.sku) {
		chat = freeChatQuota
	}
	h.Set("X-Quota-Snapshot-Chat", snap(chat, 0, false))
	premium := snap(a.premium, used, overage) // one quota, two names
	h.Set("X-Quota-Snapshot-Premium_models", premium)
	h.Set("X-Quota-Snapshot-Premium_interactions", premium)
}
