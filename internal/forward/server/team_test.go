package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// teamSource is a broker.Source under the test's control: one account's
// token state, delivered latest-wins to subscribers.
type teamSource struct {
	mu   sync.Mutex
	st   tokens.State
	subs map[chan tokens.State]bool
}

func newTeamSource(name string) *teamSource {
	s := &teamSource{subs: map[chan tokens.State]bool{}}
	s.st = teamState(name, 1, tokens.StatusValid)
	return s
}

func teamState(name string, gen uint64, st tokens.Status) tokens.State {
	s := tokens.State{Account: name, Generation: gen, Epoch: "team", Status: st, APIBaseURL: "https://api.githubcopilot.com"}
	if st.HasToken() {
		s.Token = secret.New(fmt.Sprintf("tok-%s-%d", name, gen))
		s.ExpiresAt = time.Now().Add(time.Hour)
	}
	return s
}

func (s *teamSource) Snapshot() tokens.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *teamSource) Subscribe() (<-chan tokens.State, func()) {
	ch := make(chan tokens.State, 1)
	s.mu.Lock()
	ch <- s.st
	s.subs[ch] = true
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, ch)
			s.mu.Unlock()
			close(ch)
		})
	}
}

func (s *teamSource) publish(st tokens.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	for ch := range s.subs {
		select {
		case <-ch:
		default:
		}
		ch <- st
	}
}

func (s *teamSource) ForceRefresh(context.Context, uint64) (tokens.State, error) {
	return s.Snapshot(), nil
}

// teamUpstream answers per account, chosen from the token's name.
type teamUpstream struct {
	mu     sync.Mutex
	mode   map[string]string // "", "revoked", "rate_limited", "quota_spent"
	reset  time.Time         // carol's quota reset
	served map[string]int
}

func (u *teamUpstream) set(account, mode string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.mode[account] = mode
}

func (u *teamUpstream) count(account string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.served[account]
}

func (u *teamUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer tok-")
	account := tok[:strings.LastIndexByte(tok, '-')]
	u.mu.Lock()
	mode, reset := u.mode[account], u.reset
	if mode == "" {
		u.served[account]++
	}
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch mode {
	case "revoked":
		w.WriteHeader(401)
		fmt.Fprint(w, `{"error":{"message":"unauthorized"}}`)
	case "rate_limited":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"message":"rate limited","code":"rate_limited"}}`)
	case "quota_spent":
		w.Header().Set("X-Quota-Snapshot-Chat", "ent=50&rem=0&ovPerm=false&rst="+reset.UTC().Format(time.RFC3339))
		w.WriteHeader(402)
		fmt.Fprint(w, `{"error":{"message":"quota exceeded","code":"quota_exceeded"}}`)
	default:
		fmt.Fprintf(w, `{"account":%q,"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}`, account)
	}
}

const (
	teamKey  = "team-api-key-0123456789"
	allKey   = "all-api-key-0123456789"
	aliceOwn = "alice-own-key-0123456789"
	bobOwn   = "bob-own-key-0123456789"
)

