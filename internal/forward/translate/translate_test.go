package translate

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// meaning projects a request onto what must survive a round trip through
// another dialect: instructions, turns' text, images, tool calls and results
// with their ids, tools and the sampling settings. Reasoning history is
// left out (it survives only as wrapped by reasoning.go).
type meaning struct {
	System      string
	Turns       []string
	Tools       []string
	ToolChoice  string
	MaxTokens   int
	Temperature float64
}

func meaningOf(t *testing.T, d Dialect, body []byte) meaning {
	t.Helper()
	var info Info
	var r *RequestIR
	var err error
	switch d {
	case Messages:
		r, err = readMessagesRequest(body, &info)
	case Chat:
		r, err = readChatRequest(body, &info)
	case Responses:
		r, err = readResponsesRequest(body, &info)
	}
	if err != nil {
		t.Fatal(err)
	}
	m := meaning{System: strings.Join(r.System, "\n\n"), MaxTokens: r.MaxTokens, ToolChoice: string(r.ToolChoice) + r.ToolName}
	if r.Temperature != nil {
		m.Temperature = *r.Temperature
	}
	for _, msg := range r.Messages {
		for _, p := range msg.Parts {
			var s string
			switch p.Kind {
			case PartText:
				s = "text:" + p.Text
			case PartImage:
				s = "image:" + p.imageURL()
			case PartToolCall:
				s = "call:" + p.ID + ":" + p.Name + ":" + string(compactJSON(p.Arguments))
			case PartToolResult:
				s = "result:" + p.ID
				for _, c := range p.Content {
					s += ":" + c.Text
				}
			default:
				continue
			}
			role := msg.Role
			if role == RoleDeveloper {
				role = RoleSystem
			}
			if role == RoleSystem {
				m.System += "\n\n" + p.Text
				continue
			}
			m.Turns = append(m.Turns, string(role)+" "+s)
		}
	}
	for _, tl := range r.Tools {
		m.Tools = append(m.Tools, tl.Name+":"+tl.Description+":"+string(compactJSON(string(tl.Parameters))))
	}
	return m
}

