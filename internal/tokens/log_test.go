package tokens

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// TestLogsHoldNoSecret runs a whole lifecycle against a hostile fake GitHub
// that echoes the credential in every error body: success, 500, 403 rate
// limit, 429, a malformed 200 that holds a token, success, 401, a new
// credential refused with 403, a third credential, a forced refresh. Neither
// the logs (text and JSON) nor any published LastError may contain 8
// consecutive characters of any credential or Copilot token.
func TestLogsHoldNoSecret(t *testing.T) {
	creds := []string{"ghu_Q7rT2mX9pL4vN8kW3zB6cY1dF5hJ0sA", "gho_M4nB8vC2xZ6lK0jH3gF7dS1aP9oI5uY", "ghu_E3wR7tY1uI5oP9aS2dF6gH0jK4lZ8xC"}
	var (
		mu     sync.Mutex
		issued []string
		calls  int
	)
	clk := clock.NewFake(t0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		auth := r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		answer := func() {
			// Fields that legitimately appear elsewhere (sku, proxy-ep) are
			// left out so any 8-character window is distinctive.
			tok := fmt.Sprintf("tid=c4f1%d9e2b7a;exp=%d;8kp=1:9f3e%d1c2a8b7d6e5", n, clk.Now().Unix()+1800, n)
			mu.Lock()
			issued = append(issued, tok)
			mu.Unlock()
			w.Header().Set("Date", clk.Now().UTC().Format(http.TimeFormat))
			fmt.Fprintf(w, `{"token":%q,"expires_at":%d,"refresh_in":1500,"endpoints":{"api":"https://api.githubcopilot.com"},"sku":"monthly_subscriber"}`, tok, clk.Now().Unix()+1800)
		}
		switch n {
		case 1, 6, 9, 10:
			answer()
		case 2:
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"message":"internal error for %s"}`, auth)
		case 3:
			w.WriteHeader(403)
			fmt.Fprintf(w, `{"message":"API rate limit exceeded for %s"}`, auth)
		case 4:
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(429)
			fmt.Fprintf(w, `{"message":"slow down %s"}`, auth)
		case 5:
			fmt.Fprintf(w, `{"token":"tid=leak5;exp=1;sig=a7b3c9d1e5f2", "refresh_in": "soon %s"}`, auth)
		case 7:
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"message":"Bad credentials %s"}`, auth)
		case 8:
			w.WriteHeader(403)
			fmt.Fprintf(w, `{"message":"no","error_details":{"message":"No access for %s","notification_id":"no_copilot_access %s"}}`, auth, auth)
		default:
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()

	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	text := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ex := NewExchanger(ExchangeConfig{APIURL: srv.URL, HTTPClient: srv.Client(), Clock: clk})
	var states []State
	m := newTestManager(t, clk, nil, func(c *ManagerConfig) {
		c.GitHubToken = secret.New(creds[0])
		c.Exchange = ex.Exchange
		c.Logger = logger
	})
	updates, cancel := m.Subscribe()
	defer cancel()
	wait := func(what string, pred func(State) bool) {
		t.Helper()
		st := waitState(t, updates, what, pred)
		states = append(states, st, m.Snapshot())
		text.Info("state", "state", st) // a State logged whole must be safe too
	}
	wait("generation 1", isGen(1, StatusValid))
	for i := 0; m.Snapshot().Generation < 2; i++ { // calls 2-5 fail, 6 succeeds
		if i > 20 {
			t.Fatal("no generation 2 after 20 timer steps")
		}
		waitTimer(t, clk)
		clk.AdvanceToNext()
		waitTimer(t, clk)
		states = append(states, m.Snapshot())
	}
	wait("generation 2", isGen(2, StatusValid))
	waitTimer(t, clk)
	clk.AdvanceToNext()
	wait("rejected", hasStatus(StatusRejected))
	m.SetGitHubToken(secret.New(creds[1]))
	wait("rejected again", func(s State) bool {
		return s.Status == StatusRejected && strings.Contains(s.LastError, "no_copilot_access")
	})
	m.SetGitHubToken(secret.New(creds[2]))
	wait("generation 3", isGen(3, StatusValid))
	clk.Advance(time.Minute)
	if st, err := m.ForceRefresh(context.Background(), 3); err != nil || st.Generation != 4 {
		t.Fatalf("ForceRefresh(3) = generation %d, %v; want 4", st.Generation, err)
	}
	states = append(states, m.Snapshot())
	_ = m.Close()

	out := logs.String()
	for _, s := range states {
		out += "\n" + s.LastError
		text.Info("state", "state", s)
	}
	out += logs.String()
	mu.Lock()
	secrets := append(append([]string{}, creds...), issued...)
	nIssued := len(issued)
	mu.Unlock()
	if nIssued != 4 {
		t.Fatalf("tokens issued = %d; want 4 (the lifecycle did not run as scripted)", nIssued)
	}
	secrets = append(secrets, "tid=leak5;exp=1;sig=a7b3c9d1e5f2")
	const window = 8
	for _, s := range secrets {
		for i := 0; i+window <= len(s); i++ {
			if sub := s[i : i+window]; strings.Contains(out, sub) {
				t.Fatalf("output holds %q, a piece of a secret", sub)
			}
		}
	}
	// The logs must still say something useful: generations and fingerprints.
	for _, want := range []string{`"generation":4`, secret.New(issued[3]).Fingerprint(), "no_copilot_access", "rate limited", "HTTP 500"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	if testing.Verbose() {
		t.Log(logs.String())
	}
}

func TestDefaultedAPIBaseURLLogsAWarning(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	ok := up.ok(1500*time.Second, 1800*time.Second)
	up.setAnswer(func(n int, c secret.Secret) (*CopilotToken, error) {
		tok, err := ok(n, c)
		tok.APIBaseURLDefaulted = true
		return tok, err
	})
	var logs testutil.SyncBuffer
	m := newTestManager(t, clk, up, func(c *ManagerConfig) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	updates, cancel := m.Subscribe()
	defer cancel()
	st := waitState(t, updates, "generation 1", isGen(1, StatusValid))
	if st.APIBaseURL != "https://api.githubcopilot.com" {
		t.Errorf("api base URL %q", st.APIBaseURL)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "no endpoints.api") {
		t.Errorf("log %q; want a warning about the missing endpoints.api", logs.String())
	}
}
