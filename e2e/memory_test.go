package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/translate"
	"github.com/copilot-broker/copilot-broker/internal/tokencount"
)

// deploySetting reads an environment variable the shipped proxy Deployment
// sets (deploy/kubernetes/proxy-deployment.yaml), and its memory limit.
func deploySettings(t *testing.T) (env map[string]string, limit int64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "kubernetes", "proxy-deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	env = map[string]string{}
	for _, m := range regexp.MustCompile(`- name: (\w+)\n\s+value: "?([^"\n]*)"?`).FindAllSubmatch(b, -1) {
		env[string(m[1])] = string(m[2])
	}
	m := regexp.MustCompile(`limits:\n\s+memory: (\d+)Mi`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no memory limit in the proxy Deployment")
	}
	mi, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return env, mi << 20
}

// peakRSS is the most resident memory process pid has held (Linux's VmHWM).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// toolsRequest is a Chat request of about size bytes for a model that
// serves /v1/messages only, made of one-line tool results: the body whose
// translation costs the most memory per byte.
func toolsRequest(model string, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"` + model + `","messages":[{"role":"user","content":"go"},{"role":"assistant","tool_calls":[`)
	n := size / 150
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"c%d","type":"function","function":{"name":"f","arguments":"{}"}}`, i)
	}
	b.WriteString(`]}`)
	for i := range n {
		fmt.Fprintf(&b, `,{"role":"tool","tool_call_id":"c%d","content":"ok"}`, i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// resultsRequest is a Messages request of about size bytes for a model
// that serves /chat/completions only, whose last turn is a tool result of
// one-word text blocks: among the bodies whose translation costs the most
// memory per byte.
func resultsRequest(model string, size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"` + model + `","max_tokens":100,"messages":[{"role":"user","content":"go"},` +
		`{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[`)
	for i := range size / 30 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"type":"text","text":"line"}`)
	}
	b.WriteString(`]}]}]}`)
	return b.Bytes()
}

// countRequest is a count_tokens body of about size bytes of short turns.
func countRequest(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"claude-sonnet-4.5","messages":[`)
	for i := range size / 32 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"user","content":"hi"}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// TestMemoryUnderShippedLimits runs a proxy with the shipped Kubernetes
// memory settings (GOMEMLIMIT and the in-flight body budget of
// deploy/kubernetes) and sends it, at once, the bodies that cost the most
// memory: translated requests of one-line tool results, a translated body
// far over what translation may hold, and large count_tokens bodies. The
// proxy must stay under the pod's memory limit and answer what it cannot
// hold with 503 and Retry-After (or 413 for a body no budget could hold) in
// the client's dialect (issue 22: one translated 31 MiB body peaked at
// 777 MB, over the 512 MiB limit).
func TestMemoryUnderShippedLimits(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector multiplies memory use: run without -race")
	}
	env, podLimit := deploySettings(t)
	var procEnv []string
	for _, k := range []string{"GOMEMLIMIT", "PROXY_MAX_BODY_BYTES", "PROXY_MAX_INFLIGHT_BODY_BYTES"} {
		if env[k] == "" {
			t.Fatalf("the proxy Deployment sets no %s", k)
		}
		procEnv = append(procEnv, k+"="+env[k])
	}
	budget, _ := strconv.ParseInt(env["PROXY_MAX_INFLIGHT_BODY_BYTES"], 10, 64) // a key's share is half
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second})
	br := startBroker(t, sb)
	px := startProxyEnvNoWait(t, br, procEnv, "--copilot-api-url", sb.url)
	waitHTTP(t, px.proc, px.adminURL+"/readyz", startTimeout)
	// Answers may take a while on a busy machine: longer than the usual
	// client's header timeout.
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 3 * time.Minute}

	type result struct {
		name   string
		code   int
		retry  string
		body   string
		client string // the dialect the error must be in: openai or anthropic
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	send := func(name, path, client string, body []byte) {
		wg.Go(func() {
			req, err := http.NewRequest(http.MethodPost, px.url+path, bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+px.apiKey)
			if client == "anthropic" {
				req.Header.Set("Anthropic-Version", "2023-06-01")
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				return
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			mu.Lock()
			results = append(results, result{name, resp.StatusCode, resp.Header.Get("Retry-After"), string(b), client})
			mu.Unlock()
		})
	}
	// The largest translated body a key's share (half the budget) admits,
	// several at once; one far over it; count_tokens bodies, one near the
	// body limit (over what a share can count) and some that fit.
	translatable := int(budget / 2 / translate.MemoryFactor * 9 / 10)
	mid := resultsRequest(chatOnlyModel, translatable)
	for i := range 6 {
		send(fmt.Sprintf("translated %d KiB #%d", len(mid)>>10, i), "/v1/messages", "anthropic", mid)
	}
	send("translated 30 MiB", "/v1/chat/completions", "openai", toolsRequest(messagesOnlyModel, 30<<20))
	send("count_tokens 26 MiB", "/v1/messages/count_tokens", "anthropic", countRequest(26<<20))
	count := countRequest(int(budget / 2 / tokencount.MemoryFactor * 9 / 10))
	for i := range 3 {
		send(fmt.Sprintf("count_tokens %d MiB #%d", len(count)>>20, i), "/v1/messages/count_tokens", "anthropic", count)
	}
	wg.Wait()

	refused := 0
	for _, r := range results {
		t.Logf("%s: %d (Retry-After %q) %.120s", r.name, r.code, r.retry, r.body)
		switch r.code {
		case http.StatusOK:
		case http.StatusServiceUnavailable, http.StatusRequestEntityTooLarge:
			if r.code == http.StatusServiceUnavailable {
				refused++
				if r.retry == "" {
					t.Errorf("%s: 503 without Retry-After", r.name)
				}
			}
			var e struct {
				Type  string          `json:"type"`
				Error json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal([]byte(r.body), &e); err != nil || len(e.Error) == 0 || (r.client == "anthropic") != (e.Type == "error") {
				t.Errorf("%s: error body %q is not in the %s dialect", r.name, r.body, r.client)
			}
		default:
			t.Errorf("%s: %d %.200s; want 200, or 503 with Retry-After, or 413", r.name, r.code, r.body)
		}
	}
	if refused == 0 {
		t.Error("no request was refused with 503: the bodies all fit, so this test proves nothing")
	}
	if resp, err := hc.Get(px.adminURL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the proxy is not alive after the load: %v", err)
	} else {
		resp.Body.Close()
	}
	peak := peakRSS(t, px.cmd.Process.Pid)
	t.Logf("peak RSS %d MiB under GOMEMLIMIT %s, pod limit %d MiB", peak>>20, env["GOMEMLIMIT"], podLimit>>20)
	if peak >= podLimit {
		t.Errorf("peak RSS %d MiB >= the pod's memory limit %d MiB", peak>>20, podLimit>>20)
	}
}
