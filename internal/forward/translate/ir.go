package translate

import "encoding/json"

// The internal representation (IR) sits between the readers and writers of
// the three dialects: a reader turns a dialect's JSON into these types, a
// writer turns them into another dialect's JSON. Fields hold what at least two
// dialects can express; see doc.go for what is dropped.

// Role is the author of a turn.
type Role string

// Roles. System and Developer turns may appear anywhere in a conversation in
// Chat and Responses; the Messages writer hoists them into "system".
const (
	RoleSystem    Role = "system"
	RoleDeveloper Role = "developer"
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// PartKind says what a [Part] holds.
type PartKind uint8

// Part kinds.
const (
	PartText PartKind = iota + 1
	PartImage
	PartToolCall
	PartToolResult
	PartReasoning
)

// Part is one piece of a turn or an answer.
type Part struct {
	Kind PartKind
	// Text is the text of a PartText, the thinking or summary text of a
	// PartReasoning.
	Text string
	// Image: URL is an http(s) URL or, for inline data, empty with MediaType
	// and Data (base64) set. Detail is OpenAI's "low"/"high"/"auto".
	URL, MediaType, Data, Detail string
	// ID is a tool call's id (Anthropic tool_use id, Chat tool call id,
	// Responses call_id), the id a tool result refers to, or a reasoning
	// item's id. It is carried byte for byte.
	ID string
	// Name and Arguments (a JSON text) of a tool call.
	Name      string
	Arguments string
	// Content and IsError of a tool result (text and image parts).
	Content []Part
	IsError bool
	// Signature (Anthropic thinking), Encrypted (Responses
	// encrypted_content) and Redacted (Anthropic redacted_thinking, whose
	// data is in Encrypted) of a reasoning part.
	Signature, Encrypted string
	Redacted             bool
}

// Message is one turn.
type Message struct {
	Role  Role
	Parts []Part
}

// Tool is a function the model may call.
type Tool struct {
	Name, Description string
	// Parameters is the JSON Schema of the arguments, kept as raw JSON.
	Parameters json.RawMessage
	Strict     *bool
}

// ToolChoiceMode says whether and which tools the model must call.
type ToolChoiceMode string

// Tool choice modes; the zero value leaves the choice to the target's default.
const (
	ToolAuto     ToolChoiceMode = "auto"
	ToolNone     ToolChoiceMode = "none"
	ToolRequired ToolChoiceMode = "required"
	ToolNamed    ToolChoiceMode = "tool"
)

// Reasoning is the requested reasoning. Effort uses OpenAI's names (none,
// minimal, low, medium, high, xhigh, max); Budget is Anthropic's
// budget_tokens. A reader fills what its dialect says; writers derive the
// other with the documented table in effort.go.
type Reasoning struct {
	Effort  string
	Budget  int
	Summary string // Responses reasoning.summary
	// Adaptive is Anthropic's thinking {type: "adaptive"}.
	Adaptive bool
}

// RequestIR is a chat request in IR form.
type RequestIR struct {
	Model string
	// System holds top-level instructions (Messages "system", Responses
	// "instructions"), in order.
	System   []string
	Messages []Message
	Tools    []Tool
	// ToolChoice and ToolName (for ToolNamed).
	ToolChoice ToolChoiceMode
	ToolName   string
	// ParallelToolCalls is nil when the client did not say.
	ParallelToolCalls *bool
	Reasoning         *Reasoning
	MaxTokens         int
	Temperature       *float64
	TopP              *float64
	Stop              []string
	Stream            bool
	// IncludeUsage is Chat's stream_options.include_usage.
	IncludeUsage bool
	User         string
	Format       *TextFormat
}

// Finish is why the model stopped, in IR terms.
type Finish string

// Finish reasons.
const (
	FinishStop          Finish = "stop"
	FinishLength        Finish = "length"
	FinishToolCalls     Finish = "tool_calls"
	FinishContentFilter Finish = "content_filter"
	FinishStopSequence  Finish = "stop_sequence"
	FinishPause         Finish = "pause_turn"
)

// Usage counts tokens with OpenAI's meaning: Input includes cached tokens
// (CacheRead and CacheWrite).
type Usage struct {
	Input, Output, CacheRead, CacheWrite, Reasoning int
}

// ResponseIR is a complete (non-streamed) answer.
type ResponseIR struct {
	ID, Model    string
	Created      int64
	Parts        []Part
	Finish       Finish
	StopSequence string
	Usage        Usage
}
