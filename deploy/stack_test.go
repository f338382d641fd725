package deploy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// stackTimeout bounds each wait on the binaries (building, starting, a
// series appearing): generous, the machine is small and shared.
const stackTimeout = 60 * time.Second

// buildBinaries compiles the main module's commands (sandbox, broker,
// proxy) into a temporary directory and returns it.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/...")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	return dir
}

// proc is a running binary whose output is kept for the failure message.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// startProc runs bin with args and env added to this process's, and waits
// for a line of its output that re matches; it returns the submatches.
func startProc(t *testing.T, name, bin string, args, env []string, re *regexp.Regexp) (*proc, []string) {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	r, w := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	found := make(chan []string, 1)
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.Write(sc.Bytes())
			p.out.WriteByte('\n')
			p.mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m:
				default:
				}
			}
		}
	}()
	go func() { _ = p.cmd.Wait(); _ = w.Close() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	select {
	case m := <-found:
		return p, m
	case <-p.done:
		t.Fatalf("%s exited before it listened:\n%s", name, p.logs())
	case <-time.After(stackTimeout):
		t.Fatalf("%s did not print %q within %s:\n%s", name, re, stackTimeout, p.logs())
	}
	return nil, nil
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitOK polls url until it answers 200, or fails the test after stackTimeout.
func waitOK(t *testing.T, p *proc, url string) {
	t.Helper()
	deadline := time.Now().Add(stackTimeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not 200 within %s (last error %v):\n%s", p.name, url, stackTimeout, err, p.logs())
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", p.name, p.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// do sends one request and returns its status and body; a transport error
// fails the test.
func do(t *testing.T, method, url, bearer string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

var (
	sandboxListening = regexp.MustCompile(`sandbox listening on (http://\S+)`)
	brokerListening  = regexp.MustCompile(`broker listening: grpc=(\S+) http=(\S+) admin=(\S+)`)
	proxyListening   = regexp.MustCompile(`proxy listening: http=(\S+) admin=(\S+)`)
)

// scrapeStack runs a sandbox with two accounts and a default one, a broker serving them and a
// proxy with a per-account key and a pool key, sends traffic that makes
// the lazily created series exist (answered requests, a pool failover, a
// pool with no member left, upstream rate limits, a REST call at the
// broker), and returns the /metrics text of the broker and of the proxy.
func scrapeStack(t *testing.T) (broker, proxy string) {
	t.Helper()
	bins := buildBinaries(t)
	dir := t.TempDir()
	_, m := startProc(t, "sandbox", filepath.Join(bins, "sandbox"),
		[]string{"--addr", "127.0.0.1:0", "--chunks", "2", "--chunk-delay", "1ms", "--github-token-file", filepath.Join(dir, "gh")}, nil, sandboxListening)
	sb := m[1]
	acctDir := filepath.Join(dir, "accounts")
	if err := os.Mkdir(acctDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alice", "bob"} {
		code, body := do(t, "POST", sb+"/_sandbox/accounts", "", map[string]string{"name": name})
		var out struct{ Token string }
		if code != 200 || json.Unmarshal(body, &out) != nil {
			t.Fatalf("sandbox: adding account %s: %d %s", name, code, body)
		}
		writeFile(t, filepath.Join(acctDir, name), out.Token)
	}
	brokerKey, adminKey := randomHex(t), randomHex(t)
	writeFile(t, filepath.Join(dir, "broker-keys"), "proxy:"+brokerKey+"\nops:"+adminKey+":*:admin\n")
	bp, m := startProc(t, "broker", filepath.Join(bins, "broker"), []string{
		"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--github-api-url", sb, "--github-token-file", filepath.Join(dir, "gh"), "--accounts-dir", acctDir, "--keys-file", filepath.Join(dir, "broker-keys"),
		"--state-dir", filepath.Join(dir, "state"),
	}, nil, brokerListening)
	grpcAddr, brokerHTTP, brokerAdmin := m[1], "http://"+m[2], "http://"+m[3]
	waitOK(t, bp, brokerAdmin+"/readyz")
	// A budget makes the copilot_broker_budget_* gauges exist (one series
	// per budget; none without).
	setBudget := exec.Command(filepath.Join(bins, "broker"), "accounts", "set-budget", "alice", "100", "--broker-addr", grpcAddr)
	setBudget.Env = append(os.Environ(), "BROKER_ADMIN_KEY="+adminKey)
	if out, err := setBudget.CombinedOutput(); err != nil {
		t.Fatalf("broker accounts set-budget: %v\n%s", err, out)
	}

	// A key without accounts uses the default account's stream (the
	// copilot_proxy_broker_* series); the others watch per account.
	poolKey, aliceKey, plainKey := randomHex(t), randomHex(t), randomHex(t)
	writeFile(t, filepath.Join(dir, "api-keys"), "pool:"+poolKey+":alice,bob\nalice:"+aliceKey+":alice\nplain:"+plainKey+"\n")
	pp, m := startProc(t, "proxy", filepath.Join(bins, "proxy"), []string{
		"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--broker-addr", grpcAddr,
		"--keys-file", filepath.Join(dir, "api-keys"), "--copilot-api-url", sb,
	}, []string{"PROXY_BROKER_KEY=" + brokerKey}, proxyListening)
	proxyURL, proxyAdmin := "http://"+m[1], "http://"+m[2]
	waitOK(t, pp, proxyAdmin+"/readyz")

	chat := func(key string) int {
		code, _ := do(t, "POST", proxyURL+"/v1/chat/completions", key,
			map[string]any{"model": "gpt-4.1", "messages": []map[string]string{{"role": "user", "content": "hello"}}})
		return code
	}
	if code := chat(poolKey); code != 200 {
		t.Fatalf("a chat completion through the proxy = %d; want 200", code)
	}
	if code := chat(plainKey); code != 200 {
		t.Fatalf("a chat completion on the default account = %d; want 200", code)
	}
	if code, body := do(t, "GET", brokerHTTP+"/v1/accounts", brokerKey, nil); code != 200 {
		t.Fatalf("GET /v1/accounts = %d %s", code, body)
	}
	if code, _ := do(t, "GET", brokerHTTP+"/v1/accounts", "wrong-"+brokerKey, nil); code != 401 {
		t.Fatalf("GET /v1/accounts with a wrong key = %d; want 401", code)
	}
	// bob rate limited: the pool fails over to alice; then alice too: the
	// pool has no member left, and alice's own key sees the upstream's 429.
	fault := map[string]any{"status": 429, "retry_after_seconds": 1, "until_cleared": true}
	do(t, "POST", sb+"/_sandbox/accounts/bob/faults/api", "", fault)
	for range 3 {
		chat(poolKey)
	}
	do(t, "POST", sb+"/_sandbox/accounts/alice/faults/api", "", fault)
	chat(aliceKey)
	chat(poolKey)

	scrape := func(url string) string {
		code, body := do(t, "GET", url+"/metrics", "", nil)
		if code != 200 {
			t.Fatalf("GET %s/metrics = %d", url, code)
		}
		return string(body)
	}
	return scrape(brokerAdmin), scrape(proxyAdmin)
}

// metricFamilies returns the metric names in a Prometheus text exposition:
// each sample's name (so a histogram gives its _bucket, _sum and _count).
func metricFamilies(text string) map[string]bool {
	names := map[string]bool{}
	for line := range strings.Lines(text) {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

func TestMetricFamilies(t *testing.T) {
	got := metricFamilies("# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\nb 2\nh_bucket{le=\"1\"} 0\n\n")
	for _, want := range []string{"a_total", "b", "h_bucket"} {
		if !got[want] {
			t.Errorf("metricFamilies lacks %s: %v", want, got)
		}
	}
	if len(got) != 3 {
		t.Errorf("metricFamilies = %v; want 3 names", got)
	}
}
