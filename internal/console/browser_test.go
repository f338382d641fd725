package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/copilot-broker/copilot-broker/internal/testutil/browsertest"
)

// usageAPI is a REST API with the documented shapes of /v1/accounts,
// /v1/accounts:watch, /v1/keys and /v1/usage (issue 24's ledger): the
// console's pages are tested against it in a real browser, without the
// binaries.
type usageAPI struct {
	month  string // YYYY-MM the rows are in
	gotCSV chan string
}

func (a *usageAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+adminKey {
		http.Error(w, `{"code":16,"message":"invalid broker key"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/accounts":
		fmt.Fprint(w, `{"accounts":[]}`)
	case "/v1/accounts:watch":
		fmt.Fprint(w, `{"result":{"accounts":[{"name":"alice","status":"TOKEN_STATUS_VALID","quota":{"plan":"business","snapshots":[{"kind":"premium_interactions","entitlement":300,"remaining":120,"percentRemaining":40}]}}]}}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case "/v1/keys":
		fmt.Fprint(w, `{"keys":[]}`)
	case "/v1/usage":
		if r.Header.Get("Accept") == "text/csv" {
			a.gotCSV <- r.URL.RawQuery
			w.Header().Set("Content-Type", "text/csv")
			fmt.Fprint(w, "day,key,requests\n")
			return
		}
		if r.URL.Query().Get("group_by") != "day,key" || !strings.HasPrefix(r.URL.Query().Get("from"), a.month) {
			http.Error(w, `{"message":"unexpected query `+r.URL.RawQuery+`"}`, http.StatusBadRequest)
			return
		}
		var rows []map[string]any
		for day := 1; day <= 7; day++ {
			for i, key := range []string{"alice-laptop", "ci-bot", "team-pool"} {
				rows = append(rows, map[string]any{
					"day": fmt.Sprintf("%s-%02d", a.month, day), "key": key,
					"requests": 40 + day*(i+1), "premium_requests": day * (3 - i), "premium_units": float64(day*(3-i)) * 1.5,
					"input_tokens": 4000 * day, "output_tokens": 900 * (i + 1), "cached_tokens": 100,
				})
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"rows": rows})
	default:
		http.NotFound(w, r)
	}
}

// TestUsagePage draws the usage page in chromium from the ledger's
// documented answer: a bar per day and key, a tokens line, a sortable
// table, a CSV download; labelled controls; no console error.
func TestUsagePage(t *testing.T) {
	api := &usageAPI{month: time.Now().UTC().Format("2006-01"), gotCSV: make(chan string, 1)}
	c, err := New(Config{API: api, AuthEnabled: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close) // after the browser's cleanup, which ends its watch
	br := browsertest.New(t)
	br.SignIn(t, srv.URL, adminKey)
	br.WaitJS(t, 10*time.Second, "the overview", `document.querySelector('[data-account="alice"] .quota .row')`)
	br.Do(t, "opening the usage page", chromedp.Navigate(srv.URL+"/ui/#/usage"))
	br.WaitJS(t, 10*time.Second, "the table", `document.querySelectorAll("#usage-table tbody tr").length === 3`)
	if n := browsertest.Eval[int](t, br, `document.querySelectorAll("#usage-chart rect").length`); n != 21 {
		t.Errorf("the chart has %d bars; want 21 (7 days × 3 keys)", n)
	}
	if !browsertest.Eval[bool](t, br, `!!document.querySelector("#usage-chart polyline.tokens")`) {
		t.Error("the chart has no tokens line")
	}
	// Sorted by premium requests, most first: alice-laptop (3 a day).
	if first := browsertest.Eval[string](t, br, `document.querySelector("#usage-table tbody th").textContent`); first != "alice-laptop" {
		t.Errorf("first row = %q; want alice-laptop", first)
	}
	br.Do(t, "sorting by name", chromedp.Click(chromedp.CSS(`#usage-table thead th:first-child button`)))
	br.Do(t, "sorting by name, descending", chromedp.Click(chromedp.CSS(`#usage-table thead th:first-child button`)))
	if first := browsertest.Eval[string](t, br, `document.querySelector("#usage-table tbody th").textContent`); first != "team-pool" {
		t.Errorf("first row sorted by name, descending = %q; want team-pool", first)
	}
	br.Screenshot(t, "console-usage")
	unlabelled := browsertest.Eval[[]string](t, br, `[...document.querySelectorAll("input, select, button, a[href]")]
		.filter(e => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
		.map(e => e.outerHTML)`)
	if len(unlabelled) > 0 {
		t.Errorf("controls without a label: %v", unlabelled)
	}
	href := browsertest.Eval[string](t, br, `document.getElementById("usage-csv").href`)
	if !strings.Contains(href, "format=csv") || !strings.Contains(href, "group_by=day%2Ckey") {
		t.Errorf("CSV link = %q", href)
	}
	br.Do(t, "downloading the CSV", chromedp.Click(chromedp.ID("usage-csv")))
	select {
	case q := <-api.gotCSV:
		if strings.Contains(q, "format=") {
			t.Errorf("the API got format= in %q", q)
		}
	case <-time.After(10 * time.Second):
		t.Error("the CSV download did not reach the API as Accept: text/csv")
	}
	br.CheckConsole(t)
}

// budgetsAPI answers /v1/keys and /v1/budgets as the broker's gateway
// does (lowerCamelCase, int64 as strings, every field present).
type budgetsAPI struct {
	reset string
	spent atomic.Bool // dana's premium budget is spent
}

func (a *budgetsAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+adminKey {
		http.Error(w, `{"code":16,"message":"invalid broker key"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/accounts":
		fmt.Fprint(w, `{"accounts":[]}`)
	case "/v1/accounts:watch":
		fmt.Fprint(w, `{"result":{"accounts":[{"name":"alice","status":"TOKEN_STATUS_VALID"}]}}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case "/v1/keys":
		fmt.Fprint(w, `{"keys":[{"name":"ci-bot","accounts":"alice","models":[],"state":"KEY_STATE_ACTIVE"},`+
			`{"name":"dana","accounts":"alice","models":[],"state":"KEY_STATE_ACTIVE"},{"name":"plain","accounts":"","models":[],"state":"KEY_STATE_ACTIVE"}]}`)
	case "/v1/budgets":
		b := func(key, account string, premium, premiumSpent float64, tokens, tokensSpent, rpm int, status string) string {
			return fmt.Sprintf(`{"key":%q,"account":%q,"monthlyPremium":%g,"premiumSpent":%g,"premiumRemaining":%g,"monthlyTokens":"%d","tokensSpent":"%d","tokensRemaining":"%d","rpm":"%d","resetsAt":%q,"status":%q}`,
				key, account, premium, premiumSpent, max(0, premium-premiumSpent), tokens, tokensSpent, max(0, tokens-tokensSpent), rpm, a.reset, status)
		}
		dana := b("dana", "", 20, 17.5, 1000, 540, 30, "BUDGET_STATUS_WARNING")
		if a.spent.Load() {
			dana = b("dana", "", 20, 20, 1000, 610, 30, "BUDGET_STATUS_EXCEEDED")
		}
		fmt.Fprintf(w, `{"budgets":[%s,%s,%s],"periodStart":"2026-12-01T00:00:00Z","resetsAt":%q}`,
			b("ci-bot", "", 0, 0, 0, 0, 60, "BUDGET_STATUS_OK"),
			dana,
			b("", "bob", 100, 100, 0, 4000, 0, "BUDGET_STATUS_EXCEEDED"), a.reset)
	default:
		http.NotFound(w, r)
	}
}

// TestKeysPageBudgets shows the keys' budget bars from GET /v1/budgets:
// premium units and tokens spent of the limit, the reset, the rpm limit;
// a key without a budget says so; the accounts' budgets below the keys.
func TestKeysPageBudgets(t *testing.T) {
	reset := time.Now().UTC().AddDate(0, 1, 0).Truncate(24 * time.Hour)
	api := &budgetsAPI{reset: reset.Format(time.RFC3339)}
	c, err := New(Config{API: api, AuthEnabled: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	br := browsertest.New(t)
	br.SignIn(t, srv.URL, adminKey)
	br.WaitJS(t, 10*time.Second, "the overview", `document.querySelector('[data-account="alice"]')`)
	br.Do(t, "opening the keys page", chromedp.Navigate(srv.URL+"/ui/#/keys"))
	br.WaitJS(t, 10*time.Second, "dana's budget", `document.querySelector('[data-key="dana"] [data-budget="premium"]')`)
	bars := browsertest.Eval[[]string](t, br, `[...document.querySelectorAll("#keys-table [data-budget], #account-budgets-table [data-budget]")].map(e =>
		(e.closest("[data-key]") || e.closest("[data-account-budget]")).querySelector("th").textContent + " " + e.dataset.budget + " " +
		e.dataset.spent + "/" + e.dataset.limit + " " + e.querySelector(".meter").className.trim() + " " + e.querySelector(".meter > span").style.width)`)
	want := []string{"dana premium 17.5/20 meter warn 12.5%", "dana tokens 540/1000 meter 46%", "bob premium 100/100 meter bad 0%"}
	if fmt.Sprint(bars) != fmt.Sprint(want) {
		t.Errorf("budget bars = %q; want %q", bars, want)
	}
	text := func(sel string) string {
		return browsertest.Eval[string](t, br, `document.querySelector(`+browsertest.JSString(sel)+`).textContent`)
	}
	if got := text(`[data-key="dana"] td.budgets`); !strings.Contains(got, "17.5 / 20 premium units") || !strings.Contains(got, "540 / 1,000 tokens") || !strings.Contains(got, "resets ") {
		t.Errorf("dana's budget cell = %q; want premium and tokens spent of the limit and the reset", got)
	}
	for key, want := range map[string]string{"dana": "30", "ci-bot": "60", "plain": "\u2013"} {
		if got := text(`[data-key="` + key + `"] td[data-rpm]`); got != want {
			t.Errorf("%s's rpm limit = %q; want %q", key, got, want)
		}
	}
	for _, key := range []string{"ci-bot", "plain"} { // an rpm limit alone is no monthly budget
		if got := text(`[data-key="` + key + `"] td.budgets`); got != "no budget" {
			t.Errorf("%s's budget cell = %q; want no budget", key, got)
		}
	}
	if got := text(`[data-account-budget="bob"]`); !strings.Contains(got, "exceeded") {
		t.Errorf("bob's account budget row = %q; want it exceeded", got)
	}
	br.Screenshot(t, "console-keys-budgets")

	// The open page follows spending without a reload, keeping the focus.
	api.spent.Store(true)
	br.Do(t, "focusing dana's revoke button", chromedp.Focus(chromedp.CSS(`[data-key="dana"] button[aria-label="Revoke key dana"]`)))
	br.WaitJS(t, 15*time.Second, "dana's premium budget spent on the page", `document.querySelector('[data-key="dana"] [data-budget="premium"]').dataset.spent === "20"`)
	if got := text(`[data-key="dana"] td.budgets`); !strings.Contains(got, "20 / 20 premium units") || !strings.Contains(got, "610 / 1,000 tokens") {
		t.Errorf("dana's budget cell after the refresh = %q", got)
	}
	if !browsertest.Eval[bool](t, br, `document.querySelector('[data-key="dana"] [data-budget="premium"] .meter').classList.contains("bad")`) {
		t.Error("dana's spent premium budget is not drawn as spent")
	}
	if got := browsertest.Eval[string](t, br, `document.activeElement.getAttribute("aria-label")`); got != "Revoke key dana" {
		t.Errorf("the focus after the refresh is on %q; want it kept on dana's revoke button", got)
	}
	br.CheckConsole(t)
}
