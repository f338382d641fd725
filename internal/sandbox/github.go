package sandbox

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "sandbox: encoding answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// githubToken returns the credential of `Authorization: token <t>`; any other
// scheme (notably Bearer) gives "", which GitHub treats as no valid credential.
func githubToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "token") {
		return ""
	}
	return strings.TrimSpace(tok)
}

type githubMessage struct {
	Message          string `json:"message"`
	DocumentationURL string `json:"documentation_url"`
	Status           string `json:"status,omitempty"`
}

func writeBadCredentials(w http.ResponseWriter) {
	writeJSON(w, http.StatusUnauthorized, githubMessage{
		Message:          "Bad credentials",
		DocumentationURL: "https://docs.github.com/rest",
		Status:           "401",
	})
}

type errorDetails struct {
	Message        string `json:"message"`
	NotificationID string `json:"notification_id"`
	Title          string `json:"title"`
	URL            string `json:"url"`
}

type accessDenied struct {
	ErrorDetails        errorDetails `json:"error_details"`
	Message             string       `json:"message"`
	CanSignupForLimited bool         `json:"can_signup_for_limited"`
}

// writeGitHubFault answers an injected exchange fault with GitHub's bodies.
func (s *Server) writeGitHubFault(w http.ResponseWriter, f Fault) {
	setRetryAfter(w, f)
	switch reason := f.reason(); reason {
	case ReasonNoCopilotAccess, ReasonSubscriptionEnded, ReasonBillingLocked:
		msg := map[string]string{
			ReasonNoCopilotAccess:   "No access to GitHub Copilot found. You are currently logged in as sandbox-user.",
			ReasonSubscriptionEnded: "Your GitHub Copilot subscription has ended.",
			ReasonBillingLocked:     "Your account is locked due to a billing issue.",
		}[reason]
		writeJSON(w, f.Status, accessDenied{
			ErrorDetails: errorDetails{
				Message:        msg,
				NotificationID: reason,
				Title:          "Copilot access unavailable",
				URL:            "https://github.com/features/copilot",
			},
			Message:             msg,
			CanSignupForLimited: reason == ReasonNoCopilotAccess,
		})
	case ReasonRateLimit:
		wait := max(f.RetryAfter, time.Minute)
		h := w.Header()
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Used", "5000")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(s.clock.Now().Add(wait).Unix(), 10))
		h.Set("X-RateLimit-Resource", "core")
		writeJSON(w, f.Status, githubMessage{
			Message:          "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID.",
			DocumentationURL: "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
		})
	default:
		if f.Status == http.StatusUnauthorized {
			writeBadCredentials(w)
			return
		}
		msg := http.StatusText(f.Status)
		if f.Status >= 500 {
			msg = "Server Error"
		}
		writeJSON(w, f.Status, githubMessage{Message: msg, DocumentationURL: "https://docs.github.com/rest"})
	}
}

type exchangeEndpoints struct {
	API           string `json:"api"`
	OriginTracker string `json:"origin-tracker"`
	Proxy         string `json:"proxy"`
	Telemetry     string `json:"telemetry"`
}

type exchangeAnswer struct {
	AnnotationsEnabled    bool              `json:"annotations_enabled"`
	ChatEnabled           bool              `json:"chat_enabled"`
	ChatJetbrainsEnabled  bool              `json:"chat_jetbrains_enabled"`
	CodeQuoteEnabled      bool              `json:"code_quote_enabled"`
	CodeReviewEnabled     bool              `json:"code_review_enabled"`
	Codesearch            bool              `json:"codesearch"`
	CopilotignoreEnabled  bool              `json:"copilotignore_enabled"`
	Endpoints             exchangeEndpoints `json:"endpoints"`
	ExpiresAt             int64             `json:"expires_at"`
	Individual            bool              `json:"individual"`
	LimitedUserQuotas     map[string]int    `json:"limited_user_quotas"`
	LimitedUserResetDate  *int64            `json:"limited_user_reset_date"`
	Prompt8K              bool              `json:"prompt_8k"`
	PublicSuggestions     string            `json:"public_suggestions"`
	RefreshIn             int64             `json:"refresh_in"`
	SKU                   string            `json:"sku"`
	SnippyLoadTestEnabled bool              `json:"snippy_load_test_enabled"`
	Telemetry             string            `json:"telemetry"`
	Token                 string            `json:"token"`
	TrackingID            string            `json:"tracking_id"`
	VSCElectronFetcherV2  bool              `json:"vsc_electron_fetcher_v2"`
	Xcode                 bool              `json:"xcode"`
	XcodeChat             bool              `json:"xcode_chat"`
}