// TestTeamPoolsUnderLoad runs two proxies against a broker with three
// accounts under steady load, and changes the team while it runs: an
// account added, one revoked, one rate limited, one's quota spent and
// reset, one removed. Pool requests never fail while a member is usable;
// per-person keys see their own account's errors.
func TestTeamPoolsUnderLoad(t *testing.T) {
	srcs := map[string]*teamSource{"alice": newTeamSource("alice"), "bob": newTeamSource("bob"), "carol": newTeamSource("carol")}
	svc, err := broker.NewService(broker.Config{Accounts: map[string]broker.Source{"alice": srcs["alice"], "bob": srcs["bob"], "carol": srcs["carol"]}})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	brokerv1.RegisterTokenBrokerServiceServer(gs, svc)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///broker", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); svc.Close(); gs.Stop() })

	up := &teamUpstream{mode: map[string]string{}, served: map[string]int{}}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)

	ks := mustKeys(t, "team:"+teamKey+":alice,bob,carol,dave\nall:"+allKey+":*\nalice:"+aliceOwn+":alice\nbob:"+bobOwn+":bob\n")
	var proxies []*Server
	for range 2 {
		p, err := Start(context.Background(), Config{
			Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Broker: brokerv1.NewTokenBrokerServiceClient(conn),
			Keys: ks, CopilotAPIURL: upSrv.URL, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			ShutdownGrace: 5 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := p.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		proxies = append(proxies, p)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	post := func(p *Server, key string, conv int) (int, string) {
		body := fmt.Sprintf(`{"model":"gpt-4.1","messages":[{"role":"user","content":"conversation %d"}]}`, conv)
		req, _ := http.NewRequest("POST", "http://"+p.Addrs().HTTP+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	// Steady load on both pool keys through both proxies.
	var (
		failures atomic.Int64
		sent     atomic.Int64
		firstErr atomic.Value
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := teamKey
				if g%2 == 1 {
					key = allKey
				}
				code, body := post(proxies[(g+i)%2], key, g*1000+i%50)
				sent.Add(1)
				if code != 200 {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", code, body))
				}
			}
		})
	}
	stopLoad := func() {
		close(stop)
		wg.Wait()
	}
	defer func() {
		select {
		case <-stop:
		default:
			stopLoad()
		}
	}()
	// flowed waits until the load has sent n more requests: each phase
	// below runs the pools through its situation for that many requests,
	// whatever the machine's speed, rather than for a time.
	flowed := func(n int64, phase string) {
		t.Helper()
		target := sent.Load() + n
		for deadline := time.Now().Add(20 * time.Second); sent.Load() < target; {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the load sent %d of %d requests in 20 s", phase, sent.Load()-target+n, n)
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
	}
	flowed(40, "steady state")

	// An account added at runtime is picked up by both proxies at once
	// (WatchAccounts pushes; the broker's own directory poll comes before).
	srcs["dave"] = newTeamSource("dave")
	added := time.Now()
	if err := svc.AddAccount("dave", srcs["dave"], nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range proxies {
		for {
			if _, err := p.AccountToken("dave"); err == nil {
				break
			}
			if time.Since(added) > time.Second {
				t.Fatalf("a proxy had no token for dave 1 s after he was added")
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
	}

	// alice is revoked: the upstream refuses her token at once, the broker
	// says REJECTED a little later.
	up.set("alice", "revoked")
	flowed(10, "alice refused upstream")
	srcs["alice"].publish(teamState("alice", 1, tokens.StatusRejected))
	// bob is rate limited (Retry-After 1 s, again and again).
	up.set("bob", "rate_limited")
	flowed(40, "alice REJECTED, bob rate limited")
	// alice's own key sees her account's error.
	if code, body := post(proxies[0], aliceOwn, 1); code != 503 && code != 401 {
		t.Errorf("alice's own key after revocation = %d %s; want 503 (REJECTED) or the upstream's 401", code, body)
	}
	// bob's own key sees his 429.
	if code, body := post(proxies[1], bobOwn, 1); code != 429 || !strings.Contains(body, "rate limited") {
		t.Errorf("bob's own key while rate limited = %d %s; want the upstream's 429", code, body)
	}

	// carol's quota is spent for 1.5 s, then reset.
	up.mu.Lock()
	up.reset = time.Now().Add(1500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	up.mu.Unlock()
	up.set("carol", "quota_spent")
	flowed(40, "carol's quota spent")
	up.set("carol", "")
	carolBefore := up.count("carol")
	deadline := time.Now().Add(5 * time.Second)
	for up.count("carol") == carolBefore {
		if time.Now().After(deadline) {
			t.Fatal("carol served nothing within 5 s of her quota reset")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}

	// bob is removed: both proxies drop him.
	svc.RemoveAccount("bob")
	for _, p := range proxies {
		deadline := time.Now().Add(2 * time.Second)
		for {
			if _, err := p.AccountToken("bob"); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a proxy still had bob's token 2 s after his removal")
			}
			time.Sleep(5 * time.Millisecond) // polling with a deadline
		}
	}
	flowed(20, "bob removed")
	stopLoad()

	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d pool requests failed while a member was usable; first: %v", n, sent.Load(), firstErr.Load())
	}
	if up.count("dave") == 0 {
		t.Error("dave, added at runtime, served no pool request")
	}
	// The series on /metrics: usage per key and account, the pool's view.
	var usageSeen bool
	for _, p := range proxies {
		m := scrape(t, p)
		for _, key := range []string{"team", "all"} {
			usageSeen = usageSeen || m.samples[fmt.Sprintf(`copilot_proxy_usage_tokens_total{account="dave",key=%q,model="gpt-4.1",type="input"}`, key)] > 0
		}
		if m.samples[`copilot_proxy_account_connected{account="dave"}`] != 1 {
			t.Errorf("copilot_proxy_account_connected{account=dave} = %v; want 1", m.samples[`copilot_proxy_account_connected{account="dave"}`])
		}
		if _, ok := m.samples[`copilot_proxy_account_connected{account="bob"}`]; ok {
			t.Error("bob, removed, still has a copilot_proxy_account_connected series")
		}
		for s := range m.samples {
			if strings.Contains(s, "tok-") {
				t.Errorf("/metrics holds a token: %s", s)
			}
		}
	}
	if !usageSeen {
		t.Error("no input tokens counted for dave on either proxy")
	}
	t.Logf("%d pool requests; served: alice %d, bob %d, carol %d, dave %d", sent.Load(),
		up.count("alice"), up.count("bob"), up.count("carol"), up.count("dave"))
}
