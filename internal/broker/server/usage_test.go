package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const ledgerAdmin = "ledger-admin-0123456789abcdef"

// startLedger runs a broker whose state (SQLite in a directory, or
// PostgreSQL) holds the managed keys u1 and u2, with the broker keys proxy
// (reports) and ops (admin).
func startLedger(t *testing.T, engine string) *env {
	t.Helper()
	sc := store.Config{StateDir: t.TempDir()}
	if engine == "postgres" {
		sc = store.Config{DatabaseURL: pg.NewDatabase(t)}
	}
	st, err := store.Open(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"u1", "u2"} {
		if err := st.CreateKey(context.Background(), store.Key{Name: name, Digest: store.DigestOf("secret-of-" + name + "-0123456789")}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	set, err := keys.Parse(strings.NewReader("proxy:" + testKey + "\nops:" + ledgerAdmin + ":*:admin\n"))
	if err != nil {
		t.Fatal(err)
	}
	return start(t, sandbox.Config{}, Config{Keys: set, StateDir: sc.StateDir, DatabaseURL: sc.DatabaseURL})
}

func event(id, key, model string, at time.Time) *brokerv1.UsageEvent {
	return &brokerv1.UsageEvent{
		Id: id, Time: timestamppb.New(at), RequestId: id, Key: key, Account: "a", Model: model,
		Dialect: "openai-chat", Endpoint: "/chat/completions", Status: 200,
		InputTokens: 11, OutputTokens: 7, Premium: true, PremiumUnits: 1, ProxyId: "p1", UsageKnown: true,
	}
}

// report sends one batch and returns the acknowledgement.
func report(t *testing.T, e *env, key string, batch *brokerv1.ReportUsageRequest) (*brokerv1.ReportUsageResponse, error) {
	t.Helper()
	ctx := withKey(timeout(t, 10*time.Second), key)
	stream, err := brokerv1.NewUsageServiceClient(e.conn()).ReportUsage(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(batch); err != nil {
		_, err = stream.Recv() // io.EOF from Send: the status is Recv's
		return nil, err
	}
	ack, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	_ = stream.CloseSend()
	return ack, nil
}

func TestUsageReportAndQuery(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) { testUsageReportAndQuery(t, engine) })
	}
}

