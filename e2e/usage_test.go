package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/store"
)

// ledgerEngines are the broker's stores the ledger tests run on, each a
// subtest: the same suite passes on both.
var ledgerEngines = []string{"sqlite", "postgres"}

// forEachEngine runs f as a subtest per store engine, one after the other
// (the budget tests' timing bounds want the machine to themselves).
// PostgreSQL is skipped without its binaries, except in CI (pgtest).
func forEachEngine(t *testing.T, f func(t *testing.T, engine string)) {
	for _, e := range ledgerEngines {
		t.Run(e, func(t *testing.T) { f(t, e) })
	}
}

// usageLoad is how long the exactness run keeps its steady load on each
// engine: the 60 s on SQLite; 30 s on PostgreSQL, which holds both
// broker kills and the proxy restart with room between them (the same
// events, the same delivery code; only the store differs) and keeps the
// e2e package's wall time near four minutes on the 2-core CI machine.
var usageLoad = map[string]time.Duration{"sqlite": 60 * time.Second, "postgres": 30 * time.Second}

// ledgerStack is a sandbox with one account per client key, a broker with a
// ledger (the keys managed there), and the broker's admin key.
type ledgerStack struct {
	sb       *sandboxProc
	b        *brokerProc
	admin    string
	keys     map[string]string // client key name → secret
	keysFile string            // the proxies' keys file content
}

// startLedgerStack starts the stack with the broker's store on engine
// ("sqlite": a state directory; "postgres": a fresh database of the test
// binary's server, given in BROKER_DATABASE_URL).
func startLedgerStack(t *testing.T, engine string, accounts []string, extra ...string) *ledgerStack {
	t.Helper()
	acctDir, stateDir := t.TempDir(), t.TempDir()
	cfg, storeArgs, env := store.Config{StateDir: stateDir}, []string{"--state-dir", stateDir}, []string(nil)
	if engine == "postgres" {
		url := pg.NewDatabase(t) // skips (fails in CI) without PostgreSQL; dropped after the broker stops
		cfg, storeArgs, env = store.Config{DatabaseURL: url}, nil, []string{"BROKER_DATABASE_URL=" + url}
	}
	sb := startSandbox(t, sandboxOpts{lifetime: time.Hour, refreshIn: 30 * time.Minute, chunks: 3, chunkDelay: time.Millisecond})
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ls := &ledgerStack{sb: sb, admin: randomKey(t), keys: map[string]string{}}
	var lines []string
	for _, a := range accounts {
		var out struct{ Token string }
		sb.admin(t, "POST", "accounts", map[string]any{"name": a}, &out)
		writeSecretFile(t, filepath.Join(acctDir, a), out.Token)
		name, secret := "k-"+a, randomKey(t)
		ls.keys[name] = secret
		lines = append(lines, fmt.Sprintf("%s:%s:%s", name, secret, a))
		if err := st.CreateKey(context.Background(), store.Key{Name: name, Digest: store.DigestOf(secret), Accounts: a}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	ls.keysFile = strings.Join(lines, "\n") + "\n"
	kd := t.TempDir()
	proxyKey := randomKey(t)
	keysFile := filepath.Join(kd, "broker-keys")
	writeSecretFile(t, keysFile, "e2e-proxy:"+proxyKey+"\nops:"+ls.admin+":*:admin\n")
	args := append([]string{
		"serve",
		"--grpc-addr", anyPort, "--http-addr", anyPort, "--admin-addr", anyPort,
		"--github-api-url", sb.url, "--accounts-dir", acctDir, "--keys-file", keysFile,
		"--log-format", "text", "--log-level", "debug",
	}, append(storeArgs, extra...)...)
	p := startProc(t, "broker", built.broker, args, env)
	bound := p.boundAddrs(t, brokerListening)
	p.pinArgs(map[string]string{"--grpc-addr": bound[0], "--http-addr": bound[1], "--admin-addr": bound[2]})
	ls.b = &brokerProc{proc: p, grpcAddr: bound[0], httpURL: "http://" + bound[1], adminURL: "http://" + bound[2], key: proxyKey, client: newHTTPClient(t)}
	ls.b.waitReady(t)
	return ls
}

func (ls *ledgerStack) proxy(t *testing.T, id string, extra ...string) *proxyProc {
	t.Helper()
	keysFile := filepath.Join(t.TempDir(), "api-keys")
	writeSecretFile(t, keysFile, ls.keysFile)
	p := startProc(t, "proxy-"+id, built.proxy, append([]string{
		"serve", "--addr", anyPort, "--admin-addr", anyPort, "--proxy-id", id,
		"--broker-addr", ls.b.grpcAddr, "--keys-file", keysFile, "--copilot-api-url", ls.sb.url,
		"--shutdown-grace", "20s", "--log-format", "text", "--log-level", "debug",
	}, extra...), []string{"PROXY_BROKER_KEY=" + ls.b.key})
	bound := p.boundAddrs(t, proxyListening)
	p.pinArgs(map[string]string{"--addr": bound[0], "--admin-addr": bound[1]})
	px := &proxyProc{proc: p, url: "http://" + bound[0], adminURL: "http://" + bound[1]}
	waitHTTP(t, p, px.adminURL+"/readyz", startTimeout)
	return px
}

// usage queries the broker's ledger over REST with the admin key.
func (ls *ledgerStack) usage(t *testing.T, query string) (int, []map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", ls.b.httpURL+"/v1/usage?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+ls.admin)
	resp, err := ls.b.client.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Rows []map[string]any `json:"rows"`
	}
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("GET /v1/usage: %v: %s", err, body)
		}
	}
	return resp.StatusCode, out.Rows, string(body)
}

