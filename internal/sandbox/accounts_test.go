package sandbox

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

const chatBody = `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`

// exchangeWith swaps tok for a Copilot token; it returns the status and the
// answer.
func (e *env) exchangeWith(tok secret.Secret) (int, exchangeAnswer) {
	e.t.Helper()
	resp, body := e.do("GET", "/copilot_internal/v2/token", ghHeader(tok.Reveal()), "")
	var ans exchangeAnswer
	if resp.StatusCode == http.StatusOK {
		mustUnmarshal(e.t, body, &ans)
	}
	return resp.StatusCode, ans
}

func (e *env) userOf(tok secret.Secret) (int, userAnswer) {
	e.t.Helper()
	resp, body := e.do("GET", "/copilot_internal/user", ghHeader(tok.Reveal()), "")
	var ans userAnswer
	if resp.StatusCode == http.StatusOK {
		mustUnmarshal(e.t, body, &ans)
	}
	return resp.StatusCode, ans
}

func (e *env) chat(copilotToken string) (int, []byte) {
	e.t.Helper()
	resp, body := e.do("POST", "/chat/completions", apiHeader(copilotToken), chatBody)
	return resp.StatusCode, body
}

func TestAccountsOwnTokenSKUAndQuota(t *testing.T) {
	e := newEnv(t, Config{})
	alice, err := e.sb.AddAccount(AccountConfig{Name: "alice", SKU: "copilot_for_business", PremiumEntitlement: 2})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.sb.AddAccount(AccountConfig{Name: "bob", GitHubToken: secret.New("gho_bob_token_0123456789"), SKU: "free_limited_copilot"})
	if err != nil || bob.Reveal() != "gho_bob_token_0123456789" {
		t.Fatalf("AddAccount(bob) = %v", err)
	}
	if _, err := e.sb.AddAccount(AccountConfig{Name: "alice"}); err == nil {
		t.Error("AddAccount(alice) twice = nil error")
	}
	if _, err := e.sb.AddAccount(AccountConfig{Name: "../x"}); err == nil {
		t.Error("AddAccount(../x) = nil error")
	}
	if _, err := e.sb.AddAccount(AccountConfig{Name: "carol", GitHubToken: bob}); err == nil {
		t.Error("AddAccount with bob's token = nil error")
	}
	code, a := e.exchangeWith(alice)
	if code != 200 || a.SKU != "copilot_for_business" || a.Individual {
		t.Fatalf("alice's exchange = %d %+v", code, a)
	}
	code, b := e.exchangeWith(bob)
	if code != 200 || b.SKU != "free_limited_copilot" {
		t.Fatalf("bob's exchange = %d %+v", code, b)
	}
	// alice's premium entitlement of 2 is enforced: the third billed call
	// is 402; bob's calls are not affected.
	for i := range 2 {
		if code, body := e.chat(a.Token); code != 200 {
			t.Fatalf("alice's chat %d = %d %s", i, code, body)
		}
	}
	code, body := e.chat(a.Token)
	if code != http.StatusPaymentRequired || errorCode(t, body) != "quota_exceeded" {
		t.Errorf("alice's third chat = %d %s; want 402 quota_exceeded", code, body)
	}
	if code, body := e.chat(b.Token); code != 200 {
		t.Errorf("bob's chat = %d %s", code, body)
	}
	_, ua := e.userOf(alice)
	if p := ua.QuotaSnapshots["premium_interactions"]; ua.CopilotPlan != "business" || p.Entitlement != 2 || p.Remaining != 0 || ua.AccessTypeSKU != "copilot_for_business" {
		t.Errorf("alice's user = %+v", ua)
	}
	_, ub := e.userOf(bob)
	if ub.CopilotPlan != "free" || ub.QuotaSnapshots["chat"].Remaining != 49 {
		t.Errorf("bob's user = %+v; want free, 49 chats left", ub)
	}
	if err := e.sb.ResetQuota("alice"); err != nil {
		t.Fatal(err)
	}
	if code, body := e.chat(a.Token); code != 200 {
		t.Errorf("alice's chat after reset = %d %s", code, body)
	}
	infos := e.sb.Accounts()
	if len(infos) != 3 || infos[0].Name != "alice" || infos[1].Name != "bob" || infos[2].Name != DefaultAccount || infos[0].PremiumUsed != 1 {
		t.Errorf("Accounts() = %+v", infos)
	}
	for _, in := range infos {
		if strings.Contains(in.TokenFingerprint, "gho_") {
			t.Errorf("Accounts() shows a token: %+v", in)
		}
	}
}

