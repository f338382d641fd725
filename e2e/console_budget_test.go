package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/copilot-broker/copilot-broker/internal/testutil/browsertest"
)

// consoleBudgetFigures are a budget's figures as GET /v1/budgets answers
// them (the gateway writes int64 as strings).
type consoleBudgetFigures struct {
	Key, Account   string
	MonthlyPremium float64
	PremiumSpent   float64
	MonthlyTokens  string
	TokensSpent    string
	Rpm            string
}

// restGet decodes the JSON of a GET on the broker's REST API with key.
func restGet(t *testing.T, b *brokerProc, path, key string, out any) {
	t.Helper()
	resp := restGetResp(t, b, path, key)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// checkConsoleBudgets gives key (used once through the proxy already) a
// budget and the account alice one, makes two premium requests with the
// key's secret, and checks that the keys page shows the ledger's figures in
// its bars: spent of the limit for premium units and tokens, and the rpm
// limit.
func checkConsoleBudgets(t *testing.T, st *consoleStack, br *browsertest.Browser, key, secret string) {
	t.Helper()
	for _, args := range [][]string{
		{"keys", "update", key, "--monthly-premium", "20", "--monthly-tokens", "100000", "--rpm", "120"},
		{"accounts", "set-budget", "alice", "50"},
	} {
		cmd := exec.Command(built.broker, append(args, "--broker-addr", st.b.grpcAddr)...)
		cmd.Env = append(os.Environ(), "BROKER_ADMIN_KEY="+st.adminKey)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("broker %v: %v: %s", args, err, out)
		}
	}
	// Two premium requests (gpt-5.2-codex: 1 unit each in the sandbox).
	for i := range 2 {
		code, _, body, err := post(newHTTPClient(t), st.px.url, secret, dialectCall{"/v1/responses", "gpt-5.2-codex", false}, i)
		if err != nil || code != http.StatusOK {
			t.Fatalf("a premium request within the budget = %d %v: %s", code, err, body)
		}
	}
	// The ledger's sums for the key this month, once the proxy reported all
	// three requests: the figures the bars must show.
	var usage struct {
		Rows []struct {
			Requests     int64   `json:"requests"`
			PremiumUnits float64 `json:"premium_units"`
			InputTokens  int64   `json:"input_tokens"`
			OutputTokens int64   `json:"output_tokens"`
		} `json:"rows"`
	}
	var figures map[string]consoleBudgetFigures
	waitFor(t, 15*time.Second, "the ledger holding the key's 3 requests", func() bool {
		restGet(t, st.b, "/v1/usage?group_by=key&key="+key, st.adminKey, &usage)
		var list struct{ Budgets []consoleBudgetFigures }
		restGet(t, st.b, "/v1/budgets", st.adminKey, &list)
		figures = map[string]consoleBudgetFigures{}
		for _, b := range list.Budgets {
			figures[b.Key+b.Account] = b
		}
		return len(usage.Rows) == 1 && usage.Rows[0].Requests == 3
	})
	row := usage.Rows[0]
	k, a := figures[key], figures["alice"]
	wantTokens := strconv.FormatInt(row.InputTokens+row.OutputTokens, 10)
	if k.MonthlyPremium != 20 || k.MonthlyTokens != "100000" || k.Rpm != "120" || k.PremiumSpent != row.PremiumUnits || k.TokensSpent != wantTokens || wantTokens == "0" || row.PremiumUnits != 2 {
		t.Fatalf("GET /v1/budgets for %s = %+v; want premium %g of 20 (2 expected), tokens %s of 100000, rpm 120 (the ledger's sums)", key, k, row.PremiumUnits, wantTokens)
	}
	if a.MonthlyPremium != 50 {
		t.Fatalf("GET /v1/budgets for account alice = %+v; want a premium budget of 50", a)
	}

	br.Do(t, "opening the keys page", chromedp.Navigate(st.b.httpURL+"/ui/#/keys"))
	br.Do(t, "reloading it", chromedp.Reload())
	sel := `[data-key="` + key + `"]`
	br.WaitJS(t, 10*time.Second, key+"'s budget bars", `document.querySelector('`+sel+` [data-budget="tokens"]')`)
	bar := func(row, what string) string {
		return browsertest.Eval[string](t, br, `(() => { const e = document.querySelector('`+row+` [data-budget="`+what+`"]');
			return e ? e.dataset.spent + "/" + e.dataset.limit : "none"; })()`)
	}
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
	for _, c := range []struct{ row, what, want string }{
		{sel, "premium", num(row.PremiumUnits) + "/20"},
		{sel, "tokens", wantTokens + "/100000"},
		{`[data-account-budget="alice"]`, "premium", num(a.PremiumSpent) + "/50"},
	} {
		if got := bar(c.row, c.what); got != c.want {
			t.Errorf("%s %s bar = %s; want %s", c.row, c.what, got, c.want)
		}
	}
	if got := browsertest.Eval[string](t, br, `document.querySelector('`+sel+` td[data-rpm]').textContent`); got != "120" {
		t.Errorf("%s's rpm limit on the page = %q; want 120", key, got)
	}
	if !browsertest.Eval[bool](t, br, `/resets /.test(document.querySelector('`+sel+` td.budgets').textContent)`) {
		t.Errorf("%s's budget cell names no reset", key)
	}
	t.Logf("%s: %s premium units and %s tokens of its budget shown after 3 requests", key, num(row.PremiumUnits), wantTokens)
	br.Screenshot(t, "console-keys")
}
