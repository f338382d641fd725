package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// conv is what the sandbox needs of a request, whatever its dialect: the
// parsers in openai.go, responses.go and anthropic.go fill it and check the
// request the way the real API does; plan turns it into an [answer] that
// each dialect renders.
type conv struct {
	tools      []toolDef
	choice     toolChoice
	parallelOK bool // parallel tool calls allowed (the APIs' default)

	// lastUser is the text of the last turn when it is a user message;
	// results are the tool results when the last turn carries them.
	lastUser   string
	results    []string
	lastIsTool bool
	images     imageCount // images of the last user turn

	turns  int
	all    strings.Builder // every input text, for token counts
	prefix int             // bytes of all before the last turn: the cacheable prefix

	reasoning        bool // thinking / reasoning requested
	reasoningSummary bool // Responses: reasoning.summary set
	thinkingOmitted  bool // Anthropic: thinking.display "omitted"
	encrypted        bool // Responses: include reasoning.encrypted_content
	maxTokens        int
	stop             []string
}

type toolDef struct {
	name   string
	schema json.RawMessage
}

type toolChoice struct {
	mode string // auto, none, required, named
	name string
}

type imageCount struct{ base64, url int }

func (c imageCount) total() int { return c.base64 + c.url }

// reqError is a request the sandbox refuses with 400, as the real API would.
type reqError struct{ msg string }

func (e *reqError) Error() string { return e.msg }

func badRequest(format string, args ...any) error { return &reqError{fmt.Sprintf(format, args...)} }

// writeReqError answers a parse error: 400 invalid_request_error.
func writeReqError(w http.ResponseWriter, r *http.Request, err error) {
	writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", err.Error())
}

// text adds input text to the counts.
func (c *conv) text(s string) { c.all.WriteString(s) }

// startTurn marks the start of a turn: what came before is the prefix a
// prompt cache would hold.
func (c *conv) startTurn() {
	c.prefix = c.all.Len()
	c.turns++
}

var toolNameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)

func (c *conv) addTool(name string, schema json.RawMessage) error {
	if !toolNameRe.MatchString(name) {
		return badRequest("tools: invalid tool name %q: must match ^[a-zA-Z0-9_-]{1,128}$", name)
	}
	for _, t := range c.tools {
		if t.name == name {
			return badRequest("tools: tool names must be unique: %q", name)
		}
	}
	if len(schema) > 0 && !bytes.Equal(schema, []byte("null")) {
		var s struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(schema, &s) != nil || s.Type != "object" {
			return badRequest("tools: the schema of %q must be a JSON Schema of type \"object\"", name)
		}
	}
	c.tools = append(c.tools, toolDef{name, schema})
	c.text(name)
	return nil
}

// checkChoice checks that a named tool choice names a tool.
func (c *conv) checkChoice() error {
	if c.choice.mode == "named" && !slices.ContainsFunc(c.tools, func(t toolDef) bool { return t.name == c.choice.name }) {
		return badRequest("tool_choice: no tool named %q in tools", c.choice.name)
	}
	if (c.choice.mode == "named" || c.choice.mode == "required") && len(c.tools) == 0 {
		return badRequest("tool_choice: %s needs tools", c.choice.mode)
	}
	return nil
}

// image checks one image reference: a data: URL or base64 payload must
// decode, a URL must be http(s).
func (c *conv) image(url, mediaType, data string) error {
	if data != "" || strings.HasPrefix(url, "data:") {
		if url != "" {
			meta, payload, ok := strings.Cut(strings.TrimPrefix(url, "data:"), ",")
			mt, isB64 := strings.CutSuffix(meta, ";base64")
			if !ok || !isB64 {
				return badRequest("image: a data URL must be data:<media type>;base64,<data>")
			}
			mediaType, data = mt, payload
		}
		switch mediaType {
		case "image/jpeg", "image/png", "image/gif", "image/webp":
		default:
			return badRequest("image: media type %q is not one of image/jpeg, image/png, image/gif, image/webp", mediaType)
		}
		if _, err := base64.StdEncoding.DecodeString(data); err != nil || data == "" {
			return badRequest("image: the base64 data does not decode")
		}
		c.images.base64++
		return nil
	}
	if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
		return badRequest("image: url %q: want an http(s) or data: URL", url)
	}
	c.images.url++
	return nil
}

// callTracker checks tool results against the tool calls before them, as the
// APIs do: every result answers a call, every call gets its result.
type callTracker struct {
	open map[string]bool // call id -> still waiting for its result
	seen map[string]bool
}

func (t *callTracker) call(id string) error {
	if id == "" {
		return badRequest("a tool call has no id")
	}
	if t.seen == nil {
		t.seen, t.open = map[string]bool{}, map[string]bool{}
	}
	if t.seen[id] {
		return badRequest("duplicate tool call id %q", id)
	}
	t.seen[id], t.open[id] = true, true
	return nil
}

func (t *callTracker) result(id string) error {
	if !t.open[id] {
		return badRequest("no tool call found for tool result with id %q", id)
	}
	delete(t.open, id)
	return nil
}