// dialectCall is one request shape of the load: a client dialect, streamed
// or not.
type dialectCall struct {
	path, model string
	stream      bool
}

func (d dialectCall) body(n int) string {
	switch d.path {
	case "/v1/responses":
		return fmt.Sprintf(`{"model":%q,"stream":%t,"input":"question %d"}`, d.model, d.stream, n)
	case "/v1/messages":
		return fmt.Sprintf(`{"model":%q,"stream":%t,"max_tokens":200,"messages":[{"role":"user","content":"question %d"}]}`, d.model, d.stream, n)
	}
	return fmt.Sprintf(`{"model":%q,"stream":%t,"messages":[{"role":"user","content":"question %d"}]}`, d.model, d.stream, n)
}

var usageCalls = []dialectCall{
	{"/v1/chat/completions", "gpt-4.1", false}, {"/v1/chat/completions", "gpt-4.1", true},
	{"/v1/responses", "gpt-5-mini", false}, {"/v1/responses", "gpt-5-mini", true},
	{"/v1/messages", "claude-3.5-haiku", false}, {"/v1/messages", "claude-3.5-haiku", true},
}

// post sends one call and reads the whole answer.
func post(client *http.Client, url, key string, d dialectCall, n int) (int, http.Header, string, error) {
	req, _ := http.NewRequest("POST", url+d.path, strings.NewReader(d.body(n)))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// sandboxUsage is GET /_sandbox/stats's usage: "account/model" → counts.
type sandboxUsage map[string]struct {
	Requests, Premium, Input, Output, Cached int
}

func (sb *sandboxProc) usage(t *testing.T) sandboxUsage {
	t.Helper()
	var st struct {
		Usage sandboxUsage `json:"usage"`
	}
	sb.admin(t, http.MethodGet, "stats", nil, &st)
	return st.Usage
}

// TestUsageLedgerExact: three proxies under steady load in all three
// dialects, streamed and not; the broker SIGKILLed twice and one proxy
// restarted meanwhile. The ledger's totals per key and model equal the
// sandbox's own count of the completions it answered and the tokens it
// reported: nothing lost, nothing counted twice. On SQLite and PostgreSQL.
func TestUsageLedgerExact(t *testing.T) { forEachEngine(t, testUsageLedgerExact) }

func testUsageLedgerExact(t *testing.T, engine string) {
	accounts := []string{"alice", "bob", "carol"}
	usageLoad := usageLoad[engine]
	ls := startLedgerStack(t, engine, accounts)
	proxies := []*proxyProc{ls.proxy(t, "p1"), ls.proxy(t, "p2"), ls.proxy(t, "p3")}
	var names []string
	for n := range ls.keys {
		names = append(names, n)
	}
	sort.Strings(names)

	var (
		ok, failed atomic.Int64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	client := newHTTPClient(t)
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := names[(w+i)%len(names)]
				code, _, _, err := post(client, proxies[(w+i)%3].url, ls.keys[name], usageCalls[(w*7+i)%len(usageCalls)], i)
				if err == nil && code == 200 {
					ok.Add(1)
				} else {
					failed.Add(1) // a proxy restarting refuses connections: never upstream, never counted
				}
			}
		})
	}
	began := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(began.Add(d))) }
	at(usageLoad * 2 / 10)
	ls.b.kill()
	time.Sleep(time.Second)
	ls.b.restart(t)
	ls.b.waitReady(t)
	at(usageLoad * 4 / 10)
	proxies[1].signal(t, syscall.SIGTERM)
	if err := proxies[1].wait(t, 30*time.Second); err != nil {
		t.Errorf("proxy p2 after SIGTERM: %v", err)
	}
	proxies[1].restart(t)
	waitHTTP(t, proxies[1].proc, proxies[1].adminURL+"/readyz", startTimeout)
	at(usageLoad * 6 / 10)
	ls.b.kill()
	time.Sleep(2 * time.Second)
	ls.b.restart(t)
	ls.b.waitReady(t)
	at(usageLoad)
	close(stop)
	wg.Wait()
	t.Logf("load: %d answered, %d failed (connections refused while p2 restarted)", ok.Load(), failed.Load())
	if ok.Load() < 300 {
		t.Fatalf("only %d requests answered in %s; the load did not run", ok.Load(), usageLoad)
	}

	want := map[string]string{} // "key/model" → sums
	for acctModel, c := range ls.sb.usage(t) {
		acct, model, _ := strings.Cut(acctModel, "/")
		want["k-"+acct+"/"+model] = fmt.Sprintf("requests=%d premium=%d input=%d output=%d cached=%d", c.Requests, c.Premium, c.Input, c.Output, c.Cached)
	}
	got := map[string]string{}
	day := time.Now().UTC().Format(time.DateOnly)
	for _, q := range []string{
		"group_by=key,model&from=" + day + "&to=" + day, // the daily rollups
		"group_by=key&group_by=model&from=" + began.Add(-time.Minute).UTC().Format(time.RFC3339) + "&to=" + time.Now().Add(time.Minute).UTC().Format(time.RFC3339), // the events
	} {
		waitFor(t, 30*time.Second, "the ledger to hold the sandbox's count", func() bool {
			code, rows, body := ls.usage(t, q)
			if code != 200 {
				t.Logf("GET /v1/usage?%s = %d %s", q, code, body)
				return false
			}
			got = map[string]string{}
			for _, r := range rows {
				got[fmt.Sprint(r["key"], "/", r["model"])] = fmt.Sprintf("requests=%v premium=%v input=%v output=%v cached=%v",
					r["requests"], r["premium_requests"], r["input_tokens"], r["output_tokens"], r["cached_tokens"])
			}
			return fmt.Sprint(got) == fmt.Sprint(want)
		})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ledger per key and model:\n%v\nsandbox:\n%v", got, want)
	}
	t.Logf("ledger equals the sandbox's count: %v", got)

	// The same sums as an admin's table.
	out, err := ls.cli(t, "usage", "--group-by", "key,model", "--from", day, "--to", day)
	if err != nil || !strings.HasPrefix(out, "key  ") || strings.Count(out, "\n") != len(want)+1 {
		t.Errorf("broker usage = %v:\n%s", err, out)
	}
	t.Logf("broker usage:\n%s", out)
	if out, err := ls.cli(t, "usage", "--group-by", "colour"); err == nil || !strings.Contains(out, "not one of key, account, model, day") {
		t.Errorf("broker usage --group-by colour = %v: %s; want an error naming the groups", err, out)
	}
}

// cli runs the broker binary with the admin key and returns its output.
func (ls *ledgerStack) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(built.broker, append(args, "--broker-addr", ls.b.grpcAddr)...)
	cmd.Env = append(os.Environ(), "BROKER_ADMIN_KEY="+ls.admin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
