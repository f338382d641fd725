package sandbox

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
)

// errClientGone ends a stream whose client went away.
var errClientGone = errors.New("client went away")

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID string          `json:"tool_call_id"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
	} `json:"function"`
}

type chatRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Stream              bool            `json:"stream"`
	Tools               []chatTool      `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	MaxTokens           int             `json:"max_tokens"`
	MaxCompletionTokens int             `json:"max_completion_tokens"`
	Stop                json.RawMessage `json:"stop"`
	ReasoningEffort     string          `json:"reasoning_effort"`
}

// chatToolCall is a tool call in Chat's shape, in a request's history or in
// an answer.
type chatToolCall struct {
	Index    *int   `json:"index,omitempty"` // stream deltas only
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string          `json:"name,omitempty"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

// parseChat checks a Chat Completions request as the API does and returns
// what the answer depends on.
func parseChat(req *chatRequest) (*conv, error) {
	c := &conv{parallelOK: req.ParallelToolCalls == nil || *req.ParallelToolCalls, maxTokens: req.MaxCompletionTokens}
	if c.maxTokens == 0 {
		c.maxTokens = req.MaxTokens
	}
	c.reasoning = req.ReasoningEffort != "" && req.ReasoningEffort != "none"
	c.thinkingOmitted = true // Chat has no reasoning output, only its tokens
	for i, t := range req.Tools {
		if t.Type != "function" {
			return nil, badRequest("tools[%d].type: want \"function\", got %q", i, t.Type)
		}
		if err := c.addTool(t.Function.Name, t.Function.Parameters); err != nil {
			return nil, err
		}
	}
	if err := parseOpenAIChoice(c, req.ToolChoice, true); err != nil {
		return nil, err
	}
	stops, err := stringOrList(req.Stop)
	if err != nil {
		return nil, badRequest("stop: want a string or an array of strings")
	}
	c.stop = stops
	var calls callTracker
	prevTool := false
	for i, m := range req.Messages {
		if m.Role != "tool" {
			if open := calls.unanswered(); len(open) > 0 {
				return nil, badRequest("messages[%d]: an assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: %s", i, strings.Join(open, ", "))
			}
		}
		switch m.Role {
		case "system", "developer":
			text, err := c.chatContent(m.Content, false)
			if err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			c.text(text)
		case "user":
			c.startTurn()
			c.images = imageCount{}
			text, err := c.chatContent(m.Content, true)
			if err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			c.lastUser, c.lastIsTool, c.results = text, false, nil
			c.text(text)
		case "assistant":
			c.startTurn()
			text, err := c.chatContent(m.Content, false)
			if err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			c.text(text)
			var tcs []chatToolCall
			if len(m.ToolCalls) > 0 && json.Unmarshal(m.ToolCalls, &tcs) != nil {
				return nil, badRequest("messages[%d].tool_calls: want an array of tool calls", i)
			}
			for j, tc := range tcs {
				var args string
				if tc.Type != "function" || json.Unmarshal(tc.Function.Arguments, &args) != nil || tc.Function.Name == "" {
					return nil, badRequest("messages[%d].tool_calls[%d]: want type \"function\", a name and arguments as a JSON string", i, j)
				}
				if err := calls.call(tc.ID); err != nil {
					return nil, fmt.Errorf("messages[%d].tool_calls[%d]: %w", i, j, err)
				}
				c.text(tc.Function.Name + args)
			}
		case "tool":
			if calls.result(m.ToolCallID) != nil {
				return nil, badRequest("messages[%d]: messages with role 'tool' must be a response to a preceding message with 'tool_calls' (tool_call_id %q)", i, m.ToolCallID)
			}
			if !prevTool {
				c.startTurn()
				c.results = nil
			}
			text, err := c.chatContent(m.Content, false)
			if err != nil {
				return nil, fmt.Errorf("messages[%d]: %w", i, err)
			}
			c.results, c.lastIsTool = append(c.results, text), true
			c.text(text)
		default:
			return nil, badRequest("messages[%d].role: %q is not one of system, developer, user, assistant, tool", i, m.Role)
		}
		prevTool = m.Role == "tool"
	}
	// A conversation may end on an assistant turn with calls (a prefill):
	// only a call followed by something other than its result is refused.
	return c, nil
}

// chatContent reads a Chat message content: a string, null, or parts. Image
// parts are allowed in user messages only.
func (c *conv) chatContent(raw json.RawMessage, user bool) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type     string `json:"type"`
		Text     string `json:"text"`
		Refusal  string `json:"refusal"`
		ImageURL *struct {
			URL string `json:"url"`
		} `json:"image_url"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", badRequest("content: want a string or an array of content parts")
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case p.Type == "text":
			b.WriteString(p.Text)
		case p.Type == "refusal" && !user:
			b.WriteString(p.Refusal)
		case p.Type == "image_url" && user && p.ImageURL != nil:
			if err := c.image(p.ImageURL.URL, "", ""); err != nil {
				return "", fmt.Errorf("content[%d]: %w", i, err)
			}
		case (p.Type == "input_audio" || p.Type == "file") && user:
		default:
			return "", badRequest("content[%d].type: %q is not valid here", i, p.Type)
		}
	}
	return b.String(), nil
}

