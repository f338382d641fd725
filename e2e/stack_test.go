package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// startTimeout bounds how long a binary may take to become ready; generous
// because the machine is small and shared, and the binaries may carry the
// race detector.
const startTimeout = 30 * time.Second

// sandboxOpts are the sandbox's settings for one test.
type sandboxOpts struct {
	lifetime   time.Duration // lifetime of issued Copilot tokens
	refreshIn  time.Duration // refresh_in of the exchange answer
	chunks     int           // content chunks per stream
	chunkDelay time.Duration // delay between chunks
}

// sandboxProc is a running sandbox and the GitHub token it accepts.
type sandboxProc struct {
	*proc
	url       string // base URL: fake GitHub, Copilot API and /_sandbox/ admin
	tokenFile string // the accepted GitHub token, as the broker reads it
	client    *http.Client
}

func startSandbox(t *testing.T, o sandboxOpts) *sandboxProc {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "github-token")
	args := []string{
		"--addr", anyPort,
		"--token-lifetime", o.lifetime.String(),
		"--refresh-in", o.refreshIn.String(),
		"--chunks", fmt.Sprint(o.chunks),
		"--chunk-delay", o.chunkDelay.String(),
		"--github-token-file", tokenFile,
	}
	p := startProc(t, "sandbox", built.sandbox, args, nil)
	url := p.boundAddrs(t, sandboxListening)[0]
	sb := &sandboxProc{proc: p, url: url, tokenFile: tokenFile, client: newHTTPClient(t)}
	waitHTTP(t, p, sb.url+"/_sandbox/stats", startTimeout)
	return sb
}

// sandboxStats is the part of GET /_sandbox/stats the tests read.
type sandboxStats struct {
	Exchanges map[int]int            `json:"exchanges"`
	API       map[string]map[int]int `json:"api"`
}

// exchanges returns the number of exchanges answered with status (0: all).
func (s sandboxStats) exchanges(status int) int {
	n := 0
	for st, c := range s.Exchanges {
		if status == 0 || st == status {
			n += c
		}
	}
	return n
}

// apiCalls returns the Copilot API calls answered with status, all paths.
func (s sandboxStats) apiCalls(status int) int {
	n := 0
	for _, byStatus := range s.API {
		n += byStatus[status]
	}
	return n
}

func (sb *sandboxProc) stats(t *testing.T) sandboxStats {
	t.Helper()
	var st sandboxStats
	sb.admin(t, http.MethodGet, "stats", nil, &st)
	return st
}

// failExchanges makes every exchange answer status until clearFaults.
func (sb *sandboxProc) failExchanges(t *testing.T, status int) {
	t.Helper()
	sb.admin(t, http.MethodPost, "faults/exchange", map[string]any{"status": status, "until_cleared": true}, nil)
}

func (sb *sandboxProc) clearFaults(t *testing.T) {
	t.Helper()
	sb.admin(t, http.MethodDelete, "faults", nil, nil)
}

// revoke makes the exchange answer 401 for the GitHub token tok.
func (sb *sandboxProc) revoke(t *testing.T, tok string) {
	t.Helper()
	sb.admin(t, http.MethodPost, "github-tokens/revoke", map[string]string{"token": tok}, nil)
}

// accept makes the exchange accept the GitHub token tok.
func (sb *sandboxProc) accept(t *testing.T, tok string) {
	t.Helper()
	sb.admin(t, http.MethodPost, "github-tokens/add", map[string]string{"token": tok}, nil)
}

