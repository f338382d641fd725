package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
)

// TestModelNamesWithSDKs drives the model catalog with the official SDKs:
// the sandbox's /models carries supported_endpoints; the Anthropic SDK
// lists models (paging through them) and sends a message under a dated
// Claude name, the OpenAI SDK a chat completion under an alias from the
// proxy's alias file.
func TestModelNamesWithSDKs(t *testing.T) {
	t.Parallel()
	aliases := filepath.Join(t.TempDir(), "model-aliases")
	if err := os.WriteFile(aliases, []byte("# e2e\nteam-fast: gpt-5-mini\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second, chunks: 2, chunkDelay: time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb, "--model-aliases", aliases)
	ant := anthropicClient(t, px)
	oai := openAIClient(t, px)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)

	t.Run("anthropic/models", func(t *testing.T) {
		var ids []string
		pager := ant.Models.ListAutoPaging(ctx, anthropic.ModelListParams{Limit: anthropic.Int(3)})
		for pager.Next() {
			m := pager.Current()
			ids = append(ids, m.ID)
			if m.ID == "claude-sonnet-4.5" && (m.DisplayName != "Claude Sonnet 4.5" || m.CreatedAt.IsZero() || m.MaxTokens == 0) {
				t.Errorf("claude-sonnet-4.5 = %+v; want display name, created_at, max_tokens", m)
			}
		}
		if err := pager.Err(); err != nil {
			t.Fatalf("Models.ListAutoPaging: %v", err)
		}
		for _, want := range []string{"claude-sonnet-4.5", "claude-opus-5.5", "gpt-5.2-codex", "team-fast"} {
			if !slices.Contains(ids, want) {
				t.Errorf("listed %v; want %s among them", ids, want)
			}
		}
		if len(ids) < 7 {
			t.Errorf("listed %d models over pages of 3; want the whole catalog", len(ids))
		}
		m, err := ant.Models.Get(ctx, "claude-opus-4-1-20250805", anthropic.ModelGetParams{})
		if err != nil || m.ID != "claude-opus-4-1-20250805" || m.DisplayName != "Claude Opus 4.1" {
			t.Errorf("Models.Get(claude-opus-4-1-20250805) = %+v, %v; want Claude Opus 4.1", m, err)
		}
	})
	t.Run("anthropic/dated-claude-name", func(t *testing.T) {
		const prompt = "hello under a dated name"
		msg, err := ant.Messages.New(ctx, anthropic.MessageNewParams{
			Model:     "claude-sonnet-4-5-20250929",
			MaxTokens: 64,
			Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
		})
		if err != nil {
			t.Fatalf("Messages.New(claude-sonnet-4-5-20250929): %v", err)
		}
		if msg.Model != "claude-sonnet-4.5" || len(msg.Content) == 0 || msg.Content[0].Text != wantReply(prompt) {
			t.Errorf("Messages.New = model %q, %+v; want claude-sonnet-4.5's reply %q", msg.Model, msg.Content, wantReply(prompt))
		}
	})
	t.Run("openai/alias", func(t *testing.T) {
		const prompt = "hello under an alias"
		resp, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "team-fast",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		})
		if err != nil {
			t.Fatalf("Chat.Completions.New(team-fast): %v", err)
		}
		if resp.Model != "gpt-5-mini" || len(resp.Choices) != 1 || resp.Choices[0].Message.Content != wantReply(prompt) {
			t.Errorf("Chat.Completions.New = model %q, %+v; want gpt-5-mini's reply", resp.Model, resp.Choices)
		}
		m, err := oai.Models.Get(ctx, "team-fast")
		if err != nil || m.ID != "team-fast" {
			t.Errorf("Models.Get(team-fast) = %+v, %v; want the alias listed under its own id", m, err)
		}
	})
	t.Run("openai/other-endpoint", func(t *testing.T) {
		// The model lacks /chat/completions: the proxy translates to /responses.
		resp, err := oai.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    "gpt-5.2-codex",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		})
		if err != nil || len(resp.Choices) != 1 || resp.Choices[0].Message.Content != wantReply("hi") {
			t.Errorf("chat to a Responses-only model: %v, %+v; want the sandbox's reply, translated", err, resp)
		}
	})
}
