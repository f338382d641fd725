package sandbox

import "slices"

// API paths that a model can be served on (supported_endpoints).
const (
	pathChat       = "/chat/completions"
	pathResponses  = "/responses"
	pathMessages   = "/v1/messages"
	pathEmbeddings = "/embeddings"
)

type modelLimits struct {
	MaxContextWindowTokens int `json:"max_context_window_tokens,omitempty"`
	MaxOutputTokens        int `json:"max_output_tokens,omitempty"`
	MaxPromptTokens        int `json:"max_prompt_tokens,omitempty"`
	MaxInputs              int `json:"max_inputs,omitempty"`
}

type modelSupports struct {
	Streaming         bool `json:"streaming"`
	ToolCalls         bool `json:"tool_calls"`
	ParallelToolCalls bool `json:"parallel_tool_calls"`
	Vision            bool `json:"vision"`
	StructuredOutputs bool `json:"structured_outputs"`
	Dimensions        bool `json:"dimensions,omitempty"`
}

type modelCapabilities struct {
	Family    string        `json:"family"`
	Limits    modelLimits   `json:"limits"`
	Object    string        `json:"object"`
	Supports  modelSupports `json:"supports"`
	Tokenizer string        `json:"tokenizer"`
	Type      string        `json:"type"`
}

// modelBilling is how a model is billed: premium models count against the
// plan's premium requests, at the multiplier.
type modelBilling struct {
	IsPremium  bool    `json:"is_premium"`
	Multiplier float64 `json:"multiplier"`
}

type modelPolicy struct {
	State string `json:"state"`
	Terms string `json:"terms"`
}

// model is one entry of GET /models.
type model struct {
	Billing            *modelBilling     `json:"billing,omitempty"`
	Capabilities       modelCapabilities `json:"capabilities"`
	ID                 string            `json:"id"`
	ModelPickerEnabled bool              `json:"model_picker_enabled"`
	Name               string            `json:"name"`
	Object             string            `json:"object"`
	Policy             *modelPolicy      `json:"policy,omitempty"`
	Preview            bool              `json:"preview"`
	SupportedEndpoints []string          `json:"supported_endpoints"`
	Vendor             string            `json:"vendor"`
	Version            string            `json:"version"`
}

func (m *model) serves(path string) bool { return slices.Contains(m.SupportedEndpoints, path) }

func (m *model) enabled() bool { return m.Policy == nil || m.Policy.State == "enabled" }

func chatModel(id, name, family, vendor string, preview bool, endpoints ...string) *model {
	return &model{
		ID: id, Name: name, Object: "model", Vendor: vendor, Version: id, Preview: preview,
		ModelPickerEnabled: true,
		Capabilities: modelCapabilities{
			Family: family, Object: "model_capabilities", Tokenizer: "o200k_base", Type: "chat",
			Limits:   modelLimits{MaxContextWindowTokens: 128000, MaxOutputTokens: 16384, MaxPromptTokens: 128000},
			Supports: modelSupports{Streaming: true, ToolCalls: true, ParallelToolCalls: true, Vision: true, StructuredOutputs: true},
		},
		Policy:             &modelPolicy{State: "enabled", Terms: "Enable access to the " + name + " model."},
		SupportedEndpoints: endpoints,
	}
}

// catalog is the sandbox's model list, shaped like the Copilot API's in 2026:
// GPT models on /chat/completions (some also on /responses), the GPT-5.x
// codex models on /responses only (gpt-5.2-codex also on ws:/responses), the newer Claude models on /v1/messages
// only (claude-sonnet-4 on both chat and messages), an embeddings model, and
// one whose policy is not enabled for the account.
type catalog struct {
	list []*model
	byID map[string]*model
}

func newCatalog() *catalog {
	disabled := chatModel("claude-opus-4", "Claude Opus 4", "claude-opus-4", "Anthropic", false, pathChat, pathMessages)
	disabled.Policy.State = "disabled"
	list := []*model{
		chatModel("gpt-4.1", "GPT-4.1", "gpt-4.1", "Azure OpenAI", false, pathChat),
		chatModel("gpt-5-mini", "GPT-5 mini", "gpt-5-mini", "Azure OpenAI", false, pathChat, pathResponses),
		chatModel("gpt-5-codex", "GPT-5-Codex (Preview)", "gpt-5-codex", "OpenAI", true, pathResponses),
		chatModel("gpt-5.2-codex", "GPT-5.2-Codex", "gpt-5.2-codex", "OpenAI", false, pathResponses, pathWSResponses),
		chatModel("claude-sonnet-4", "Claude Sonnet 4", "claude-sonnet-4", "Anthropic", false, pathChat, pathMessages),
		chatModel("claude-sonnet-4.5", "Claude Sonnet 4.5", "claude-sonnet-4.5", "Anthropic", false, pathMessages),
		chatModel("claude-opus-4.1", "Claude Opus 4.1", "claude-opus-4.1", "Anthropic", false, pathMessages),
		chatModel("claude-opus-5.5", "Claude Opus 5.5", "claude-opus-5.5", "Anthropic", false, pathMessages),
		chatModel("claude-3.5-haiku", "Claude Haiku 3.5", "claude-3.5-haiku", "Anthropic", false, pathMessages),
		disabled,
		{
			ID: "text-embedding-3-small", Name: "Embedding V3 small", Object: "model", Vendor: "Azure OpenAI",
			Version: "text-embedding-3-small",
			Capabilities: modelCapabilities{
				Family: "text-embedding-3-small", Object: "model_capabilities", Tokenizer: "cl100k_base", Type: "embeddings",
				Limits:   modelLimits{MaxInputs: 512},
				Supports: modelSupports{Dimensions: true},
			},
			SupportedEndpoints: []string{pathEmbeddings},
		},
	}
	multiplier := map[string]float64{"gpt-4.1": 0, "gpt-5-mini": 0, "claude-3.5-haiku": 0.33, "claude-opus-4.1": 10, "claude-opus-5.5": 3}
	for _, m := range list {
		if m.Vendor == "Anthropic" {
			m.Capabilities.Tokenizer = "o200k_base"
			m.Capabilities.Limits = modelLimits{MaxContextWindowTokens: 200000, MaxOutputTokens: 16000, MaxPromptTokens: 128000}
		}
		if m.Capabilities.Type == "chat" {
			x, ok := multiplier[m.ID]
			if !ok {
				x = 1
			}
			m.Billing = &modelBilling{IsPremium: x > 0, Multiplier: x}
		}
	}
	c := &catalog{list: list, byID: make(map[string]*model, len(list))}
	for _, m := range list {
		c.byID[m.ID] = m
	}
	return c
}
