package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	bserver "github.com/copilot-broker/copilot-broker/internal/broker/server"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestStatusReachesBroker: the sandbox reports a session limit in an
// answer's x-usage-ratelimit-session; within seconds the broker's account
// status carries it (WatchAccounts), and ListProxies (gRPC and REST) shows
// the proxy with its version; upstream errors reach the broker's counter.
func TestStatusReachesBroker(t *testing.T) {
	st := startStack(t, stackOpts{
		broker: func(c *bserver.Config) {
			c.Keys = mustKeys(t, "proxy:"+brokerKey+"\nops:"+adminKey+":*:admin\n")
		},
		proxy: func(c *Config) { c.ProxyID, c.StatusInterval = "px-1", 2*time.Second },
	})
	cc, err := grpc.NewClient("passthrough:///"+st.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminKey)
	watch, err := brokerv1.NewTokenBrokerServiceClient(cc).WatchAccounts(ctx, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // the set as it is: no limits yet
		t.Fatal(err)
	}

	if err := st.sb.SetUsageLimits(sandbox.DefaultAccount, sandbox.UsageLimits{
		Session: &sandbox.UsageLimit{Entitlement: 200, Remaining: 74, ResetSeconds: 3600},
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if resp, body := st.do("POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`, nil); resp.StatusCode != 200 {
		t.Fatalf("request = %d %s", resp.StatusCode, body)
	}
	var got *brokerv1.UsageLimit
	for got == nil {
		msg, err := watch.Recv()
		if err != nil {
			t.Fatalf("waiting for the session limit in WatchAccounts: %v", err)
		}
		for _, l := range msg.GetAccounts()[0].GetUsageLimits() {
			if l.GetKind() == "session" {
				got = l
			}
		}
	}
	took := time.Since(start)
	t.Logf("the session limit reached the broker's account status %s after the request", took.Round(time.Millisecond))
	if got.GetPercentRemaining() != 37 || got.GetRemaining() != 74 || got.GetEntitlement() != 200 || got.GetProxyId() != "px-1" || got.GetResetAt() == nil {
		t.Errorf("session limit = %v; want 37 %% (74 of 200) from px-1 with a reset", got)
	}
	if took > 5*time.Second {
		t.Errorf("the session limit took %s to reach the broker; want within seconds", took)
	}

	list, err := brokerv1.NewProxyServiceClient(cc).ListProxies(ctx, &brokerv1.ListProxiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ps := list.GetProxies(); len(ps) != 1 || ps[0].GetInfo().GetId() != "px-1" || !ps[0].GetConnected() ||
		ps[0].GetInfo().GetVersion() == "" || ps[0].GetAddress() == "" || ps[0].GetInfo().GetStartedAt() == nil {
		t.Errorf("ListProxies = %v; want px-1, connected, with a version, address and start", ps)
	}
	req, _ := http.NewRequest("GET", "http://"+st.broker.Addrs().HTTP+"/v1/proxies", nil)
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rest struct {
		Proxies []struct {
			Info struct{ ID, Version string } `json:"info"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal(body, &rest); err != nil || resp.StatusCode != 200 || len(rest.Proxies) != 1 || rest.Proxies[0].Info.ID != "px-1" {
		t.Errorf("GET /v1/proxies = %d %s", resp.StatusCode, body)
	}

	// The session used up: the sandbox answers 429 (user_global_rate_limited), which the
	// broker counts from the proxy's next report.
	if err := st.sb.SetUsageLimits(sandbox.DefaultAccount, sandbox.UsageLimits{
		Session: &sandbox.UsageLimit{Entitlement: 200, Remaining: 0, ResetSeconds: 3600},
	}); err != nil {
		t.Fatal(err)
	}
	if resp, body := st.do("POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"again"}]}`, nil); resp.StatusCode != 429 {
		t.Fatalf("request with the session used up = %d %s; want 429", resp.StatusCode, body)
	}
	// It travels with the next report: the change of the session, or the
	// beat (StatusInterval) after it. A poll, bounded by ctx.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		list, err := brokerv1.NewProxyServiceClient(cc).ListProxies(ctx, &brokerv1.ListProxiesRequest{})
		if err != nil {
			t.Fatalf("waiting for the error count at the broker: %v", err)
		}
		if ps := list.GetProxies(); len(ps) == 1 && len(ps[0].GetUpstreamErrors()) > 0 {
			if errs := ps[0].GetUpstreamErrors(); errs["rate_limited"] != 1 || len(errs) != 1 {
				t.Errorf("upstream errors at the broker = %v; want rate_limited: 1 (user_global_rate_limited)", errs)
			}
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("the proxy's upstream error did not reach the broker")
		}
	}
	code, page := get(t, "http://"+st.broker.Addrs().Admin+"/metrics")
	for _, want := range []string{
		`copilot_broker_proxies{state="connected"} 1`,
		`copilot_broker_proxy_upstream_errors_total{kind="rate_limited"} 1`,
		`copilot_broker_account_usage_limit_percent_remaining{account="",kind="session"} 0`,
		`copilot_broker_proxy_last_seen_age_seconds{proxy="px-1"`,
	} {
		if code != 200 || !strings.Contains(page, want) {
			t.Errorf("the broker's /metrics (%d) lacks %s", code, want)
		}
	}
}
