package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestPoolUsageReserve: a pool of two sandbox accounts, one reporting 3 %
// of its session limit left (x-usage-ratelimit-session): once the proxy
// has seen that, new conversations go to the other; when the other is rate
// limited too, the first serves.
func TestPoolUsageReserve(t *testing.T) {
	sb := startSandbox(t, sandboxOpts{})
	acctDir := t.TempDir()
	for _, n := range []string{"low", "other"} {
		var out struct{ Token string }
		sb.admin(t, "POST", "accounts", map[string]any{"name": n}, &out)
		writeSecretFile(t, filepath.Join(acctDir, n), out.Token)
	}
	sb.admin(t, "POST", "accounts/low/usage-limits", map[string]any{"session": map[string]any{"entitlement": 100, "remaining": 3, "reset_seconds": 3600}}, nil)
	sb.admin(t, "POST", "accounts/other/usage-limits", map[string]any{"session": map[string]any{"entitlement": 100, "remaining": 80, "reset_seconds": 3600}}, nil)
	b := startTeamBroker(t, sb, acctDir)
	key := randomKey(t)
	px := startTeamProxy(t, b, sb, "pool:"+key+":low,other\n")
	waitFor(t, startTimeout, "both accounts' tokens at the proxy", func() bool {
		return metric(t, px, `copilot_proxy_account_token_status{account="low",status="VALID"}`) == 1 &&
			metric(t, px, `copilot_proxy_account_token_status{account="other",status="VALID"}`) == 1
	})

	client := newHTTPClient(t)
	conv := 0
	post := func() (int, string) {
		conv++
		body := fmt.Sprintf(`{"model":"gpt-4.1","messages":[{"role":"user","content":"reserve conversation %d"}]}`, conv)
		req, _ := http.NewRequest("POST", px.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	served := func(account string) float64 {
		return max(metric(t, px, `copilot_proxy_usage_requests_total{account="`+account+`",key="pool",model="gpt-4.1"}`), 0)
	}
	// Until low has answered once the proxy does not know its session is
	// nearly used: conversations hash to either member.
	waitFor(t, startTimeout, "the proxy to see low's session", func() bool {
		if code, body := post(); code != 200 {
			t.Fatalf("warm-up: %d %s", code, body)
		}
		return metric(t, px, `copilot_proxy_quota_remaining{account="low",kind="session"}`) == 3
	})
	lowBefore, otherBefore := served("low"), served("other")
	const n = 20
	for range n {
		if code, body := post(); code != 200 {
			t.Fatalf("new conversation: %d %s", code, body)
		}
	}
	if low, other := served("low")-lowBefore, served("other")-otherBefore; low != 0 || other != n {
		t.Fatalf("new conversations: low served %v, other %v; want 0 and %d", low, other, n)
	}
	if v := metric(t, px, `copilot_proxy_account_out{account="low",reason="usage_reserve"}`); v != 1 {
		t.Errorf("copilot_proxy_account_out{low,usage_reserve} = %v; want 1", v)
	}

	sb.admin(t, "POST", "accounts/other/faults/api", map[string]any{"status": 429, "until_cleared": true, "retry_after_seconds": 60}, nil)
	lowBefore = served("low")
	if code, body := post(); code != 200 {
		t.Fatalf("with other rate limited: %d %s; want low to serve", code, body)
	}
	if served("low") != lowBefore+1 {
		t.Errorf("with other rate limited: low served %v more; want 1", served("low")-lowBefore)
	}
}