func (s *Server) handleExchange(w http.ResponseWriter, r *http.Request) {
	if !sleep(r, time.Duration(s.exchangeLatency.Load())) {
		return
	}
	if f, ok := s.takeExchangeFault(); ok {
		s.writeGitHubFault(w, f)
		return
	}
	acct := s.accountOf(githubToken(r))
	if acct == nil {
		writeBadCredentials(w)
		return
	}
	if f, ok := s.takeAccountExchangeFault(acct); ok {
		s.writeGitHubFault(w, f)
		return
	}
	if !s.checkRetiredExchange(w, r) {
		return
	}
	sku := acct.sku
	now := s.clock.Now()
	exp := now.Add(s.cfg.TokenLifetime)
	base := s.baseURL(r)
	ans := exchangeAnswer{
		AnnotationsEnabled:   true,
		ChatEnabled:          true,
		ChatJetbrainsEnabled: true,
		CodeQuoteEnabled:     true,
		CopilotignoreEnabled: true,
		Endpoints: exchangeEndpoints{
			API:           base,
			OriginTracker: base + "/_origin-tracker",
			Proxy:         base + "/_proxy",
			Telemetry:     base + "/_telemetry",
		},
		ExpiresAt:         exp.Unix(),
		Individual:        !strings.Contains(sku, "business") && !strings.Contains(sku, "enterprise"),
		Prompt8K:          true,
		PublicSuggestions: "disabled",
		RefreshIn:         int64(s.cfg.RefreshIn / time.Second),
		SKU:               sku,
		Telemetry:         "disabled",
		Token:             s.mintToken(exp, clientIP(r), acct),
		TrackingID:        hexRandom(16),
	}
	if isFreeSKU(sku) {
		reset := firstOfNextMonth(now).Unix()
		ans.LimitedUserQuotas = map[string]int{"chat": 50, "completions": 2000}
		ans.LimitedUserResetDate = &reset
	}
	writeJSON(w, http.StatusOK, ans)
}

// baseURL is the sandbox's own base URL as the caller reached it.
func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.BaseURL != "" {
		return s.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return "0.0.0.0"
	}
	return host
}

func isFreeSKU(sku string) bool { return strings.HasPrefix(sku, "free") }

func firstOfNextMonth(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

type quotaSnapshot struct {
	Entitlement      int64   `json:"entitlement"`
	OverageCount     int64   `json:"overage_count"`
	OveragePermitted bool    `json:"overage_permitted"`
	PercentRemaining float64 `json:"percent_remaining"`
	QuotaID          string  `json:"quota_id"`
	Remaining        int64   `json:"remaining"`
	Unlimited        bool    `json:"unlimited"`
}

type userAnswer struct {
	AccessTypeSKU         string                   `json:"access_type_sku"`
	AnalyticsTrackingID   string                   `json:"analytics_tracking_id"`
	AssignedDate          *string                  `json:"assigned_date"`
	CanSignupForLimited   bool                     `json:"can_signup_for_limited"`
	ChatEnabled           bool                     `json:"chat_enabled"`
	CopilotPlan           string                   `json:"copilot_plan"`
	OrganizationLoginList []string                 `json:"organization_login_list"`
	QuotaResetDate        string                   `json:"quota_reset_date"`
	QuotaSnapshots        map[string]quotaSnapshot `json:"quota_snapshots"`
}

func snapshot(id string, entitlement, used int64, unlimited, overage bool) quotaSnapshot {
	q := quotaSnapshot{QuotaID: id, Entitlement: entitlement, Unlimited: unlimited, PercentRemaining: 100, OveragePermitted: overage}
	if unlimited {
		q.Entitlement, q.Remaining = 0, 0
		return q
	}
	q.Remaining = max(entitlement-used, 0)
	q.OverageCount = max(used-entitlement, 0)
	if entitlement > 0 {
		q.PercentRemaining = float64(q.Remaining) * 100 / float64(entitlement)
	} else {
		q.PercentRemaining = 0
	}
	return q
}

func (s *Server) handleUser(w http.ResponseWriter, r *http.Request) {
	acct := s.accountOf(githubToken(r))
	if acct == nil {
		writeBadCredentials(w)
		return
	}
	sku, used := acct.sku, acct.premiumUsed.Load()
	if acct.spent.Load() {
		used = max(used, acct.premium, 1) // spent: nothing remains
	}
	ans := userAnswer{
		AccessTypeSKU:         sku,
		AnalyticsTrackingID:   "sandbox",
		ChatEnabled:           true,
		OrganizationLoginList: []string{},
		QuotaResetDate:        firstOfNextMonth(s.clock.Now()).Format(time.DateOnly),
	}
	switch {
	case isFreeSKU(sku):
		ans.CopilotPlan = "free"
		ans.CanSignupForLimited = false
		chatUsed := used
		if acct.spent.Load() {
			chatUsed = max(used, freeChatQuota)
		}
		ans.QuotaSnapshots = map[string]quotaSnapshot{
			"chat":                 snapshot("chat", freeChatQuota, chatUsed, false, false),
			"completions":          snapshot("completions", 2000, 0, false, false),
			"premium_interactions": snapshot("premium_interactions", acct.premium, used, false, acct.overage),
		}
	default:
		ans.CopilotPlan = "individual"
		if !strings.HasPrefix(sku, "monthly") && !strings.HasPrefix(sku, "yearly") {
			ans.CopilotPlan = "business"
		}
		ans.QuotaSnapshots = map[string]quotaSnapshot{
			"chat":                 snapshot("chat", 0, 0, true, false),
			"completions":          snapshot("completions", 0, 0, true, false),
			"premium_interactions": snapshot("premium_interactions", acct.premium, used, false, acct.overage),
		}
	}
	writeJSON(w, http.StatusOK, ans)
}