// githubToken returns the GitHub token the sandbox wrote at start.
func (sb *sandboxProc) githubToken(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(sb.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (sb *sandboxProc) admin(t *testing.T, method, path string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, sb.url+"/_sandbox/"+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := sb.client.Do(req)
	if err != nil {
		t.Fatalf("sandbox admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("sandbox admin %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("sandbox admin %s %s: decoding %q: %v", method, path, b, err)
		}
	}
}

// What each binary prints once its listeners are bound (cmd/*/main.go).
var (
	sandboxListening = regexp.MustCompile(`sandbox listening on (http://\S+)`)
	brokerListening  = regexp.MustCompile(`broker listening: grpc=(\S+) http=(\S+) admin=(\S+)`)
	proxyListening   = regexp.MustCompile(`proxy listening: http=(\S+) admin=(\S+)`)
)

// brokerProc is a running broker.
type brokerProc struct {
	*proc
	grpcAddr, httpURL, adminURL string
	tokenFile                   string // --github-token-file
	key                         string // the broker key the proxies and tests present
	client                      *http.Client
}

// startBroker runs a broker against sb, reading the GitHub token from a copy
// of the sandbox's token file (so a test can replace it), with one broker key.
func startBroker(t *testing.T, sb *sandboxProc, extra ...string) *brokerProc {
	t.Helper()
	return startBrokerEnv(t, sb, nil, extra...)
}

// startBrokerEnv is startBroker with extra environment variables.
func startBrokerEnv(t *testing.T, sb *sandboxProc, env []string, extra ...string) *brokerProc {
	t.Helper()
	return startBrokerKeys(t, sb, "", env, extra...)
}

// startBrokerKeys is startBrokerEnv with more lines for the broker's keys
// file (an admin key).
func startBrokerKeys(t *testing.T, sb *sandboxProc, moreKeys string, env []string, extra ...string) *brokerProc {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "github-token")
	writeSecretFile(t, tokenFile, sb.githubToken(t))
	key := randomKey(t)
	keysFile := filepath.Join(dir, "broker-keys")
	writeSecretFile(t, keysFile, "# broker keys of the e2e test\ne2e-proxy:"+key+"\n"+moreKeys)
	args := []string{
		"serve",
		"--grpc-addr", anyPort,
		"--http-addr", anyPort,
		"--admin-addr", anyPort,
		"--github-api-url", sb.url,
		"--github-token-file", tokenFile,
		"--keys-file", keysFile,
		"--state-dir", filepath.Join(dir, "state"), // never the user's own
		"--log-format", "text",
		"--log-level", "debug",
	}
	args = append(args, extra...)
	p := startProc(t, "broker", built.broker, args, env)
	bound := p.boundAddrs(t, brokerListening)
	grpcAddr, httpAddr, adminAddr := bound[0], bound[1], bound[2]
	p.pinArgs(map[string]string{"--grpc-addr": grpcAddr, "--http-addr": httpAddr, "--admin-addr": adminAddr})
	b := &brokerProc{
		proc: p, grpcAddr: grpcAddr, httpURL: "http://" + httpAddr, adminURL: "http://" + adminAddr,
		tokenFile: tokenFile, key: key, client: newHTTPClient(t),
	}
	b.waitReady(t)
	return b
}

func (b *brokerProc) waitReady(t *testing.T) {
	t.Helper()
	waitHTTP(t, b.proc, b.adminURL+"/readyz", startTimeout)
}

// token asks the REST gateway for the current token. It returns the HTTP
// status and, on 200, the token; on another status, the body.
func (b *brokerProc) token(t *testing.T) (int, *brokerv1.Token, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.httpURL+"/v1/token", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.key)
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, string(body)
	}
	var out brokerv1.GetTokenResponse
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /v1/token: decoding %s: %v", body, err)
	}
	return resp.StatusCode, out.GetToken(), ""
}

// validToken waits for the broker to hold a VALID token and returns it.
func (b *brokerProc) validToken(t *testing.T) *brokerv1.Token {
	t.Helper()
	var tok *brokerv1.Token
	waitFor(t, startTimeout, "broker token VALID", func() bool {
		_, tok, _ = b.token(t)
		return tok.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_VALID
	})
	return tok
}

// apiService is the broker API's name in grpc.health.v1: its status follows
// the token (SERVING while one can be handed out), while "" means the process
// is alive.
var apiService = brokerv1.TokenBrokerService_ServiceDesc.ServiceName