// parseOpenAIChoice reads tool_choice: "auto", "none", "required" or a named
// function, nested (Chat) or flat (Responses).
func parseOpenAIChoice(c *conv, raw json.RawMessage, nested bool) error {
	c.choice.mode = "auto"
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var mode string
	if json.Unmarshal(raw, &mode) == nil {
		switch mode {
		case "auto", "none", "required":
			c.choice.mode = mode
			return c.checkChoice()
		}
		return badRequest("tool_choice: %q is not one of auto, none, required", mode)
	}
	var obj struct {
		Type     string `json:"type"`
		Name     string `json:"name"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &obj) != nil || obj.Type != "function" {
		return badRequest("tool_choice: want a mode or {\"type\":\"function\",...}")
	}
	c.choice = toolChoice{"named", obj.Name}
	if nested {
		c.choice.name = obj.Function.Name
	}
	return c.checkChoice()
}

// stringOrList reads a string or an array of strings.
func stringOrList(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	err := json.Unmarshal(raw, &list)
	return list, err
}

type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func chatUsage(a *answer) usage {
	u := usage{PromptTokens: a.input, CompletionTokens: a.output, TotalTokens: a.input + a.output}
	u.PromptTokensDetails.CachedTokens = a.cached
	u.CompletionTokensDetails.ReasoningTokens = a.reasoningTokens
	return u
}

type chatChoiceMessage struct {
	Role      string         `json:"role,omitempty"`
	Content   *string        `json:"content,omitempty"`
	ToolCalls []chatToolCall `json:"tool_calls,omitempty"`
}

type chatChoice struct {
	Index        int               `json:"index"`
	Message      chatChoiceMessage `json:"message"`
	FinishReason string            `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

type chunkChoice struct {
	Index        int               `json:"index"`
	Delta        chatChoiceMessage `json:"delta"`
	FinishReason *string           `json:"finish_reason"`
}

type chatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	Usage   *usage        `json:"usage,omitempty"`
}

func (s *Server) nextID(prefix string) string {
	return prefix + strconv.FormatUint(s.seq.Add(1), 10)
}

func chatFinish(k stopKind) string {
	switch k {
	case stopTool:
		return "tool_calls"
	case stopLength:
		return "length"
	}
	return "stop"
}

func (tc toolCall) chat(index int, withArgs bool) chatToolCall {
	out := chatToolCall{ID: tc.id, Type: "function"}
	out.Function.Name = tc.name
	args := tc.args
	if !withArgs {
		args = ""
	}
	out.Function.Arguments, _ = json.Marshal(args)
	if index >= 0 {
		out.Index = &index
	}
	return out
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	c, err := parseChat(&req)
	if err != nil {
		writeReqError(w, r, err)
		return
	}
	if !checkVision(w, r, c.images.total() > 0) {
		return
	}
	a := plan(c, func() string { return s.nextID("call_sandbox_") })
	s.countUsage(r, req.Model, &a)
	id, created := s.nextID("chatcmpl-sandbox-"), s.clock.Now().Unix()
	if !req.Stream {
		msg := chatChoiceMessage{Role: "assistant"}
		if a.text != "" || len(a.calls) == 0 {
			msg.Content = &a.text
		}
		for _, tc := range a.calls {
			msg.ToolCalls = append(msg.ToolCalls, tc.chat(-1, true))
		}
		writeJSON(w, http.StatusOK, chatCompletion{
			ID: id, Object: "chat.completion", Created: created, Model: req.Model,
			Choices: []chatChoice{{Message: msg, FinishReason: chatFinish(a.stop)}},
			Usage:   chatUsage(&a),
		})
		return
	}
	n, delay, ok := s.streamShape(w, r)
	if !ok {
		return
	}
	var deltas []chatChoiceMessage
	if a.text != "" || len(a.calls) == 0 {
		parts := splitChunks(a.text, n)
		if len(a.calls) > 0 || a.stop != stopEnd {
			parts = splitN(a.text, n)
		}
		for _, p := range parts {
			deltas = append(deltas, chatChoiceMessage{Content: &p})
		}
	}
	for i, tc := range a.calls {
		deltas = append(deltas, chatChoiceMessage{ToolCalls: []chatToolCall{tc.chat(i, false)}})
		for _, p := range splitN(tc.args, n) {
			d := chatToolCall{Index: &i}
			d.Function.Arguments, _ = json.Marshal(p)
			deltas = append(deltas, chatChoiceMessage{ToolCalls: []chatToolCall{d}})
		}
	}
	deltas[0].Role = "assistant"
	sse := startSSE(w, r)
	sse.end(func() error {
		chunk := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model,
			Choices: []chunkChoice{{}}}
		for i, d := range deltas {
			if !sse.pace(i, delay) {
				return errClientGone
			}
			chunk.Choices[0].Delta = d
			if err := sse.send("", chunk); err != nil {
				return err
			}
		}
		stop, u := chatFinish(a.stop), chatUsage(&a)
		chunk.Choices[0] = chunkChoice{FinishReason: &stop}
		chunk.Usage = &u
		if err := sse.send("", chunk); err != nil {
			return err
		}
		return sse.send("", []byte("[DONE]"))
	}())
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Object string   `json:"object"`
		Data   []*model `json:"data"`
	}{"list", s.models.list})
}

