package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// TestOpenAISDKWebSocket drives the proxy's Responses WebSocket with the
// OpenAI Go SDK's own WebSocket mode (client.Responses.Connect): two turns
// on one connection, the second continuing the first by
// previous_response_id.
func TestOpenAISDKWebSocket(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second, chunks: 3, chunkDelay: 5 * time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	oai := openAIClient(t, px)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)

	conn, err := oai.Responses.Connect(ctx, responses.ResponseConnectionOptions{})
	if err != nil {
		t.Fatalf("Responses.Connect: %v", err)
	}
	defer conn.Close()
	first := responses.ResponsesClientEventResponseCreateParam{Model: "gpt-5.2-codex"}
	first.Input.OfString = openai.String("hello over a websocket")
	if err := conn.Create(ctx, first); err != nil {
		t.Fatalf("Create: %v", err)
	}
	r1, err := conn.FinalResponse(ctx)
	if err != nil || r1.Status != "completed" || !strings.Contains(r1.OutputText(), "hello over a websocket") {
		t.Fatalf("first response: %+v, %v", r1, err)
	}
	second := responses.ResponsesClientEventResponseCreateParam{Model: "gpt-5.2-codex", PreviousResponseID: openai.String(r1.ID)}
	second.Input.OfString = openai.String("and again")
	if err := conn.Create(ctx, second); err != nil {
		t.Fatalf("Create: %v", err)
	}
	r2, err := conn.FinalResponse(ctx)
	if err != nil || r2.Status != "completed" || !strings.Contains(r2.OutputText(), "and again") {
		t.Fatalf("second response: %+v, %v", r2, err)
	}
}

// TestCodexOverWebSocket runs Codex CLI (when installed: npm install -g
// @openai/codex) against the sandbox through the proxy, with the README's
// provider config: it must open the proxy's Responses WebSocket and finish
// its turn.
func TestCodexOverWebSocket(t *testing.T) {
	codex, err := exec.LookPath("codex")
	if err != nil {
		t.Skip("codex is not installed (npm install -g @openai/codex)")
	}
	t.Parallel()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second, chunks: 3, chunkDelay: 5 * time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	home, work := t.TempDir(), t.TempDir()
	config := fmt.Sprintf(`model = "gpt-5.2-codex"
model_provider = "copilot-broker"

[model_providers.copilot-broker]
name = "copilot-broker"
base_url = "%s/v1"
env_key = "COPILOT_BROKER_API_KEY"
wire_api = "responses"
supports_websockets = true
`, px.url)
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, codex, "exec", "--skip-git-repo-check", "--sandbox", "read-only", "-C", work, "reply with one word")
	cmd.Env = append(os.Environ(), "CODEX_HOME="+home, "COPILOT_BROKER_API_KEY="+px.apiKey, "NO_COLOR=1")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("codex exec: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "Sandbox") {
		t.Errorf("codex exec output has no sandbox answer:\n%s", out)
	}
	conns, turns := metric(t, px, `copilot_proxy_ws_connections_total{result="accepted"}`), metric(t, px, `copilot_proxy_ws_turns_total{upstream="http"}`)
	if conns < 1 || turns < 1 {
		t.Errorf("codex did not use the WebSocket: %v connections, %v turns\n%s", conns, turns, out)
	}
}

// TestProxySIGTERMMidWebSocketResponse: SIGTERM while a response runs on a
// Responses WebSocket: the response arrives whole, then the connection
// closes with 1001 and the proxy exits 0.
func TestProxySIGTERMMidWebSocketResponse(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 25 * time.Minute, chunks: 15, chunkDelay: 100 * time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(px.url, "http")+"/v1/responses", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + px.apiKey}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"gpt-5-mini","input":"a long answer over a websocket"}`)); err != nil {
		t.Fatal(err)
	}
	var last string
	for n := 0; ; n++ {
		_, m, err := c.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway || last != "response.completed" {
				t.Fatalf("after %d messages (last %q): %v; want response.completed, then close 1001", n, last, err)
			}
			break
		}
		var v struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(m, &v)
		last = v.Type
		if n == 3 {
			px.signal(t, syscall.SIGTERM)
		}
	}
	if err := px.wait(t, 30*time.Second); err != nil {
		t.Errorf("proxy exit after SIGTERM: %v; want 0", err)
	}
}
