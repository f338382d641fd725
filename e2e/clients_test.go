package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Models the sandbox serves on each API shape.
const (
	chatModel      = "gpt-4.1"
	embeddingModel = "text-embedding-3-small"
	claudeModel    = "claude-sonnet-4"
)

// openAIClient is the official OpenAI SDK pointed at px the way a user
// configures it: base URL .../v1 and the proxy's API key. Retries are off so
// that every failure the proxy answers is counted, not papered over.
func openAIClient(t *testing.T, px *proxyProc) openai.Client {
	t.Helper()
	return openai.NewClient(
		option.WithBaseURL(px.url+"/v1/"),
		option.WithAPIKey(px.apiKey),
		option.WithMaxRetries(0),
		option.WithHTTPClient(newHTTPClient(t)),
	)
}

// anthropicClient is the official Anthropic SDK pointed at px; the SDK adds
// /v1/messages itself.
func anthropicClient(t *testing.T, px *proxyProc) anthropic.Client {
	t.Helper()
	return anthropic.NewClient(
		anthropicopt.WithBaseURL(px.url),
		anthropicopt.WithAPIKey(px.apiKey),
		anthropicopt.WithMaxRetries(0),
		anthropicopt.WithHTTPClient(newHTTPClient(t)),
	)
}

// wantReply is the sandbox's answer to prompt.
func wantReply(prompt string) string { return "Sandbox reply to: " + prompt }

// isReply reports whether got is the sandbox's whole answer to prompt. A
// stream with more chunks than the answer has words is padded with " more".
func isReply(got, prompt string) bool {
	rest, ok := strings.CutPrefix(got, wantReply(prompt))
	return ok && strings.ReplaceAll(rest, " more", "") == ""
}

// streamChat runs one streamed chat completion and checks that it arrived
// whole: the SDK reports no error, the content is the sandbox's full reply
// and the last chunk said finish_reason "stop". A stream cut short would
// otherwise look like a short but successful answer. onChunk, when not nil,
// is called after each chunk.
func streamChat(ctx context.Context, c openai.Client, prompt string, onChunk func(n int)) (string, error) {
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    chatModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
	})
	defer stream.Close()
	var acc openai.ChatCompletionAccumulator
	n := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		n++
		if onChunk != nil {
			onChunk(n)
		}
	}
	if err := stream.Err(); err != nil {
		return "", fmt.Errorf("stream after %d chunks: %w", n, err)
	}
	if len(acc.Choices) != 1 {
		return "", fmt.Errorf("stream after %d chunks: %d choices; want 1", n, len(acc.Choices))
	}
	got := acc.Choices[0].Message.Content
	if !isReply(got, prompt) || acc.Choices[0].FinishReason != "stop" {
		return got, fmt.Errorf("stream after %d chunks: content %q, finish_reason %q; want %q, \"stop\"",
			n, got, acc.Choices[0].FinishReason, wantReply(prompt))
	}
	return got, nil
}

// streamMessage runs one streamed Anthropic message and checks it arrived
// whole: the full reply text and a stop reason. onEvent, when not nil, is
// called after each event. It returns the reply's text.
func streamMessage(ctx context.Context, c anthropic.Client, prompt string, onEvent func(n int)) (string, error) {
	stream := c.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
		Model:     claudeModel,
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))},
	})
	defer stream.Close()
	var msg anthropic.Message
	n := 0
	for stream.Next() {
		n++
		if err := msg.Accumulate(stream.Current()); err != nil {
			return "", fmt.Errorf("event %d: %w", n, err)
		}
		if onEvent != nil {
			onEvent(n)
		}
	}
	if err := stream.Err(); err != nil {
		return "", fmt.Errorf("stream after %d events: %w", n, err)
	}
	got := messageText(msg)
	if !isReply(got, prompt) || msg.StopReason == "" {
		return got, fmt.Errorf("stream after %d events: text %q, stop_reason %q; want %q and a stop reason", n, got, msg.StopReason, wantReply(prompt))
	}
	return got, nil
}

// load keeps workers streaming chat completions through proxies until stop,
// counting every request, so a scenario can assert that none failed.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string // the first few failures, with their time offset
}

// startLoad runs workers goroutines, spread over the proxies, each streaming
// one chat completion after another.
func startLoad(t *testing.T, workers int, proxies ...*proxyProc) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, start: time.Now()}
	clients := make([]openai.Client, len(proxies))
	for i, px := range proxies {
		clients[i] = openAIClient(t, px)
	}
	for w := range workers {
		c := clients[w%len(clients)]
		l.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				// A request may take long when a scenario stalls things; it is
				// bounded so that a hang is reported, not waited out.
				rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := streamChat(rctx, c, fmt.Sprintf("worker %d request %d", w, i), nil)
				rcancel()
				switch {
				case err == nil:
					l.ok.Add(1)
				case ctx.Err() != nil && errors.Is(err, context.Canceled):
					// stop() cut this request short: not a failure.
				default:
					l.failed.Add(1)
					l.record(err)
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf("+%s: %v", time.Since(l.start).Round(time.Millisecond), err))
	}
}

// stop ends the load and waits for the workers; it may be called twice.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// requireNoFailures stops the load and fails t if any request failed or if
// fewer than minOK succeeded (a load that did nothing proves nothing).
func (l *load) requireNoFailures(t *testing.T, minOK int64) {
	t.Helper()
	l.stop()
	ok, failed := l.ok.Load(), l.failed.Load()
	t.Logf("load: %d streamed requests succeeded, %d failed, over %s", ok, failed, time.Since(l.start).Round(time.Millisecond))
	if failed != 0 {
		l.mu.Lock()
		defer l.mu.Unlock()
		t.Errorf("%d of %d streamed requests failed; want 0. First failures:\n%s", failed, ok+failed, strings.Join(l.errs, "\n"))
	}
	if ok < minOK {
		t.Errorf("%d streamed requests succeeded; want at least %d", ok, minOK)
	}
}
