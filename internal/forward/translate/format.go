package translate

import "encoding/json"

// TextFormat is a requested output format (structured outputs): Chat
// response_format, Responses text.format, Messages output_config.format.
type TextFormat struct {
	Type        string // "text", "json_object" or "json_schema"
	Name        string
	Description string
	Schema      json.RawMessage
	Strict      *bool
}

type chatResponseFormat struct {
	Type       string          `json:"type"`
	JSONSchema *chatJSONSchema `json:"json_schema,omitempty"`
}

type chatJSONSchema struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type respText struct {
	Format    *respFormat `json:"format,omitempty"`
	Verbosity string      `json:"verbosity,omitempty"`
}

type respFormat struct {
	Type        string          `json:"type"`
	Name        string          `json:"name,omitempty"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type msgFormat struct {
	Type   string          `json:"type"`
	Schema json.RawMessage `json:"schema"`
}

func (f *chatResponseFormat) ir() *TextFormat {
	if f == nil || f.Type == "" {
		return nil
	}
	t := &TextFormat{Type: f.Type}
	if s := f.JSONSchema; s != nil {
		t.Name, t.Description, t.Schema, t.Strict = s.Name, s.Description, s.Schema, s.Strict
	}
	return t
}

func chatFormatOf(t *TextFormat) *chatResponseFormat {
	if t == nil {
		return nil
	}
	f := &chatResponseFormat{Type: t.Type}
	if t.Type == "json_schema" {
		f.JSONSchema = &chatJSONSchema{Name: nameOr(t.Name), Description: t.Description, Schema: t.Schema, Strict: t.Strict}
	}
	return f
}

func (f *respFormat) ir() *TextFormat {
	if f == nil || f.Type == "" {
		return nil
	}
	return &TextFormat{Type: f.Type, Name: f.Name, Description: f.Description, Schema: f.Schema, Strict: f.Strict}
}

func respFormatOf(t *TextFormat) *respText {
	if t == nil {
		return nil
	}
	f := &respFormat{Type: t.Type}
	if t.Type == "json_schema" {
		f.Name, f.Description, f.Schema, f.Strict = nameOr(t.Name), t.Description, t.Schema, t.Strict
	}
	return &respText{Format: f}
}

// nameOr: OpenAI requires a schema name; Messages has none.
func nameOr(n string) string {
	if n == "" {
		return "response"
	}
	return n
}

// msgFormatOf writes a format toward Messages, which has JSON Schema
// formats only.
func msgFormatOf(t *TextFormat, info *Info) json.RawMessage {
	if t == nil || t.Type == "text" {
		return nil
	}
	if t.Type != "json_schema" || isNull(t.Schema) {
		info.drop("response format " + t.Type)
		return nil
	}
	b, _ := marshal(msgFormat{Type: "json_schema", Schema: t.Schema})
	return b
}

func readMsgFormat(raw json.RawMessage) *TextFormat {
	var f msgFormat
	if isNull(raw) || json.Unmarshal(raw, &f) != nil || f.Type != "json_schema" {
		return nil
	}
	return &TextFormat{Type: "json_schema", Schema: f.Schema}
}
