package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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
		fmt.Fprint(w, `{"result":{"accounts":[{"name":"alice","status":"TOKEN_STATUS_VALID","quota":{"plan":"business","snapshots":[{"kind":"premium_interactions","entitlement":300,"remaining":120,"percentRemaining":40}]},`+
			`"usageLimits":[{"kind":"session","percentRemaining":37,"entitlement":200,"remaining":74,"resetAt":"2099-01-01T00:00:00Z"},{"kind":"weekly","percentRemaining":90,"entitlement":100,"remaining":90}]}]}}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case "/v1/keys":
		fmt.Fprint(w, `{"keys":[]}`)
	case "/v1/proxies":
		fmt.Fprint(w, `{"proxies":[{"info":{"id":"px-1","instance":"i1","version":"v1.4.0 0123456789ab","startedAt":"2026-12-07T10:00:00Z"},`+
			`"address":"10.0.0.7:51234","connected":true,"lastSeenAt":"`+time.Now().UTC().Format(time.RFC3339)+`","upstreamErrors":{"rate_limited":3}}]}`)
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
	checkOverview(t, br)
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

// checkOverview: the overview shows each account's session and weekly
// limits, the proxies with their version and last contact, and the
// upstream errors by kind (TestUsagePage's API, whose registry is empty:
// "None.").
func checkOverview(t *testing.T, br *browsertest.Browser) {
	t.Helper()
	br.WaitJS(t, 10*time.Second, "the proxies table", `document.querySelector('#proxies-table tr[data-proxy="px-1"]')`)
	if got := browsertest.Eval[string](t, br, `document.querySelector('[data-account="alice"] [data-limit="session"]').textContent`); !strings.Contains(got, "37 % left") {
		t.Errorf("alice's session row = %q; want 37 %% left", got)
	}
	if got := browsertest.Eval[string](t, br, `document.querySelector('[data-account="alice"] [data-limit="weekly"]').textContent`); !strings.Contains(got, "90 % left") {
		t.Errorf("alice's weekly row = %q; want 90 %% left", got)
	}
	row := browsertest.Eval[string](t, br, `document.querySelector('#proxies-table tr[data-proxy="px-1"]').textContent`)
	for _, want := range []string{"px-1", "v1.4.0 0123456789ab", "connected", "ago", "10.0.0.7:51234"} {
		if !strings.Contains(row, want) {
			t.Errorf("the proxy row %q lacks %q", row, want)
		}
	}
	if got := browsertest.Eval[string](t, br, `document.getElementById("ov-upstream").textContent`); !strings.Contains(got, "None.") {
		t.Errorf("upstream errors = %q; want None. (no series in an empty registry)", got)
	}
	br.Screenshot(t, "console-overview-fleet")
}