func testUsageReportAndQuery(t *testing.T, engine string) {
	e := startLedger(t, engine)
	now := time.Now().UTC()
	batch := &brokerv1.ReportUsageRequest{Batch: 1, Events: []*brokerv1.UsageEvent{
		event("e1", "u1", "gpt-4o", now), event("e2", "u1", "gpt-4o", now), event("e3", "u1", "claude-sonnet-4", now),
		event("e4", "u2", "gpt-4o", now), event("e5", "u2", "gpt-4o", now),
		event("e6", "stranger", "gpt-4o", now), // unknown key
		event("", "u1", "gpt-4o", now),         // no id
		event("e8", "u1", "gpt-4o", now.Add(48*time.Hour)),
	}}
	batch.Events = append(batch.Events, event("e9", "u1", "gpt-4o", now))
	batch.Events[8].InputTokens = -1
	ack, err := report(t, e, testKey, batch)
	if err != nil {
		t.Fatalf("ReportUsage: %v", err)
	}
	if ack.GetBatch() != 1 || ack.GetStored() != 5 || ack.GetDuplicates() != 0 || len(ack.GetRejected()) != 4 {
		t.Fatalf("ack = %v; want batch 1, 5 stored, 4 rejected", ack)
	}
	for i, want := range []string{`unknown key "stranger"`, "no id", "in the future", "negative token count"} {
		if !strings.Contains(ack.GetRejected()[i].GetReason(), want) {
			t.Errorf("rejection %d = %q; want it to say %q", i, ack.GetRejected()[i].GetReason(), want)
		}
	}
	// The stored events are the keys' last use; the refused ones are not.
	list, err := brokerv1.NewKeyServiceClient(e.conn()).ListKeys(withKey(timeout(t, 5*time.Second), ledgerAdmin), &brokerv1.ListKeysRequest{})
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	for _, k := range list.GetKeys() {
		if got, want := k.GetLastUsedAt().AsTime(), now.Truncate(time.Microsecond); !got.Equal(want) {
			t.Errorf("key %s: last used %v; want %v (its latest stored event)", k.GetName(), got, want)
		}
	}
	// Sent again (a lost acknowledgement): nothing is stored twice.
	batch.Batch = 2
	if ack, err = report(t, e, testKey, batch); err != nil || ack.GetStored() != 0 || ack.GetDuplicates() != 5 {
		t.Fatalf("resend: ack = %v, %v; want 0 stored, 5 duplicates", ack, err)
	}

	t.Run("bad reports", func(t *testing.T) {
		big := &brokerv1.ReportUsageRequest{Batch: 3}
		for i := range 1001 {
			big.Events = append(big.Events, event(fmt.Sprint("big", i), "u1", "m", now))
		}
		if _, err := report(t, e, testKey, big); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most 1000") {
			t.Errorf("oversized batch: %v; want InvalidArgument naming the bound", err)
		}
		if _, err := report(t, e, ledgerAdmin, batch); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "admin key") {
			t.Errorf("report with an admin key: %v; want PermissionDenied", err)
		}
		if _, err := report(t, e, "nope-0123456789abcdef", batch); status.Code(err) != codes.Unauthenticated {
			t.Errorf("report with an unknown broker key: %v; want Unauthenticated", err)
		}
	})

	t.Run("grpc query", func(t *testing.T) {
		c := brokerv1.NewUsageServiceClient(e.conn())
		req := &brokerv1.QueryUsageRequest{GroupBy: []string{"key,model"}}
		if _, err := c.QueryUsage(withKey(timeout(t, 5*time.Second), testKey), req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("query with a proxy's key: %v; want PermissionDenied", err)
		}
		resp, err := c.QueryUsage(withKey(timeout(t, 5*time.Second), ledgerAdmin), req)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprint(resp.GetRows())
		for _, want := range []string{`key:"u1" model:"claude-sonnet-4" requests:1`, `key:"u1" model:"gpt-4o" requests:2`, `key:"u2" model:"gpt-4o" requests:2`} {
			if !strings.Contains(strings.Join(strings.Fields(got), " "), want) {
				t.Errorf("rows %s; want %s", got, want)
			}
		}
		for _, bad := range []*brokerv1.QueryUsageRequest{{From: "yesterday"}, {GroupBy: []string{"colour"}}, {From: "2026-12-02", To: "2026-12-01"}} {
			if _, err := c.QueryUsage(withKey(timeout(t, 5*time.Second), ledgerAdmin), bad); status.Code(err) != codes.InvalidArgument {
				t.Errorf("query %v: %v; want InvalidArgument", bad, err)
			}
		}
	})

	t.Run("budgets", func(t *testing.T) {
		c := brokerv1.NewUsageServiceClient(e.conn())
		set := func(key string, req *brokerv1.SetBudgetRequest) (*brokerv1.SetBudgetResponse, error) {
			return c.SetBudget(withKey(timeout(t, 5*time.Second), key), req)
		}
		if _, err := set(testKey, &brokerv1.SetBudgetRequest{Key: "u1", MonthlyPremium: 10}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("SetBudget with a proxy's key: %v; want PermissionDenied", err)
		}
		if _, err := set(ledgerAdmin, &brokerv1.SetBudgetRequest{Key: "stranger", MonthlyPremium: 10}); status.Code(err) != codes.NotFound {
			t.Errorf("SetBudget of an unknown key: %v; want NotFound", err)
		}
		for _, bad := range []*brokerv1.SetBudgetRequest{{MonthlyPremium: 1}, {Key: "u1", Account: "a"}, {Key: "u1", Rpm: -1}, {Account: "a", Rpm: 5}, {Key: "u1", Fields: []string{"colour"}}} {
			if _, err := set(ledgerAdmin, bad); status.Code(err) != codes.InvalidArgument {
				t.Errorf("SetBudget(%v): %v; want InvalidArgument", bad, err)
			}
		}
		if _, err := set(ledgerAdmin, &brokerv1.SetBudgetRequest{Key: "u1", MonthlyPremium: 4, Rpm: 30}); err != nil {
			t.Fatal(err)
		}
		resp, err := set(ledgerAdmin, &brokerv1.SetBudgetRequest{Key: "u1", MonthlyTokens: 1000, Fields: []string{"monthly_tokens"}})
		if err != nil {
			t.Fatal(err)
		}
		// u1 has 3 premium events of 1 unit and 54 tokens this month.
		if b := resp.GetBudget(); b.GetMonthlyPremium() != 4 || b.GetRpm() != 30 || b.GetMonthlyTokens() != 1000 || b.GetPremiumSpent() != 3 || b.GetTokensSpent() != 54 {
			t.Errorf("budget after a partial update = %v; want premium 3 of 4, tokens 54 of 1000, rpm 30", b)
		}
		aw, err := c.WatchBudgets(withKey(timeout(t, 5*time.Second), ledgerAdmin), &brokerv1.WatchBudgetsRequest{ProxyId: "x"})
		if err == nil {
			_, err = aw.Recv()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("WatchBudgets with an admin key: %v; want PermissionDenied", err)
		}
		w, err := c.WatchBudgets(withKey(timeout(t, 5*time.Second), testKey), &brokerv1.WatchBudgetsRequest{ProxyId: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := w.Recv()
		if err != nil || len(got.GetBudgets()) != 1 || got.GetBudgets()[0].GetRpmShare() != 30 {
			t.Errorf("WatchBudgets = %v, %v; want u1's budget with the whole rpm as p1's share", got, err)
		}
	})

	t.Run("list budgets", func(t *testing.T) {
		c := brokerv1.NewUsageServiceClient(e.conn())
		list := func(key string, req *brokerv1.ListBudgetsRequest) (*brokerv1.ListBudgetsResponse, error) {
			return c.ListBudgets(withKey(timeout(t, 5*time.Second), key), req)
		}
		if _, err := list(testKey, &brokerv1.ListBudgetsRequest{}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("ListBudgets with a proxy's key: %v; want PermissionDenied", err)
		}
		// Account a holds all 5 stored premium events: a budget of 5 is spent.
		if _, err := c.SetBudget(withKey(timeout(t, 5*time.Second), ledgerAdmin), &brokerv1.SetBudgetRequest{Account: "a", MonthlyPremium: 5}); err != nil {
			t.Fatal(err)
		}
		resp, err := list(ledgerAdmin, &brokerv1.ListBudgetsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, b := range resp.GetBudgets() {
			got = append(got, fmt.Sprintf("%s%s premium %g/%g left %g tokens %d/%d left %d rpm %d %s", b.GetKey(), b.GetAccount(),
				b.GetPremiumSpent(), b.GetMonthlyPremium(), b.GetPremiumRemaining(), b.GetTokensSpent(), b.GetMonthlyTokens(), b.GetTokensRemaining(),
				b.GetRpm(), b.GetStatus()))
			if !b.GetResetsAt().AsTime().Equal(resp.GetResetsAt().AsTime()) {
				t.Errorf("budget %s resets %v; want the month's reset %v", b.GetKey()+b.GetAccount(), b.GetResetsAt().AsTime(), resp.GetResetsAt().AsTime())
			}
		}
		want := []string{
			"u1 premium 3/4 left 1 tokens 54/1000 left 946 rpm 30 BUDGET_STATUS_OK",
			"a premium 5/5 left 0 tokens 90/0 left 0 rpm 0 BUDGET_STATUS_EXCEEDED", // tokens counted, no token limit,
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("ListBudgets =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		start, reset := resp.GetPeriodStart().AsTime(), resp.GetResetsAt().AsTime()
		if !start.Before(now) || !now.Before(reset) || start.Day() != 1 || reset.Sub(start) < 28*24*time.Hour {
			t.Errorf("period %v to %v; want the calendar month holding %v", start, reset, now)
		}
		one, err := list(ledgerAdmin, &brokerv1.ListBudgetsRequest{Account: "a"})
		if err != nil || len(one.GetBudgets()) != 1 || one.GetBudgets()[0].GetAccount() != "a" {
			t.Errorf("ListBudgets(account a) = %v, %v; want a's budget alone", one, err)
		}
		// u1 over 80 % of its tokens: a warning.
		if _, err := c.SetBudget(withKey(timeout(t, 5*time.Second), ledgerAdmin), &brokerv1.SetBudgetRequest{Key: "u1", MonthlyTokens: 60, Fields: []string{"monthly_tokens"}}); err != nil {
			t.Fatal(err)
		}
		if one, err = list(ledgerAdmin, &brokerv1.ListBudgetsRequest{Key: "u1"}); err != nil || len(one.GetBudgets()) != 1 ||
			one.GetBudgets()[0].GetStatus() != brokerv1.BudgetStatus_BUDGET_STATUS_WARNING || one.GetBudgets()[0].GetTokensRemaining() != 6 {
			t.Errorf("ListBudgets(key u1) with 54 of 60 tokens spent = %v, %v; want a warning, 6 left", one, err)
		}

		get := func(key, query string) (int, string) {
			req, _ := http.NewRequest("GET", "http://"+e.srv.Addrs().HTTP+"/v1/budgets?"+query, nil)
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := httpClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		code, body := get(ledgerAdmin, "account=a")
		for _, want := range []string{`"account":"a"`, `"monthlyPremium":5`, `"premiumSpent":5`, `"premiumRemaining":0`, `"status":"BUDGET_STATUS_EXCEEDED"`, `"resetsAt":"`, `"periodStart":"`} {
			if code != 200 || !strings.Contains(strings.ReplaceAll(body, " ", ""), want) {
				t.Errorf("GET /v1/budgets?account=a = %d %s; want 200 with %s", code, body, want)
			}
		}
		if code, body := get(testKey, ""); code != 403 || !strings.Contains(body, "needs an admin broker key") {
			t.Errorf("GET /v1/budgets with a proxy's key = %d %s; want 403", code, body)
		}
	})

	t.Run("rest", func(t *testing.T) {
		day := now.Format(time.DateOnly)
		get := func(key, query, accept string) (int, string, string) {
			req, _ := http.NewRequest("GET", "http://"+e.srv.Addrs().HTTP+"/v1/usage?"+query, nil)
			req.Header.Set("Authorization", "Bearer "+key)
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			resp, err := httpClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
		}
		code, _, body := get(ledgerAdmin, "group_by=key&group_by=model&key=u1&from="+day+"&to="+day, "")
		want := `{"rows": [{"key": "u1", "model": "claude-sonnet-4", "requests": 1, "premium_requests": 1, "premium_units": 1, "input_tokens": 11, "output_tokens": 7, "cached_tokens": 0}, ` +
			`{"key": "u1", "model": "gpt-4o", "requests": 2, "premium_requests": 2, "premium_units": 2, "input_tokens": 22, "output_tokens": 14, "cached_tokens": 0}]}` + "\n"
		if code != 200 || body != want {
			t.Errorf("GET /v1/usage = %d %s; want 200 %s", code, body, want)
		}
		code, ctype, body := get(ledgerAdmin, "group_by=account,day", "text/csv")
		wantCSV := "account,day,requests,premium_requests,premium_units,input_tokens,output_tokens,cached_tokens\na," + day + ",5,5,5,55,35,0\n"
		if code != 200 || !strings.HasPrefix(ctype, "text/csv") || body != wantCSV {
			t.Errorf("GET /v1/usage as CSV = %d %s %q; want 200 text/csv %q", code, ctype, body, wantCSV)
		}
		for _, c := range []struct {
			key, query string
			code       int
			says       string
		}{
			{ledgerAdmin, "group_by=colour", 400, "not one of key, account, model, day"},
			{ledgerAdmin, "from=12/01/2026", 400, "neither a date"},
			{testKey, "", 403, "needs an admin broker key"},
			{"nope-0123456789abcdef", "", 401, "invalid broker key"},
		} {
			if code, _, body := get(c.key, c.query, ""); code != c.code || !strings.Contains(body, c.says) {
				t.Errorf("GET /v1/usage?%s = %d %s; want %d saying %q", c.query, code, body, c.code, c.says)
			}
		}
	})
}
