package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// TestClaudeCodeLikeRequest sends what Claude Code sends (docs/protocol.md
// section 7), with the official Anthropic SDK's beta API (?beta=true): a
// count_tokens call first, then a streamed message with betas the Copilot
// API refuses (context-1m-2025-08-07) beside ones it accepts
// (interleaved-thinking-2025-05-14), and Claude Code's own headers. The
// strict sandbox answers 400 to an unknown beta, 404 to count_tokens and
// 466 to a retired identity, so a 200 here means the proxy counted locally,
// filtered the betas and spoke the current protocol.
func TestClaudeCodeLikeRequest(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second, chunks: 3, chunkDelay: 5 * time.Millisecond})
	br := startBroker(t, sb)
	px := startProxy(t, br, sb)
	ant := anthropicClient(t, px)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)

	betas := []anthropic.AnthropicBeta{anthropic.AnthropicBetaContext1m2025_08_07, anthropic.AnthropicBetaInterleavedThinking2025_05_14, "claude-code-20250219"}
	headers := []option.RequestOption{
		option.WithHeader("X-App", "cli"),
		option.WithHeader("X-Claude-Code-Session-Id", "6f1c0a2e-1111-4222-8333-444455556666"),
		option.WithHeader("Anthropic-Dangerous-Direct-Browser-Access", "true"),
	}
	system := []anthropic.BetaTextBlockParam{{Text: "You are Claude Code, Anthropic's official CLI for Claude. You help users with software engineering tasks."}}
	tools := []anthropic.BetaToolUnionParam{{OfTool: &anthropic.BetaToolParam{
		Name:        "Bash",
		Description: anthropic.String("Executes a given bash command in a persistent shell session."),
		InputSchema: anthropic.BetaToolInputSchemaParam{Properties: map[string]any{"command": map[string]any{"type": "string"}}, Required: []string{"command"}},
	}}}
	messages := []anthropic.BetaMessageParam{anthropic.NewBetaUserMessage(anthropic.NewBetaTextBlock("List the Go files in this repository and say what each package does."))}

	count, err := ant.Beta.Messages.CountTokens(ctx, anthropic.BetaMessageCountTokensParams{
		Model: claudeModel, System: anthropic.BetaMessageCountTokensParamsSystemUnion{OfBetaTextBlockArray: system},
		Tools: toolsForCount(tools), Messages: messages, Betas: betas,
	}, headers...)
	if err != nil {
		t.Fatalf("Beta.Messages.CountTokens: %v", err)
	}
	// System, one tool (with the tool-use system prompt) and one message:
	// a few hundred tokens.
	if count.InputTokens < 350 || count.InputTokens > 600 {
		t.Errorf("count_tokens = %d; want a sane estimate (350..600)", count.InputTokens)
	}

	stream := ant.Beta.Messages.NewStreaming(ctx, anthropic.BetaMessageNewParams{
		Model: claudeModel, MaxTokens: 1024, System: system, Tools: tools, Messages: messages, Betas: betas,
	}, headers...)
	var msg anthropic.BetaMessage
	events := 0
	for stream.Next() {
		events++
		if err := msg.Accumulate(stream.Current()); err != nil {
			t.Fatalf("accumulating event %d: %v", events, err)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("Beta.Messages.NewStreaming: %v after %d events", err, events)
	}
	if events < 5 || len(msg.Content) == 0 || msg.StopReason == "" {
		t.Errorf("stream: %d events, message %+v; want a whole message", events, msg)
	}
}

// toolsForCount converts message tools to count_tokens tools (the SDK has a
// separate union type for each).
func toolsForCount(tools []anthropic.BetaToolUnionParam) []anthropic.BetaMessageCountTokensParamsToolUnion {
	out := make([]anthropic.BetaMessageCountTokensParamsToolUnion, len(tools))
	for i, tl := range tools {
		out[i] = anthropic.BetaMessageCountTokensParamsToolUnion{OfTool: tl.OfTool}
	}
	return out
}
