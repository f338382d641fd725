// Package catalog keeps the Copilot API's model list (GET /models) per
// account and resolves the model names clients send to the ids in it.
//
// A [Store] holds one [Catalog] per account, fetched with the account's
// current token, refreshed when the token's generation changes and at least
// every refresh interval, one fetch at a time per account; the last good
// catalog is served while a refresh fails. A [Resolver] maps a client's name
// to a catalog id: the exact id, then built-in rules for the names clients
// ship with ([Builtin]), then the operator's alias file ([Aliases]).
package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Limits of a parsed /models answer: a catalog is held in memory for every
// account, so the upstream cannot make it arbitrarily large.
const (
	// MaxBodyBytes bounds the /models body read from the upstream.
	MaxBodyBytes = 4 << 20
	// MaxModels bounds the entries kept; later ones are dropped.
	MaxModels = 2000
	// MaxIDLen bounds a model id; entries with longer ids are dropped.
	MaxIDLen = 256
)

// ErrMalformed is wrapped by [Parse] for a body that is not a model list.
var ErrMalformed = errors.New("malformed /models answer")

// Model is one entry of the catalog: what routing needs, decoded, and the
// entry as the upstream sent it, for listings.
type Model struct {
	ID      string
	Name    string // display name; the id when the upstream gives none
	Vendor  string
	Version string
	Family  string
	Type    string // capabilities.type: "chat", "embeddings", ...
	Preview bool
	// Endpoints are the upstream paths the model is served on
	// (supported_endpoints, e.g. "/chat/completions", "/responses",
	// "/v1/messages"); empty when the upstream does not say.
	Endpoints []string
	Supports  Supports
	Limits    Limits
	// PolicyState is policy.state ("enabled", "disabled", ...), empty when
	// absent.
	PolicyState string
	// Billing is present when the upstream sent billing fields.
	Billing *Billing
	// Raw is the entry exactly as the upstream sent it, unknown fields
	// included.
	Raw json.RawMessage
	// FirstSeen is when the store first saw this id (listings' created_at).
	FirstSeen time.Time
}

// Supports are the capabilities.supports flags routing cares about.
type Supports struct {
	Streaming         bool `json:"streaming"`
	ToolCalls         bool `json:"tool_calls"`
	ParallelToolCalls bool `json:"parallel_tool_calls"`
	Vision            bool `json:"vision"`
	StructuredOutputs bool `json:"structured_outputs"`
}

// Limits are capabilities.limits (zero when absent).
type Limits struct {
	MaxContextWindowTokens int64 `json:"max_context_window_tokens"`
	MaxOutputTokens        int64 `json:"max_output_tokens"`
	MaxPromptTokens        int64 `json:"max_prompt_tokens"`
	MaxInputs              int64 `json:"max_inputs"`
}

// Billing is how the model is billed.
type Billing struct {
	IsPremium  bool    `json:"is_premium"`
	Multiplier float64 `json:"multiplier"`
}

// Serves reports whether the model is served on the upstream path endpoint.
// A model whose entry names no endpoints is assumed to serve every one: the
// upstream answers if it does not.
func (m *Model) Serves(endpoint string) bool {
	return len(m.Endpoints) == 0 || slices.Contains(m.Endpoints, endpoint)
}

// Catalog is one account's model list at one time. Its models do not change
// once made, so requests share them without locks; it is safe for
// concurrent use.
type Catalog struct {
	// Models are in the upstream's order, without duplicate ids.
	Models []*Model
	// FetchedAt is when the upstream answered.
	FetchedAt time.Time
	byID      map[string]*Model

	// memo holds the built-in rules' answers (nil: no match) for the raw
	// names requests sent, up to maxMemo of them: clients send the same few
	// names on every request (Claude Code's claude-opus-5-5).
	memoMu sync.RWMutex
	memo   map[string]*Model
}

// maxMemo bounds the memo of built-in resolutions: names come from clients.
const maxMemo = 1024