// health asks the broker's grpc.health.v1 service about svc ("" is the
// whole server), without a broker key as a load balancer or kubelet would.
func (b *brokerProc) health(t *testing.T, svc string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(b.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		t.Fatalf("grpc.health.v1 Check(%q): %v", svc, err)
	}
	return resp.GetStatus()
}

// proxyProc is a running proxy.
type proxyProc struct {
	*proc
	url, adminURL string
	apiKey        string // the client API key
}

// startProxy runs a proxy on b, forwarding to the sandbox's Copilot API.
func startProxy(t *testing.T, b *brokerProc, sb *sandboxProc, extra ...string) *proxyProc {
	t.Helper()
	return startProxyArgs(t, b, append([]string{"--copilot-api-url", sb.url}, extra...)...)
}

// startProxyArgs runs a proxy on b with extra arguments and no
// --copilot-api-url of its own: the token's api_base_url decides, unless
// extra names one.
func startProxyArgs(t *testing.T, b *brokerProc, extra ...string) *proxyProc {
	t.Helper()
	px := startProxyNoWait(t, b, extra...)
	waitHTTP(t, px.proc, px.adminURL+"/readyz", startTimeout)
	return px
}

// startProxyNoWait is startProxyArgs without waiting for readiness.
func startProxyNoWait(t *testing.T, b *brokerProc, extra ...string) *proxyProc {
	t.Helper()
	return startProxyEnvNoWait(t, b, nil, extra...)
}

// startProxyEnvNoWait is startProxyNoWait with extra environment variables.
func startProxyEnvNoWait(t *testing.T, b *brokerProc, env []string, extra ...string) *proxyProc {
	t.Helper()
	dir := t.TempDir()
	apiKey := randomKey(t)
	keysFile := filepath.Join(dir, "api-keys")
	writeSecretFile(t, keysFile, "e2e-client:"+apiKey+"\n")
	args := append([]string{
		"serve",
		"--addr", anyPort,
		"--admin-addr", anyPort,
		"--broker-addr", b.grpcAddr,
		"--keys-file", keysFile,
		"--log-format", "text",
		"--log-level", "debug",
	}, extra...)
	p := startProc(t, "proxy", built.proxy, args, append([]string{"PROXY_BROKER_KEY=" + b.key}, env...))
	bound := p.boundAddrs(t, proxyListening)
	addr, adminAddr := bound[0], bound[1]
	return &proxyProc{proc: p, url: "http://" + addr, adminURL: "http://" + adminAddr, apiKey: apiKey}
}

// randomKey returns a fresh 32-byte hex key.
func randomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeSecretFile writes content with mode 0600, replacing the file
// atomically (a rename), the way an operator rotating a credential should.
func writeSecretFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newHTTPClient returns a client with its own transport, whose idle
// connections are closed when the test ends (goleak checks for them).
func newHTTPClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// waitGoal waits for cond like waitFor, measured from start, and fails only
// past a correctness bound (twenty times the goal, at least 30 s). A latency
// goal is a figure to report here, not an assertion a loaded 2-core machine
// can break: the figure is logged beside its goal (a miss is marked), and
// speed goals are held by bench: `make bench` section 9 (keys) and section
// 11 (`go run ./bench -only propagation`: budgets, the upstream profile,
// team accounts added and removed) measure these propagations to 20
// followers, p50/p99 against the same goals. It returns how long cond took
// from start.
func waitGoal(t *testing.T, start time.Time, goal time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	waitFor(t, max(20*goal, 30*time.Second)-time.Since(start), what, cond)
	took := time.Since(start)
	mark := ""
	if took > goal {
		mark = " (GOAL MISSED: the machine may be loaded)"
	}
	t.Logf("%s after %s; goal %s%s", what, took.Round(time.Millisecond), goal, mark)
	return took
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
