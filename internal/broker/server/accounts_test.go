package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const aliceKey = "alice-key-0123456789abcdef"

// teamEnv is a sandbox with accounts alice and bob and a broker serving
// them from an accounts directory, with no default account.
type teamEnv struct {
	*env
	dir string
}

func startTeam(t *testing.T) *teamEnv {
	t.Helper()
	sb := startSandbox(t, sandbox.Config{})
	dir := t.TempDir()
	for _, name := range []string{"alice", "bob"} {
		tok, err := sb.AddAccount(sandbox.AccountConfig{Name: name, PremiumEntitlement: 50})
		if err != nil {
			t.Fatal(err)
		}
		writeAccount(t, dir, name, tok)
	}
	set, err := keys.Parse(strings.NewReader("proxy:" + testKey + "\nalice:" + aliceKey + ":alice\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		GitHubAPIURL: sb.URL, AccountsDir: dir, TokenFilePoll: 20 * time.Millisecond, Keys: set,
		Tune: fastTune, ShutdownTimeout: 5 * time.Second,
		QuotaTune: func(c *quota.PollerConfig) { c.MinPokeInterval = time.Millisecond },
	}
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return &teamEnv{env: &env{t: t, sb: sb, srv: srv}, dir: dir}
}

func writeAccount(t *testing.T, dir, name string, tok secret.Secret) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(tok.Reveal()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// waitAccounts reads WatchAccounts until ok holds for a message.
func waitAccounts(t *testing.T, stream brokerv1.TokenBrokerService_WatchAccountsClient, what string, ok func([]*brokerv1.Account) bool) []*brokerv1.Account {
	t.Helper()
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(m.GetAccounts()) {
			return m.GetAccounts()
		}
	}
}

func accountNames(accts []*brokerv1.Account) []string {
	var out []string
	for _, a := range accts {
		out = append(out, a.GetName())
	}
	return out
}

func allValidWithQuota(names ...string) func([]*brokerv1.Account) bool {
	return func(accts []*brokerv1.Account) bool {
		if !slices.Equal(accountNames(accts), names) {
			return false
		}
		for _, a := range accts {
			if a.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID || len(a.GetQuota().GetSnapshots()) == 0 {
				return false
			}
		}
		return true
	}
}

func premium(a *brokerv1.Account) *brokerv1.QuotaSnapshot {
	for _, s := range a.GetQuota().GetSnapshots() {
		if s.GetKind() == "premium_interactions" {
			return s
		}
	}
	return nil
}

func TestAccountsDir(t *testing.T) {
	e := startTeam(t)
	ctx := withKey(timeout(t, 30*time.Second), testKey)
	c := e.client()
	watch, err := c.WatchAccounts(ctx, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	accts := waitAccounts(t, watch, "alice and bob VALID with quota", allValidWithQuota("alice", "bob"))
	if p := premium(accts[0]); p.GetEntitlement() != 50 || p.GetRemaining() != 50 || p.GetExhausted() {
		t.Errorf("alice's premium quota = %+v; want 50 of 50", p)
	}
	if _, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{Account: "alice"}); err != nil {
		t.Errorf("GetToken(alice) = %v", err)
	}
	if _, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{}); status.Code(err) != codes.NotFound {
		t.Errorf("GetToken(default) without a default account = %v; want NOT_FOUND", err)
	}
	if st, ok := e.srv.AccountSnapshot("bob"); !ok || !st.Status.HasToken() {
		t.Errorf("AccountSnapshot(bob) = %v, %v", st.Status, ok)
	}

	// Health: a service name per account; the API's name is SERVING while
	// any account is (there is no default account); /readyz is ready.
	hc := healthpb.NewHealthClient(e.conn())
	for _, svc := range []string{HealthService("alice"), HealthService("bob"), "copilot.broker.v1.TokenBrokerService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %s = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}
	if got := adminStatus(t, e.env, "/readyz"); got != 200 {
		t.Errorf("/readyz = %d; want 200", got)
	}

	// A 402 reported by a proxy re-reads the account's quota at once.
	if err := e.sb.SpendQuota("alice"); err != nil {
		t.Fatal(err)
	}
	tok, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{Account: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{Account: "alice", RejectedGeneration: tok.GetToken().GetGeneration(),
		Reason: brokerv1.RefreshReason_REFRESH_REASON_QUOTA_EXCEEDED}); err != nil {
		t.Fatalf("RefreshToken(alice, quota exceeded) = %v", err)
	}
	waitAccounts(t, watch, "alice's quota spent", func(a []*brokerv1.Account) bool {
		return len(a) == 2 && premium(a[0]).GetExhausted() && premium(a[0]).GetRemaining() == 0
	})
	metrics := scrape(t, e.env)
	for _, want := range []string{
		`copilot_broker_quota_remaining{account="alice",kind="premium_interactions"} 0`,
		`copilot_broker_quota_exhausted{account="alice",kind="premium_interactions"} 1`,
		`copilot_broker_quota_entitlement{account="bob",kind="premium_interactions"} 50`,
		`copilot_broker_token_status{account="bob",status="VALID"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// An account added at runtime is picked up within the poll interval;
	// one removed ends its watch streams with NOT_FOUND.
	carol, err := e.sb.AddAccount(sandbox.AccountConfig{Name: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	writeAccount(t, e.dir, "carol", carol)
	waitAccounts(t, watch, "carol added", allValidWithQuota("alice", "bob", "carol"))
	bobWatch, err := c.WatchToken(ctx, &brokerv1.WatchTokenRequest{Account: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bobWatch.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(e.dir, "bob")); err != nil {
		t.Fatal(err)
	}
	if _, err := bobWatch.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("WatchToken(bob) after its file went = %v; want NOT_FOUND", err)
	}
	waitAccounts(t, watch, "bob removed", func(a []*brokerv1.Account) bool { return slices.Equal(accountNames(a), []string{"alice", "carol"}) })
	if m := scrape(t, e.env); strings.Contains(m, `account="bob"`) {
		t.Error("/metrics still has series of the removed account bob")
	}

	// A changed file is exchanged at once: a token GitHub refuses makes the
	// account REJECTED; the good one back makes it VALID.
	writeAccount(t, e.dir, "carol", secret.New("gho_not_known_to_github_000"))
	waitAccounts(t, watch, "carol rejected", func(a []*brokerv1.Account) bool {
		return len(a) == 2 && a[1].GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_REJECTED
	})
	writeAccount(t, e.dir, "carol", carol)
	waitAccounts(t, watch, "carol valid again", allValidWithQuota("alice", "carol"))
}

// A key limited to alice reads alice alone, by every route: the others are
// NOT_FOUND (404 on REST), lists included.
func TestAccountsKeyScope(t *testing.T) {
	e := startTeam(t)
	ctx := timeout(t, 30*time.Second)
	all, alice := withKey(ctx, testKey), withKey(ctx, aliceKey)
	c := e.client()
	watch, err := c.WatchAccounts(all, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitAccounts(t, watch, "alice and bob VALID", allValidWithQuota("alice", "bob"))

	list, err := c.ListAccounts(alice, &brokerv1.ListAccountsRequest{})
	if err != nil || !slices.Equal(accountNames(list.GetAccounts()), []string{"alice"}) {
		t.Errorf("ListAccounts(alice's key) = %v, %v; want [alice]", accountNames(list.GetAccounts()), err)
	}
	aw, err := c.WatchAccounts(alice, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := aw.Recv(); err != nil || !slices.Equal(accountNames(m.GetAccounts()), []string{"alice"}) {
		t.Errorf("WatchAccounts(alice's key) = %v, %v; want [alice]", m, err)
	}
	for _, account := range []string{"bob", "", "nobody"} {
		if _, err := c.GetToken(alice, &brokerv1.GetTokenRequest{Account: account}); status.Code(err) != codes.NotFound {
			t.Errorf("GetToken(%q) with alice's key = %v; want NOT_FOUND", account, err)
		}
		if _, err := c.RefreshToken(alice, &brokerv1.RefreshTokenRequest{Account: account, RejectedGeneration: 1}); status.Code(err) != codes.NotFound {
			t.Errorf("RefreshToken(%q) with alice's key = %v; want NOT_FOUND", account, err)
		}
		w, err := c.WatchToken(alice, &brokerv1.WatchTokenRequest{Account: account})
		if err == nil {
			_, err = w.Recv()
		}
		if status.Code(err) != codes.NotFound {
			t.Errorf("WatchToken(%q) with alice's key = %v; want NOT_FOUND", account, err)
		}
	}
	if _, err := c.GetToken(alice, &brokerv1.GetTokenRequest{Account: "alice"}); err != nil {
		t.Errorf("GetToken(alice) with alice's key = %v", err)
	}

	hc := httpClient(t)
	rest := func(method, path, body string) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+e.srv.Addrs().HTTP+path, rd)
		req.Header.Set("Authorization", "Bearer "+aliceKey)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// A watch stream sends its first message and stays open: read
		// one line.
		buf := make([]byte, 64<<10)
		n, _ := io.ReadAtLeast(resp.Body, buf, 1)
		return resp.StatusCode, string(buf[:n])
	}
	for _, tt := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/token?account=bob", "", 404},
		{"GET", "/v1/token", "", 404},
		{"GET", "/v1/token:watch?account=bob", "", 404},
		{"POST", "/v1/token:refresh", `{"account":"bob","rejectedGeneration":"1"}`, 404},
		{"GET", "/v1/token?account=alice", "", 200},
	} {
		if got, body := rest(tt.method, tt.path, tt.body); got != tt.want {
			t.Errorf("%s %s with alice's key = %d %s; want %d", tt.method, tt.path, got, body, tt.want)
		}
	}
	code, body := rest("GET", "/v1/accounts", "")
	var listed struct{ Accounts []struct{ Name string } }
	_ = json.Unmarshal([]byte(body), &listed)
	if code != 200 || len(listed.Accounts) != 1 || listed.Accounts[0].Name != "alice" {
		t.Errorf("GET /v1/accounts with alice's key = %d %s; want alice alone", code, body)
	}
	code, body = rest("GET", "/v1/accounts:watch", "")
	if code != 200 || !strings.Contains(body, `"name":"alice"`) || strings.Contains(body, `"name":"bob"`) {
		t.Errorf("GET /v1/accounts:watch with alice's key = %d %s; want alice alone", code, body)
	}
}

// scrape returns the admin /metrics page.
func scrape(t *testing.T, e *env) string {
	t.Helper()
	resp, err := httpClient(t).Get("http://" + e.srv.Addrs().Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The single token (here GITHUB_TOKEN's Config field) stays the default
// account beside the accounts directory; the API's own health name follows
// it, not the other accounts.
func TestAccountsDirWithDefaultAccount(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{})
	dir := t.TempDir()
	tok, err := sb.AddAccount(sandbox.AccountConfig{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	writeAccount(t, dir, "alice", tok)
	e := startBroker(t, sb, Config{AccountsDir: dir, TokenFilePoll: 20 * time.Millisecond})
	ctx := timeout(t, 30*time.Second)
	c := e.client()
	watch, err := c.WatchAccounts(ctx, &brokerv1.WatchAccountsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitAccounts(t, watch, "default and alice VALID", allValidWithQuota("", "alice"))
	if _, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{}); err != nil {
		t.Errorf("GetToken(default) = %v", err)
	}
	if was := sb.RevokeGitHubToken(sb.GitHubToken()); !was {
		t.Fatal("the default token was not accepted")
	}
	sb.InvalidateCopilotTokens()
	tokResp, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// A refresh with the revoked credential makes the default REJECTED.
	_, _ = c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: tokResp.GetToken().GetGeneration()})
	waitAccounts(t, watch, "default rejected", func(a []*brokerv1.Account) bool {
		return len(a) == 2 && a[0].GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_REJECTED
	})
	hc := healthpb.NewHealthClient(e.conn())
	want := map[string]healthpb.HealthCheckResponse_ServingStatus{
		"copilot.broker.v1.TokenBrokerService": healthpb.HealthCheckResponse_NOT_SERVING,
		HealthService("alice"):                 healthpb.HealthCheckResponse_SERVING,
		HealthService(""):                      healthpb.HealthCheckResponse_NOT_SERVING,
	}
	for svc, w := range want {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != w {
			t.Errorf("health %q = %v, %v; want %v", svc, resp.GetStatus(), err, w)
		}
	}
	// alice still has a token: the broker stays ready.
	if got := adminStatus(t, e, "/readyz"); got != 200 {
		t.Errorf("/readyz with only alice VALID = %d; want 200", got)
	}
}

// TestHealthAccountsNeedKey: the per-account health services answer a
// caller without a key, or with a key that may not read the account, as
// they answer for an account that does not exist (issue 22: the keyless
// health service named accounts).
func TestHealthAccountsNeedKey(t *testing.T) {
	e := startTeam(t)
	ctx := timeout(t, 30*time.Second)
	hc := healthpb.NewHealthClient(e.conn())
	// alice's own key sees her account become SERVING.
	own, err := hc.Watch(withKey(ctx, aliceKey), &healthpb.HealthCheckRequest{Service: HealthService("alice")})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := own.Recv()
		if err != nil {
			t.Fatalf("Watch(alice) with alice's key: %v; want SERVING", err)
		}
		if m.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
	}
	answer := func(ctx context.Context, svc string) string {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		return fmt.Sprintf("%v %v", resp.GetStatus(), err)
	}
	watchFirst := func(ctx context.Context, svc string) string {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return err.Error()
		}
		m, err := w.Recv()
		return fmt.Sprintf("%v %v", m.GetStatus(), err)
	}
	unknown := answer(ctx, HealthService("nobody"))
	if !strings.Contains(unknown, "NotFound") {
		t.Fatalf("health of an unknown account = %s; want NotFound", unknown)
	}
	unknownWatch := watchFirst(ctx, HealthService("nobody"))
	for _, c := range []struct {
		name    string
		ctx     context.Context
		account string
	}{
		{"no key", ctx, "alice"},
		{"no key", ctx, "bob"},
		{"wrong key", withKey(ctx, "not-a-key-0123456789"), "alice"},
		{"alice's key", withKey(ctx, aliceKey), "bob"},
	} {
		if got := answer(c.ctx, HealthService(c.account)); got != unknown {
			t.Errorf("%s: Check(%s) = %s; want the unknown account's %s", c.name, c.account, got, unknown)
		}
		if got := watchFirst(c.ctx, HealthService(c.account)); got != unknownWatch {
			t.Errorf("%s: Watch(%s) = %s; want the unknown account's %s", c.name, c.account, got, unknownWatch)
		}
	}
	list, err := hc.List(ctx, &healthpb.HealthListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for name := range list.GetStatuses() {
		if strings.HasPrefix(name, HealthService("")) {
			t.Errorf("List without a key names %q", name)
		}
	}
	if _, ok := list.GetStatuses()["copilot.broker.v1.TokenBrokerService"]; !ok {
		t.Errorf("List without a key = %v; want the API's service", list.GetStatuses())
	}
	// The proxy's key (every account) still sees both.
	for _, a := range []string{"alice", "bob"} {
		if got := answer(withKey(ctx, testKey), HealthService(a)); strings.Contains(got, "NotFound") {
			t.Errorf("Check(%s) with the all-accounts key = %s", a, got)
		}
	}
}