type embeddingsRequest struct {
	Model      string          `json:"model"`
	Input      json.RawMessage `json:"input"`
	Dimensions int             `json:"dimensions"`
}

type embedding struct {
	Object    string    `json:"object"`
	Index     int       `json:"index"`
	Embedding []float32 `json:"embedding"`
}

// embed returns a deterministic unit vector for text.
func embed(text string, dims int) []float32 {
	sum := sha256.Sum256([]byte(text))
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])))
	v := make([]float32, dims)
	var norm float64
	for i := range v {
		x := rng.NormFloat64()
		v[i] = float32(x)
		norm += x * x
	}
	scale := float32(1 / math.Sqrt(norm))
	for i := range v {
		v[i] *= scale
	}
	return v
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingsRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	var inputs []string
	if json.Unmarshal(req.Input, &inputs) != nil {
		var one string
		if json.Unmarshal(req.Input, &one) != nil {
			writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", "input: want a string or an array of strings")
			return
		}
		inputs = []string{one}
	}
	dims := req.Dimensions
	if dims <= 0 || dims > 1536 {
		dims = 1536
	}
	data := make([]embedding, len(inputs))
	tokens := 0
	for i, in := range inputs {
		data[i] = embedding{Object: "embedding", Index: i, Embedding: embed(in, dims)}
		tokens += estimateTokens(in)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": req.Model,
		"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens},
	})
}
