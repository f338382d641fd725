package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// teamPoll is the broker's --token-file-poll in the team test: how soon it
// sees an account file added or removed.
const teamPoll = 300 * time.Millisecond

// TestTeamAccounts runs a broker with three accounts (an accounts
// directory) and two proxies whose keys map to people and pools, under
// steady load on the pool keys, and changes the team while it runs: an
// account added, one revoked, one rate limited, one's quota spent then
// reset, one removed. Pool requests see no failure while a member is
// usable; per-person keys see their own account's errors; the proxies pick
// up the added account within the poll interval plus 1 s.
func TestTeamAccounts(t *testing.T) {
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Second, refreshIn: 2 * time.Second, chunks: 2, chunkDelay: time.Millisecond})
	acctDir := t.TempDir()
	addAccount := func(name string) {
		t.Helper()
		var out struct{ Token string }
		sb.admin(t, "POST", "accounts", map[string]any{"name": name}, &out)
		writeSecretFile(t, filepath.Join(acctDir, name), out.Token)
	}
	for _, n := range []string{"alice", "bob", "carol"} {
		addAccount(n)
	}
	b := startTeamBroker(t, sb, acctDir)

	keys := map[string]string{"team": randomKey(t), "all": randomKey(t), "alice": randomKey(t), "bob": randomKey(t)}
	keyFile := fmt.Sprintf("team:%s:alice,bob,carol,dave\nall:%s:*\nalice:%s:alice\nbob:%s:bob\n", keys["team"], keys["all"], keys["alice"], keys["bob"])
	proxies := []*proxyProc{startTeamProxy(t, b, sb, keyFile), startTeamProxy(t, b, sb, keyFile)}

	client := newHTTPClient(t)
	post := func(px *proxyProc, key string, conv int) (int, http.Header, string) {
		body := fmt.Sprintf(`{"model":"gpt-4.1","messages":[{"role":"user","content":"conversation %d"}]}`, conv)
		req, _ := http.NewRequest("POST", px.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	// Steady load on both pool keys through both proxies, with plain HTTP
	// (the SDKs retry 429s themselves, which would hide failures).
	var (
		ok, failed atomic.Int64
		mu         sync.Mutex
		errs       []string
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		began      = time.Now()
	)
	for w := range 4 {
		wg.Go(func() {
			key := keys[[]string{"team", "all"}[w%2]]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				code, _, body := post(proxies[(w+i)%2], key, w*100+i%20)
				if code == 200 {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				mu.Lock()
				if len(errs) < 10 {
					errs = append(errs, fmt.Sprintf("+%s: %d %.200s", time.Since(began).Round(time.Millisecond), code, body))
				}
				mu.Unlock()
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)
	time.Sleep(time.Second)

	// dave joins: the proxies watch him within the poll interval plus 1 s.
	added := time.Now()
	addAccount("dave")
	for _, px := range proxies {
		waitGoal(t, added, teamPoll+time.Second, "a proxy watching dave with a VALID token", func() bool {
			return metric(t, px, `copilot_proxy_account_token_status{account="dave",status="VALID"}`) == 1
		})
	}
	t.Logf("dave picked up by both proxies %s after his file was written", time.Since(added).Round(time.Millisecond))

	// alice is revoked: the broker's next refresh is refused (REJECTED);
	// her own key then gets 503, the pools go on without her.
	sb.admin(t, "POST", "accounts/alice/revoke", nil, nil)
	waitFor(t, 45*time.Second, "alice's own key refused", func() bool {
		code, _, _ := post(proxies[0], keys["alice"], 1)
		return code == 503
	})

	// bob is rate limited: his own key sees the 429, the pools go on.
	sb.admin(t, "POST", "accounts/bob/faults/api", map[string]any{"status": 429, "retry_after_seconds": 1, "until_cleared": true}, nil)
	if code, h, body := post(proxies[1], keys["bob"], 1); code != 429 || h.Get("Retry-After") == "" {
		t.Errorf("bob's own key while rate limited = %d (Retry-After %q) %s; want the upstream's 429", code, h.Get("Retry-After"), body)
	}

	// carol's quota is spent, then reset.
	sb.admin(t, "POST", "accounts/carol/spend-quota", nil, nil)
	time.Sleep(2 * time.Second)
	sb.admin(t, "POST", "accounts/carol/reset-quota", nil, nil)
	time.Sleep(time.Second)

	// bob leaves the team: his file is removed, the proxies drop him.
	if err := os.Remove(filepath.Join(acctDir, "bob")); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	for _, px := range proxies {
		waitGoal(t, removed, teamPoll+2*time.Second, "a proxy dropping bob", func() bool {
			return metric(t, px, `copilot_proxy_account_connected{account="bob"}`) < 0
		})
	}
	time.Sleep(time.Second)
	stopLoad()

	t.Logf("pool load: %d requests succeeded, %d failed, over %s", ok.Load(), failed.Load(), time.Since(began).Round(time.Millisecond))
	if failed.Load() != 0 {
		t.Errorf("%d pool requests failed while a member was usable; want 0. First:\n%s", failed.Load(), strings.Join(errs, "\n"))
	}
	if ok.Load() < 50 {
		t.Errorf("%d pool requests succeeded; want at least 50", ok.Load())
	}
	// dave served pool requests; alice's revocation and carol's spent quota
	// were seen by the proxies.
	var daveUsage float64
	for _, px := range proxies {
		daveUsage += metric(t, px, `copilot_proxy_usage_requests_total{account="dave",key="team",model="gpt-4.1"}`)
		daveUsage += metric(t, px, `copilot_proxy_usage_requests_total{account="dave",key="all",model="gpt-4.1"}`)
	}
	if daveUsage <= 0 {
		t.Error("dave, added at runtime, served no pool request")
	}
}

// startTeamBroker runs a broker serving the accounts of dir.
func startTeamBroker(t *testing.T, sb *sandboxProc, dir string) *brokerProc {
	t.Helper()
	kd := t.TempDir()
	key := randomKey(t)
	keysFile := filepath.Join(kd, "broker-keys")
	writeSecretFile(t, keysFile, "e2e-proxy:"+key+"\n")
	p := startProc(t, "broker", built.broker, []string{
		"serve",
		"--grpc-addr", anyPort, "--http-addr", anyPort, "--admin-addr", anyPort,
		"--github-api-url", sb.url,
		"--accounts-dir", dir, "--token-file-poll", teamPoll.String(),
		"--keys-file", keysFile, "--state-dir", filepath.Join(kd, "state"),
		"--log-format", "text", "--log-level", "debug",
	}, nil)
	bound := p.boundAddrs(t, brokerListening)
	grpcAddr, httpAddr, adminAddr := bound[0], bound[1], bound[2]
	p.pinArgs(map[string]string{"--grpc-addr": grpcAddr, "--http-addr": httpAddr, "--admin-addr": adminAddr})
	b := &brokerProc{proc: p, grpcAddr: grpcAddr, httpURL: "http://" + httpAddr, adminURL: "http://" + adminAddr, key: key, client: newHTTPClient(t)}
	b.waitReady(t)
	return b
}

// startTeamProxy runs a proxy with the given keys file content.
func startTeamProxy(t *testing.T, b *brokerProc, sb *sandboxProc, keys string) *proxyProc {
	t.Helper()
	keysFile := filepath.Join(t.TempDir(), "api-keys")
	writeSecretFile(t, keysFile, keys)
	p := startProc(t, "proxy", built.proxy, []string{
		"serve", "--addr", anyPort, "--admin-addr", anyPort,
		"--broker-addr", b.grpcAddr, "--keys-file", keysFile, "--copilot-api-url", sb.url,
		"--log-format", "text", "--log-level", "debug",
	}, []string{"PROXY_BROKER_KEY=" + b.key})
	bound := p.boundAddrs(t, proxyListening)
	px := &proxyProc{proc: p, url: "http://" + bound[0], adminURL: "http://" + bound[1]}
	waitHTTP(t, p, px.adminURL+"/readyz", startTimeout)
	return px
}

// metric returns the value of one series on the proxy's /metrics, or -1
// when it is absent.
func metric(t *testing.T, px *proxyProc, series string) float64 {
	t.Helper()
	resp, err := http.Get(px.adminURL + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}