// builtinRaw applies the built-in rules to a name without escapes,
// remembering the answer.
func (c *Catalog) builtinRaw(raw []byte) *Model {
	c.memoMu.RLock()
	m, ok := c.memo[string(raw)]
	c.memoMu.RUnlock()
	if ok {
		return m
	}
	name := string(raw)
	m = builtin(c, name)
	c.memoMu.Lock()
	if len(c.memo) < maxMemo {
		if c.memo == nil {
			c.memo = map[string]*Model{}
		}
		c.memo[name] = m
	}
	c.memoMu.Unlock()
	return m
}

// Lookup returns the model with exactly this id, or nil.
func (c *Catalog) Lookup(id string) *Model {
	if c == nil {
		return nil
	}
	return c.byID[id]
}

// lookupBytes is Lookup for a name held as bytes (no allocation).
func (c *Catalog) lookupBytes(id []byte) *Model {
	if c == nil {
		return nil
	}
	return c.byID[string(id)]
}

// Len returns the number of models.
func (c *Catalog) Len() int {
	if c == nil {
		return 0
	}
	return len(c.Models)
}

// New returns a catalog of models (tests and [Parse]); later duplicates of
// an id are dropped.
func New(models []*Model, fetchedAt time.Time) *Catalog {
	c := &Catalog{FetchedAt: fetchedAt, byID: make(map[string]*Model, len(models))}
	for _, m := range models {
		if _, dup := c.byID[m.ID]; dup || m.ID == "" {
			continue
		}
		c.byID[m.ID] = m
		c.Models = append(c.Models, m)
	}
	return c
}

type wireList struct {
	Data []json.RawMessage `json:"data"`
}

type wireModel struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Vendor       string          `json:"vendor"`
	Version      string          `json:"version"`
	Preview      bool            `json:"preview"`
	Endpoints    []string        `json:"supported_endpoints"`
	Billing      json.RawMessage `json:"billing"`
	Capabilities struct {
		Family   string   `json:"family"`
		Type     string   `json:"type"`
		Supports Supports `json:"supports"`
		Limits   Limits   `json:"limits"`
	} `json:"capabilities"`
	Policy struct {
		State string `json:"state"`
	} `json:"policy"`
}

// Parse reads a /models answer: {"data": [entries...]}. Entries that are
// not objects with a string id (or whose fields have unexpected types) are
// skipped, so one odd entry does not cost the whole catalog; a body that is
// not such a list at all is an error wrapping [ErrMalformed].
func Parse(body []byte, fetchedAt time.Time) (*Catalog, error) {
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(body), MaxBodyBytes)
	}
	var list wireList
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if list.Data == nil {
		return nil, fmt.Errorf("%w: no data list", ErrMalformed)
	}
	models := make([]*Model, 0, min(len(list.Data), MaxModels))
	for _, raw := range list.Data {
		if len(models) == MaxModels {
			break
		}
		if m := parseModel(raw); m != nil {
			m.FirstSeen = fetchedAt
			models = append(models, m)
		}
	}
	return New(models, fetchedAt), nil
}

func parseModel(raw json.RawMessage) *Model {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	var w wireModel
	if err := json.Unmarshal(raw, &w); err != nil || w.ID == "" || len(w.ID) > MaxIDLen {
		return nil
	}
	m := &Model{
		ID: w.ID, Name: w.Name, Vendor: w.Vendor, Version: w.Version, Preview: w.Preview,
		Family: w.Capabilities.Family, Type: w.Capabilities.Type,
		Endpoints: w.Endpoints, Supports: w.Capabilities.Supports, Limits: w.Capabilities.Limits,
		PolicyState: w.Policy.State,
		Raw:         slices.Clip(raw),
	}
	if m.Name == "" {
		m.Name = m.ID
	}
	if len(w.Billing) > 0 && w.Billing[0] == '{' {
		var b Billing
		if json.Unmarshal(w.Billing, &b) == nil {
			m.Billing = &b
		}
	}
	return m
}

// PremiumUnits is what one premium request of m counts in premium units:
// its billing multiplier, 0 when the catalog says it is not premium, and 1
// when m is nil or carries no billing.
func (m *Model) PremiumUnits() float64 {
	switch {
	case m == nil || m.Billing == nil:
		return 1
	case !m.Billing.IsPremium:
		return 0
	case m.Billing.Multiplier < 0:
		return 0
	}
	return m.Billing.Multiplier
}