func TestRequestRoundTrip(t *testing.T) {
	for _, in := range []string{"simple.messages.json", "agent.messages.json", "agent.chat.json", "agent.responses.json"} {
		body, err := os.ReadFile(filepath.Join("testdata", "requests", in))
		if err != nil {
			t.Fatal(err)
		}
		from := dialectByName(t, strings.Split(in, ".")[1])
		for _, via := range dialects {
			if via == from {
				continue
			}
			t.Run(in+"_via_"+via.String(), func(t *testing.T) {
				mid, _, err := Request(context.Background(), from, via, body, Options{})
				if err != nil {
					t.Fatal(err)
				}
				back, _, err := Request(context.Background(), via, from, mid, Options{})
				if err != nil {
					t.Fatal(err)
				}
				want, got := meaningOf(t, from, body), meaningOf(t, from, back)
				// Documented changes: Messages hoists instructions; OpenAI
				// temperatures above 1 are clamped toward Messages.
				want.System, got.System = strings.TrimPrefix(want.System, "\n\n"), strings.TrimPrefix(got.System, "\n\n")
				if via == Messages && want.Temperature > 1 {
					want.Temperature = 1
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("%s → %s → %s changed the meaning (-want +got):\n%s", from, via, from, diff)
				}
			})
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "answers", "*.json"))
	for _, in := range files {
		from := dialectByName(t, strings.Split(filepath.Base(in), ".")[1])
		body, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, via := range dialects {
			if via == from || via == Chat || from == Chat {
				continue // Chat carries no reasoning: no round trip
			}
			t.Run(filepath.Base(in)+"_via_"+via.String(), func(t *testing.T) {
				mid, err := Response(context.Background(), from, via, body, testNow)
				if err != nil {
					t.Fatal(err)
				}
				back, err := Response(context.Background(), via, from, mid, testNow)
				if err != nil {
					t.Fatal(err)
				}
				a, b := readAnswer(t, from, body), readAnswer(t, from, back)
				// Documented losses: Messages has no creation time and no
				// reasoning token count; Responses no stop sequence and no
				// cache-write count.
				a.ID, b.ID, a.Created, b.Created = "", "", 0, 0
				a.Usage.CacheWrite, a.Usage.Reasoning = b.Usage.CacheWrite, b.Usage.Reasoning
				if a.Finish == FinishStopSequence {
					a.Finish, a.StopSequence = FinishStop, ""
				}
				for i := range a.Parts {
					if a.Parts[i].Kind == PartReasoning && from == Responses {
						b.Parts[i].ID = a.Parts[i].ID
					}
				}
				if diff := cmp.Diff(a, b); diff != "" {
					t.Errorf("round trip (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func readAnswer(t *testing.T, d Dialect, body []byte) *ResponseIR {
	t.Helper()
	var r *ResponseIR
	var err error
	switch d {
	case Messages:
		r, err = readMessagesResponse(body)
	case Chat:
		r, err = readChatResponse(body)
	case Responses:
		r, err = readResponsesResponse(body)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := range r.Parts {
		if r.Parts[i].Kind == PartToolCall {
			r.Parts[i].Arguments = string(compactJSON(r.Parts[i].Arguments))
		}
	}
	return r
}

func TestRequestErrors(t *testing.T) {
	tests := []struct {
		name     string
		from, to Dialect
		body     string
		want     string
	}{
		{"not json", Chat, Messages, `{`, "chat request: invalid JSON"},
		{"bad role", Chat, Messages, `{"model":"m","messages":[{"role":"robot","content":"x"}]}`, "messages[0].role"},
		{"n>1", Chat, Responses, `{"model":"m","n":2,"messages":[]}`, "n: 2 choices"},
		{"previous_response_id", Responses, Chat, `{"model":"m","previous_response_id":"resp_1","input":"x"}`, "previous_response_id"},
		{"content type", Responses, Messages, `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}`, `input[0].content[0].type`},
		{"image source", Messages, Chat, `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}`, "unsupported image source"},
		{"tool choice", Messages, Chat, `{"model":"m","max_tokens":1,"messages":[],"tool_choice":{"type":"maybe"}}`, "tool_choice.type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Request(context.Background(), tt.from, tt.to, []byte(tt.body), Options{})
			var ie *InputError
			if !errors.Is(err, ErrBadRequest) || !errors.As(err, &ie) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Request(context.Background(), %s) = %v; want an InputError containing %q", tt.body, err, tt.want)
			}
		})
	}
}

func TestResponseErrors(t *testing.T) {
	for _, d := range dialects {
		for _, to := range dialects {
			if d == to {
				continue
			}
			_, err := Response(context.Background(), d, to, []byte(`{"object":"list"}`), testNow)
			if !errors.Is(err, ErrUpstream) {
				t.Errorf("Response(context.Background(), %s→%s, bad body) = %v; want ErrUpstream", d, to, err)
			}
		}
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		name     string
		from, to Dialect
		status   int
		body     string
		want     string
	}{
		{"anthropic to openai", Messages, Chat, 429, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`,
			`{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`},
		{"openai to anthropic", Chat, Messages, 400, `{"error":{"message":"bad model","type":"invalid_request_error","code":"model_not_supported","param":null}}`,
			`{"type":"error","error":{"type":"invalid_request_error","message":"bad model"}}`},
		{"openai to responses keeps code", Chat, Responses, 400, `{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}`,
			`{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"x"}}`},
		{"text body", Responses, Messages, 503, "upstream <b>down</b>\n",
			`{"type":"error","error":{"type":"overloaded_error","message":"upstream <b>down</b>"}}`},
		{"empty body", Messages, Responses, 500, "",
			`{"error":{"message":"Internal Server Error","type":"server_error","param":null,"code":"api_error"}}`},
		{"overloaded", Messages, Chat, 529, `{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`,
			`{"error":{"message":"busy","type":"server_error","param":null,"code":"overloaded_error"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(Error(tt.from, tt.to, tt.status, []byte(tt.body)))
			if got != tt.want {
				t.Errorf("Error(%d, %s) =\n %s\nwant\n %s", tt.status, tt.body, got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Error("not JSON")
			}
		})
	}
}

// largeSeeds is the size of every scaling site's input the fuzz targets
// start from: 10,000 elements (1,000 under the race detector).
var largeSeeds = map[bool]int{false: 10_000, true: 1_000}[raceEnabled]

func FuzzRequest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	for _, in := range files {
		b, _ := os.ReadFile(in)
		f.Add(uint8(dialectIndex(strings.Split(filepath.Base(in), ".")[1])), b)
	}
	for _, r := range scaleRequests {
		f.Add(uint8(dialectIndex(r.from.String())), r.body(largeSeeds))
	}
	f.Fuzz(func(t *testing.T, from uint8, body []byte) {
		d := dialects[int(from)%3]
		for _, to := range dialects {
			if to == d {
				continue
			}
			out, _, err := Request(context.Background(), d, to, body, Options{})
			if err != nil {
				if !errors.Is(err, ErrBadRequest) {
					t.Fatalf("error %v does not wrap ErrBadRequest", err)
				}
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("%s→%s: invalid JSON out: %s", d, to, out)
			}
		}
	})
}

func FuzzResponse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "answers", "*.json"))
	for _, in := range files {
		b, _ := os.ReadFile(in)
		f.Add(uint8(dialectIndex(strings.Split(filepath.Base(in), ".")[1])), b)
	}
	for _, a := range scaleAnswers {
		f.Add(uint8(dialectIndex(a.from.String())), a.body(largeSeeds))
	}
	f.Fuzz(func(t *testing.T, from uint8, body []byte) {
		d := dialects[int(from)%3]
		for _, to := range dialects {
			if to == d {
				continue
			}
			out, err := Response(context.Background(), d, to, body, testNow)
			if err != nil {
				if !errors.Is(err, ErrUpstream) {
					t.Fatalf("error %v does not wrap ErrUpstream", err)
				}
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("%s→%s: invalid JSON out: %s", d, to, out)
			}
		}
		_ = Error(d, Messages, 400, body)
	})
}

func dialectIndex(name string) int {
	for i, d := range dialects {
		if d.String() == name {
			return i
		}
	}
	return 0
}

func TestRequestNoReasoning(t *testing.T) {
	body := []byte(`{"model":"gpt-4.1","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":1500},"messages":[{"role":"user","content":"hi"}]}`)
	for _, to := range []Dialect{Chat, Responses} {
		out, info, err := Request(context.Background(), Messages, to, body, Options{NoReasoning: true})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "reasoning") || !strings.Contains(info.String(), "reasoning (the model takes none)") {
			t.Errorf("Request(context.Background(), →%s, NoReasoning) = %s, %v; want no reasoning, reported", to, out, info)
		}
		out, _, _ = Request(context.Background(), Messages, to, body, Options{})
		if !strings.Contains(string(out), "reasoning") {
			t.Errorf("Request(context.Background(), →%s) = %s; want reasoning", to, out)
		}
	}
}

func TestOrderToolResults(t *testing.T) {
	b := func(types ...string) []msgBlock {
		var out []msgBlock
		for _, ty := range types {
			out = append(out, msgBlock{Type: ty, Name: ty})
		}
		return out
	}
	got := orderToolResults(append(b("text", "tool_result", "image", "tool_result"), msgBlock{Type: "text", Name: "2"}))
	var types []string
	for _, x := range got {
		types = append(types, x.Type+"/"+x.Name)
	}
	want := "tool_result/tool_result tool_result/tool_result text/text image/image text/2"
	if strings.Join(types, " ") != want {
		t.Errorf("orderToolResults = %v; want %s", types, want)
	}
}

// TestRequestStopsWithContext: a large body is not translated for a client
// that has gone: the work checks its context as it goes.
func TestRequestStopsWithContext(t *testing.T) {
	for _, r := range scaleRequests {
		for _, to := range dialects {
			if to == r.from {
				continue
			}
			t.Run(r.from.String()+"_to_"+to.String()+"/"+r.name, func(t *testing.T) {
				ctx, cancel := context.WithCancelCause(context.Background())
				cancel(errors.New("client left"))
				_, _, err := Request(ctx, r.from, to, r.body(2*checkEvery), Options{})
				if !errors.Is(err, context.Canceled) && (err == nil || !strings.Contains(err.Error(), "client left")) {
					t.Fatalf("Request with a cancelled context = %v; want the context's cause", err)
				}
				if errors.Is(err, ErrBadRequest) {
					t.Fatalf("error %v wraps ErrBadRequest: the client would get a 400 for leaving", err)
				}
			})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, a := range scaleAnswers {
		for _, to := range dialects {
			if to == a.from {
				continue
			}
			if _, err := Response(ctx, a.from, to, a.body(100), testNow); !errors.Is(err, context.Canceled) {
				t.Errorf("Response(%s→%s) with a cancelled context = %v; want context.Canceled", a.from, to, err)
			}
		}
	}
}