// unanswered lists calls still waiting for a result, sorted.
func (t *callTracker) unanswered() []string {
	var ids []string
	for id := range t.open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// answer is the sandbox's reply to a conv, before any dialect renders it.
type answer struct {
	thinking string // reasoning text; "" when not requested or omitted
	reason   bool   // a reasoning item / thinking block is part of the answer
	text     string
	calls    []toolCall
	stop     stopKind
	stopSeq  string // the stop sequence that ended the text

	input, cached, output, reasoningTokens int
}

type toolCall struct {
	id, name, args string
}

type stopKind uint8

const (
	stopEnd stopKind = iota
	stopTool
	stopLength
	stopSequence
)

// parallelTrigger in the last user message asks for parallel tool calls.
const parallelTrigger = "in parallel"

// plan decides the answer: with tools offered and a user message last, a
// call of the first (or the chosen) tool, or of several tools when the user
// asks for it "in parallel"; after tool results, a text quoting them;
// otherwise the echo of the user's text. newID numbers tool calls.
func plan(c *conv, newID func() string) answer {
	var a answer
	if c.reasoning {
		a.reason = true
		a.thinking = "Sandbox thinking about: " + oneLine(c.lastUser, 80)
		if c.lastIsTool {
			a.thinking = "Sandbox thinking about the tool results."
		}
		a.reasoningTokens = estimateTokens(a.thinking)
		if c.thinkingOmitted {
			a.thinking = ""
		}
	}
	switch {
	case len(c.tools) > 0 && c.choice.mode != "none" && !c.lastIsTool:
		a.calls = planCalls(c, newID)
		a.stop = stopTool
	case c.lastIsTool:
		a.text = "Sandbox reply to tool results: " + oneLine(strings.Join(c.results, " | "), 400)
	default:
		a.text = reply(c.lastUser)
	}
	if n := c.images.total(); n > 0 && !c.lastIsTool {
		a.text += fmt.Sprintf(" (images: %d base64, %d url)", c.images.base64, c.images.url)
	}
	for _, s := range c.stop {
		if i := strings.Index(a.text, s); s != "" && i >= 0 && a.stop == stopEnd {
			a.text, a.stop, a.stopSeq = a.text[:i], stopSequence, s
		}
	}
	if c.maxTokens > 0 && a.stop != stopTool && estimateTokens(a.text) > c.maxTokens {
		a.text, a.stop, a.stopSeq = cutBytes(a.text, c.maxTokens*4), stopLength, ""
	}
	all := c.all.String()
	a.input = estimateTokens(all)
	if c.turns > 1 {
		a.cached = min(c.prefix/4, a.input-1)
	}
	out := a.text
	for _, tc := range a.calls {
		out += tc.name + tc.args
	}
	a.output = estimateTokens(out) + a.reasoningTokens
	return a
}

func planCalls(c *conv, newID func() string) []toolCall {
	first := c.tools[0]
	if c.choice.mode == "named" {
		for _, t := range c.tools {
			if t.name == c.choice.name {
				first = t
			}
		}
	}
	calls := []toolCall{{newID(), first.name, toolArgs(first.schema, c.lastUser, 1)}}
	if !c.parallelOK || c.choice.mode == "named" || !strings.Contains(strings.ToLower(c.lastUser), parallelTrigger) {
		return calls
	}
	if len(c.tools) == 1 {
		return append(calls, toolCall{newID(), first.name, toolArgs(first.schema, c.lastUser, 2)})
	}
	for _, t := range c.tools[1:min(len(c.tools), 3)] {
		calls = append(calls, toolCall{newID(), t.name, toolArgs(t.schema, c.lastUser, 1)})
	}
	return calls
}

// toolArgs derives arguments from a tool's JSON Schema: every property gets
// a value of its type (strings the user's text, the n-th call numbered), so
// the arguments are valid against the schema and deterministic.
func toolArgs(schema json.RawMessage, user string, n int) string {
	var s struct {
		Properties map[string]struct {
			Type json.RawMessage `json:"type"`
			Enum []any           `json:"enum"`
		} `json:"properties"`
	}
	_ = json.Unmarshal(schema, &s)
	args := make(map[string]any, len(s.Properties))
	for name, p := range s.Properties {
		var typ string
		if json.Unmarshal(p.Type, &typ) != nil {
			var types []string
			_ = json.Unmarshal(p.Type, &types)
			if len(types) > 0 {
				typ = types[0]
			}
		}
		switch {
		case len(p.Enum) > 0:
			args[name] = p.Enum[0]
		case typ == "integer", typ == "number":
			args[name] = n
		case typ == "boolean":
			args[name] = true
		case typ == "array":
			args[name] = []any{}
		case typ == "object":
			args[name] = map[string]any{}
		case typ == "null":
			args[name] = nil
		default:
			v := oneLine(user, 60)
			if v == "" {
				v = "sandbox"
			}
			if n > 1 {
				v += " #" + strconv.Itoa(n)
			}
			args[name] = v
		}
	}
	b, _ := json.Marshal(args)
	return string(b)
}

// oneLine collapses white space and cuts s to about n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return cutBytes(s, n) + "..."
	}
	return s
}

// cutBytes cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// splitN splits s into at most n non-empty pieces at UTF-8 boundaries, whose
// concatenation is s (no padding, unlike splitChunks).
func splitN(s string, n int) []string {
	if s == "" {
		return nil
	}
	n = max(1, min(n, len(s)))
	out := make([]string, 0, n)
	start := 0
	for i := 1; i <= n; i++ {
		end := i * len(s) / n
		for end < len(s) && !utf8.RuneStart(s[end]) {
			end++
		}
		if end > start {
			out = append(out, s[start:end])
			start = end
		}
	}
	return out
}

// thinkingSignature signs a thinking text the way the sandbox checks it when
// a client sends the block back: clients must return signatures untouched,
// and a block the sandbox did not sign is refused, as the real API does.
func thinkingSignature(thinking string) string {
	sum := sha256.Sum256([]byte("sandbox-thinking\x00" + thinking))
	return base64.StdEncoding.EncodeToString(append([]byte("sbx1"), sum[:]...))
}

// validSignature accepts a signature the sandbox made. The text is not
// checked against it: a client may send back a block whose thinking display
// was omitted.
func validSignature(sig string) bool {
	b, err := base64.StdEncoding.DecodeString(sig)
	return err == nil && len(b) == 4+sha256.Size && string(b[:4]) == "sbx1"
}
