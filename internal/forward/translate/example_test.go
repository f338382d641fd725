package translate_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/translate"
)

// A Chat client asks a model served only on /v1/messages.
func ExampleRequest() {
	body := []byte(`{"model":"claude-sonnet-4.5","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"seed":1}`)
	out, info, err := translate.Request(context.Background(), translate.Chat, translate.Messages, body, translate.Options{MaxOutputTokens: 16000})
	if err != nil {
		// errors.Is(err, translate.ErrBadRequest): answer 400 with
		// translate.ErrorBody(translate.Chat, 400, err.Error()).
		panic(err)
	}
	fmt.Println(string(out))
	fmt.Println(info)
	// Output:
	// {"model":"claude-sonnet-4.5","max_tokens":16000,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}
	// dropped seed
}

// The upstream's stream is copied into a Stream, which writes the client's
// dialect as each event arrives.
func ExampleNewStream() {
	upstream := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4.5\",\"usage\":{\"input_tokens\":3}}}\n\n" +
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n" +
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	s, err := translate.NewStream(translate.Messages, translate.Chat, os.Stdout, translate.StreamOptions{Now: time.Unix(1795867920, 0)})
	if err != nil {
		panic(err)
	}
	// In the proxy: io.Copy(s, upstreamBody), then s.Close() (or s.Fail on
	// a read error).
	_, _ = strings.NewReader(upstream).WriteTo(s)
	_ = s.Close()
	// Output:
	// data: {"id":"msg_1","object":"chat.completion.chunk","created":1795867920,"model":"claude-sonnet-4.5","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}
	//
	// data: {"id":"msg_1","object":"chat.completion.chunk","created":1795867920,"model":"claude-sonnet-4.5","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}
	//
	// data: {"id":"msg_1","object":"chat.completion.chunk","created":1795867920,"model":"claude-sonnet-4.5","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}
	//
	// data: [DONE]
}

// An upstream error keeps its status and takes the client's shape.
func ExampleError() {
	fmt.Println(string(translate.Error(translate.Chat, translate.Messages, 429, []byte(`{"error":{"message":"Rate limited","type":"rate_limit_error"}}`))))
	// Output:
	// {"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}
}