func TestAccountFaults(t *testing.T) {
	e := newEnv(t, Config{})
	alice, _ := e.sb.AddAccount(AccountConfig{Name: "alice"})
	bob, _ := e.sb.AddAccount(AccountConfig{Name: "bob"})
	_, a := e.exchangeWith(alice)
	_, b := e.exchangeWith(bob)

	// Spent quota: 402 for alice's tokens only, /models still answers,
	// copilot_internal/user shows nothing left; reset lifts it.
	if err := e.sb.SpendQuota("alice"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.chat(a.Token); code != http.StatusPaymentRequired {
		t.Errorf("alice's chat with quota spent = %d; want 402", code)
	}
	if resp, _ := e.do("GET", "/models", apiHeader(a.Token), ""); resp.StatusCode != 200 {
		t.Errorf("alice's /models with quota spent = %d; want 200", resp.StatusCode)
	}
	if code, _ := e.chat(b.Token); code != 200 {
		t.Errorf("bob's chat = %d; want 200", code)
	}
	if _, u := e.userOf(alice); u.QuotaSnapshots["premium_interactions"].Remaining != 0 {
		t.Errorf("alice's user with quota spent = %+v", u.QuotaSnapshots)
	}
	_ = e.sb.ResetQuota("alice")
	if code, _ := e.chat(a.Token); code != 200 {
		t.Errorf("alice's chat after reset = %d; want 200", code)
	}

	// Rate limit on alice's API calls only.
	if err := e.sb.FailAccountAPI("alice", 1, Fault{Status: 429, RetryAfter: 7e9}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.chat(b.Token); code != 200 {
		t.Errorf("bob's chat during alice's rate limit = %d", code)
	}
	resp, _ := e.do("POST", "/chat/completions", apiHeader(a.Token), chatBody)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("alice's chat = %d Retry-After %q; want 429, 7", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, _ := e.chat(a.Token); code != 200 {
		t.Errorf("alice's chat after the one fault = %d", code)
	}

	// Revoked: exchange and user 401 for alice; her issued token still works
	// until it expires; restore undoes it.
	if err := e.sb.RevokeAccount("alice"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.exchangeWith(alice); code != 401 {
		t.Errorf("alice's exchange after revoke = %d; want 401", code)
	}
	if code, _ := e.userOf(alice); code != 401 {
		t.Errorf("alice's user after revoke = %d; want 401", code)
	}
	if code, _ := e.exchangeWith(bob); code != 200 {
		t.Errorf("bob's exchange after alice's revoke = %d; want 200", code)
	}
	_ = e.sb.RestoreAccount("alice")
	if code, _ := e.exchangeWith(alice); code != 200 {
		t.Errorf("alice's exchange after restore = %d; want 200", code)
	}

	// Exchange faults for one account.
	if err := e.sb.FailAccountExchanges("bob", 0, Fault{Status: 403, Reason: ReasonNoCopilotAccess}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.exchangeWith(bob); code != 403 {
		t.Errorf("bob's exchange = %d; want 403", code)
	}
	if code, _ := e.exchangeWith(alice); code != 200 {
		t.Errorf("alice's exchange during bob's fault = %d; want 200", code)
	}
	e.sb.ClearFaults()
	if code, _ := e.exchangeWith(bob); code != 200 {
		t.Errorf("bob's exchange after ClearFaults = %d; want 200", code)
	}

	// Removed: its tokens stop working.
	if err := e.sb.RemoveAccount("bob"); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.exchangeWith(bob); code != 401 {
		t.Errorf("bob's exchange after removal = %d; want 401", code)
	}
	if code, _ := e.chat(b.Token); code != 401 {
		t.Errorf("bob's Copilot token after removal = %d; want 401", code)
	}
	for _, err := range []error{
		e.sb.RemoveAccount("bob"), e.sb.RemoveAccount(DefaultAccount), e.sb.SpendQuota("nobody"),
		e.sb.FailAccountAPI("nobody", 1, Fault{Status: 500}),
	} {
		if !errors.Is(err, ErrUnknownAccount) {
			t.Errorf("error = %v; want ErrUnknownAccount", err)
		}
	}
	if err := e.sb.FailAccountAPI("alice", 1, Fault{Status: 200}); err == nil {
		t.Error("FailAccountAPI(status 200) = nil error")
	}
}

func TestAdminAccounts(t *testing.T) {
	e := newEnv(t, Config{})
	resp, body := e.do("POST", "/_sandbox/accounts", nil, `{"name":"alice","sku":"copilot_for_business"}`)
	var created struct{ Name, Token string }
	mustUnmarshal(t, body, &created)
	if resp.StatusCode != 200 || created.Name != "alice" || !strings.HasPrefix(created.Token, "gho_") {
		t.Fatalf("POST /_sandbox/accounts = %d %s", resp.StatusCode, body)
	}
	tok := secret.New(created.Token)
	if got, _ := e.sb.AccountToken("alice"); got != tok {
		t.Error("AccountToken(alice) is not the token handed out")
	}
	if code, a := e.exchangeWith(tok); code != 200 || a.SKU != "copilot_for_business" {
		t.Fatalf("exchange with the new account's token = %d", code)
	}
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/_sandbox/accounts", `{"name":"alice"}`, 400},
		{"POST", "/_sandbox/accounts", `{"name":"a/b"}`, 400},
		{"POST", "/_sandbox/accounts/alice/revoke", ``, 200},
		{"POST", "/_sandbox/accounts/alice/restore", ``, 200},
		{"POST", "/_sandbox/accounts/alice/spend-quota", ``, 200},
		{"POST", "/_sandbox/accounts/alice/reset-quota", ``, 200},
		{"POST", "/_sandbox/accounts/alice/explode", ``, 404},
		{"POST", "/_sandbox/accounts/nobody/revoke", ``, 404},
		{"POST", "/_sandbox/accounts/alice/faults/api", `{"count":1,"status":429,"retry_after_seconds":2}`, 200},
		{"POST", "/_sandbox/accounts/alice/faults/exchange", `{"status":502,"until_cleared":true}`, 200},
		{"POST", "/_sandbox/accounts/alice/faults/api", `{"status":429}`, 400},
		{"POST", "/_sandbox/accounts/alice/faults/elsewhere", `{"count":1,"status":429}`, 404},
		{"POST", "/_sandbox/accounts/nobody/faults/api", `{"count":1,"status":429}`, 404},
		{"DELETE", "/_sandbox/accounts/nobody", ``, 404},
	} {
		if resp, body := e.do(tt.method, tt.path, nil, tt.body); resp.StatusCode != tt.want {
			t.Errorf("%s %s %s = %d %s; want %d", tt.method, tt.path, tt.body, resp.StatusCode, body, tt.want)
		}
	}
	if code, _ := e.exchangeWith(tok); code != 502 {
		t.Errorf("alice's exchange with the admin fault = %d; want 502", code)
	}
	resp, body = e.do("GET", "/_sandbox/accounts", nil, "")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"name":"alice"`) || strings.Contains(string(body), created.Token) {
		t.Errorf("GET /_sandbox/accounts = %d %s; want alice without her token", resp.StatusCode, body)
	}
	if resp, _ := e.do("DELETE", "/_sandbox/accounts/alice", nil, ""); resp.StatusCode != 200 {
		t.Errorf("DELETE alice = %d", resp.StatusCode)
	}
	if code, _ := e.exchangeWith(tok); code != 401 {
		t.Errorf("exchange after DELETE = %d; want 401", code)
	}
}
