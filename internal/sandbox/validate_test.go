package sandbox

import (
	"net/http"
	"strings"
	"testing"
)

// TestRequestsRefusedLikeTheAPI checks the requests the real APIs refuse
// with 400, which a translator must never produce: tool results that answer
// no call, calls left unanswered, content types of another dialect, thinking
// blocks the API did not sign, images that do not decode.
func TestRequestsRefusedLikeTheAPI(t *testing.T) {
	e := newEnv(t, Config{})
	tok := e.exchange().Token
	h := apiHeader(tok)
	h.Set("Copilot-Vision-Request", "true")
	const weather = `{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}`
	tests := []struct {
		name, path, body, want string
	}{
		{"chat tool result without a call", "/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"},{"role":"tool","tool_call_id":"call_1","content":"x"}]}`,
			"must be a response to a preceding message with 'tool_calls'"},
		{"chat call not answered before the next user turn", "/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"user","content":"and?"}]}`,
			"did not have response messages: call_1"},
		{"chat arguments as an object", "/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":{}}}]}]}`,
			"arguments as a JSON string"},
		{"chat Anthropic block", "/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]}]}`,
			`"image" is not valid here`},
		{"chat bad data URL", "/chat/completions",
			`{"model":"gpt-4.1","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%%%"}}]}]}`,
			"does not decode"},
		{"chat tool_choice names no tool", "/chat/completions",
			`{"model":"gpt-4.1","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":{"type":"function","function":{"name":"g"}},"messages":[{"role":"user","content":"hi"}]}`,
			`no tool named "g"`},
		{"responses output without a call", "/responses",
			`{"model":"gpt-5-codex","input":[{"role":"user","content":"hi"},{"type":"function_call_output","call_id":"call_9","output":"x"}]}`,
			"No tool call found for function call output with call_id call_9"},
		{"responses assistant input_text", "/responses",
			`{"model":"gpt-5-codex","input":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"input_text","text":"x"}]}]}`,
			"Supported values are: 'output_text' and 'refusal'"},
		{"responses call unanswered before a user turn", "/responses",
			`{"model":"gpt-5-codex","input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"call_1","name":"f","arguments":"{}"},{"role":"user","content":"and?"}]}`,
			"No tool output found for function call call_1"},
		{"responses max_output_tokens too small", "/responses", `{"model":"gpt-5-codex","input":"hi","max_output_tokens":8}`, "Expected a value >= 16"},
		{"messages tool_result without tool_use", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"x"}]}]}`,
			"unexpected `tool_use_id` found in `tool_result` blocks: toolu_1"},
		{"messages tool_use not answered next", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"f","input":{}}]},{"role":"user","content":"and?"}]}`,
			"`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"},
		{"messages tool_use id pattern", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"call:1","name":"f","input":{}}]}]}`,
			"String should match pattern"},
		{"messages unsigned thinking", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"made-up"},{"type":"text","text":"ok"}]},{"role":"user","content":"go on"}]}`,
			"Invalid `signature` in `thinking` block"},
		{"messages OpenAI part", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"messages":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}]}`,
			`"input_text" is not a valid block`},
		{"messages tool without schema", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":64,"tools":[{"name":"f"}],"messages":[{"role":"user","content":"hi"}]}`,
			"input_schema: Field required"},
		{"messages thinking budget", "/v1/messages",
			`{"model":"claude-sonnet-4","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":100},"tools":[` + weather + `],"messages":[{"role":"user","content":"hi"}]}`,
			"greater than or equal to 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do("POST", tt.path, h, tt.body)
			var got apiError
			mustUnmarshal(t, body, &got)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(got.Error.Message, tt.want) {
				t.Errorf("POST %s = %d %s; want 400 containing %q", tt.path, resp.StatusCode, body, tt.want)
			}
		})
	}
}
