package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// TestClients drives one sandbox, broker and proxy with every client a user
// would point at them: the OpenAI and Anthropic SDKs on the proxy, a plain
// HTTP client on the broker's REST gateway and a grpc.health.v1 client.
func TestClients(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second, chunks: 5, chunkDelay: 10 * time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	oai := openAIClient(t, px)
	ant := anthropicClient(t, px)
	// The subtests are parallel: they start only when the other parallel
	// tests leave a slot, which on a small shared machine can take more
	// than a minute after this point. The bound is for hangs, not for the
	// scheduler.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)

	t.Run("openai/chat", func(t *testing.T) {
		t.Parallel()
		const prompt = "hello from the OpenAI SDK"
		resp, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    chatModel,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		})
		if err != nil {
			t.Fatalf("Chat.Completions.New: %v", err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != wantReply(prompt) {
			t.Errorf("Chat.Completions.New = %+v; want one choice with %q", resp.Choices, wantReply(prompt))
		}
	})
	t.Run("openai/chat-stream", func(t *testing.T) {
		t.Parallel()
		chunks := 0
		if _, err := streamChat(ctx, oai, "hello, streamed", func(n int) { chunks = n }); err != nil {
			t.Fatal(err)
		}
		// Five content chunks and the final one with finish_reason.
		if chunks < 5 {
			t.Errorf("streamed chat completion: %d chunks; want at least 5", chunks)
		}
	})
	t.Run("openai/models", func(t *testing.T) {
		t.Parallel()
		page, err := oai.Models.List(ctx)
		if err != nil {
			t.Fatalf("Models.List: %v", err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		for _, want := range []string{chatModel, claudeModel, embeddingModel} {
			if !slices.Contains(ids, want) {
				t.Errorf("Models.List = %v; want it to contain %q", ids, want)
			}
		}
	})
	t.Run("openai/embeddings", func(t *testing.T) {
		t.Parallel()
		resp, err := oai.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: embeddingModel,
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one", "two"}},
		})
		if err != nil {
			t.Fatalf("Embeddings.New: %v", err)
		}
		if len(resp.Data) != 2 || len(resp.Data[0].Embedding) == 0 {
			t.Fatalf("Embeddings.New: %d embeddings; want 2 non-empty ones", len(resp.Data))
		}
	})
	t.Run("openai/wrong-key", func(t *testing.T) {
		t.Parallel()
		bad := *px
		bad.apiKey = randomKey(t)
		c := openAIClient(t, &bad)
		_, err := c.Models.List(ctx)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Message == "" {
			t.Fatalf("Models.List with a wrong key: error %v; want an OpenAI API error with status 401 and a message", err)
		}
	})
	t.Run("anthropic/message", func(t *testing.T) {
		t.Parallel()
		const prompt = "hello from the Anthropic SDK"
		msg, err := ant.Messages.New(ctx, anthropic.MessageNewParams{
			Model:     claudeModel,
			MaxTokens: 256,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
		})
		if err != nil {
			t.Fatalf("Messages.New: %v", err)
		}
		if got := messageText(*msg); got != wantReply(prompt) {
			t.Errorf("Messages.New text = %q; want %q", got, wantReply(prompt))
		}
	})
	t.Run("anthropic/message-stream", func(t *testing.T) {
		t.Parallel()
		const prompt = "hello, streamed by Anthropic"
		got, err := streamMessage(ctx, ant, prompt, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got != wantReply(prompt) { // five chunks: the exact reply, no padding
			t.Errorf("Messages.NewStreaming text = %q; want %q", got, wantReply(prompt))
		}
	})
	t.Run("anthropic/wrong-key", func(t *testing.T) {
		t.Parallel()
		bad := *px
		bad.apiKey = randomKey(t)
		c := anthropicClient(t, &bad)
		_, err := c.Messages.New(ctx, anthropic.MessageNewParams{
			Model:     claudeModel,
			MaxTokens: 16,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
		})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Messages.New with a wrong key: error %v; want an Anthropic API error with status 401", err)
		}
		var body struct {
			Type  string `json:"type"`
			Error struct {
				Type string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(apiErr.RawJSON()), &body); err != nil || body.Type != "error" || body.Error.Type != "authentication_error" {
			t.Errorf("401 body %s; want the Anthropic error shape with type authentication_error", apiErr.RawJSON())
		}
	})
	t.Run("rest/token", func(t *testing.T) {
		t.Parallel()
		status, tok, body := br.token(t)
		if status != http.StatusOK {
			t.Fatalf("GET /v1/token = %d %s; want 200", status, body)
		}
		if tok.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID || tok.GetValue() == "" || tok.GetGeneration() == 0 ||
			tok.GetEpoch() == "" || tok.GetApiBaseUrl() != sb.url || !tok.GetExpiresAt().AsTime().After(time.Now()) {
			t.Errorf("GET /v1/token: status %v, value empty %v, generation %d, epoch %q, api_base_url %q, expires_at %v; want VALID, a value, generation > 0, an epoch, %q and a future expiry",
				tok.GetStatus(), tok.GetValue() == "", tok.GetGeneration(), tok.GetEpoch(), tok.GetApiBaseUrl(), tok.GetExpiresAt().AsTime(), sb.url)
		}
	})
	t.Run("rest/unauthenticated", func(t *testing.T) {
		t.Parallel()
		for _, auth := range []string{"", "Bearer " + randomKey(t), "Bearer " + px.apiKey} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, br.httpURL+"/v1/token", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := br.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /v1/token with a missing or wrong key = %d; want 401", resp.StatusCode)
			}
		}
	})
	t.Run("rest/watch", func(t *testing.T) {
		t.Parallel()
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, br.httpURL+"/v1/token:watch", nil)
		req.Header.Set("Authorization", "Bearer "+br.key)
		start := time.Now()
		resp, err := br.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/token:watch = %s; want 200", resp.Status)
		}
		line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
		if err != nil {
			t.Fatalf("reading the first watch line: %v", err)
		}
		// The first state comes at once, not at the next rotation.
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("first watch line after %s; want it at once", d)
		}
		var msg struct {
			Result json.RawMessage `json:"result"`
		}
		var w brokerv1.WatchTokenResponse
		if err := json.Unmarshal(line, &msg); err != nil || protojson.Unmarshal(msg.Result, &w) != nil ||
			w.GetToken().GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID {
			t.Errorf("first watch line %s; want {\"result\": {\"token\": ...}} with a VALID token", line)
		}
	})
	t.Run("grpc/health", func(t *testing.T) {
		t.Parallel()
		// The whole server and the API's service, with no broker key.
		for _, svc := range []string{"", apiService} {
			if got := br.health(t, svc); got != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("grpc.health.v1 Check(%q) = %v; want SERVING", svc, got)
			}
		}
	})
}

// messageText joins the text blocks of an Anthropic message.
func messageText(m anthropic.Message) string {
	var s string
	for _, b := range m.Content {
		if b.Type == "text" {
			s += b.Text
		}
	}
	return s
}
