// Package usage reads the token usage of upstream answers as they pass
// through the proxy, without holding them back or decoding them whole: a
// [Tap] watches the bytes it forwards for "usage" keys and keeps only the
// objects after them (the first and the last; see [finder]), and decodes
// those once the answer ends. Nothing else of an answer is kept, so a
// stream held open for minutes costs the tap a few hundred bytes.
//
// Where usage sits, per dialect (see dialects.md):
//   - Chat Completions: "usage" at the end of a JSON answer; in a stream, on
//     the last chunk (with stream_options.include_usage, or when the
//     upstream adds it).
//   - Responses: "usage" near the end of a JSON answer; in a stream, in the
//     response.completed (or .incomplete) event, the last one.
//   - Anthropic Messages: "usage" at the end of a JSON answer; in a stream,
//     message_start carries the input and cache figures and message_delta,
//     near the end, the output (and, from newer upstreams, the rest again).
package usage

import "bytes"

// Usage is what one answer consumed. Input counts every prompt token,
// cached ones included (OpenAI's prompt_tokens; for Anthropic
// input_tokens + cache_read_input_tokens + cache_creation_input_tokens);
// Cached counts the prompt tokens read from the upstream's cache.
type Usage struct {
	Input, Output, Cached int64
}

// raw has the usage fields of all three dialects; pointers tell a field
// that is absent from one that is zero.
type raw struct {
	PromptTokens             *int64         `json:"prompt_tokens"`
	CompletionTokens         *int64         `json:"completion_tokens"`
	PromptTokensDetails      *cachedDetails `json:"prompt_tokens_details"`
	InputTokens              *int64         `json:"input_tokens"`
	OutputTokens             *int64         `json:"output_tokens"`
	InputTokensDetails       *cachedDetails `json:"input_tokens_details"`
	CacheReadInputTokens     *int64         `json:"cache_read_input_tokens"`
	CacheCreationInputTokens *int64         `json:"cache_creation_input_tokens"`
}

type cachedDetails struct {
	CachedTokens *int64 `json:"cached_tokens"`
}

// merge overlays the fields present in o onto r.
func (r *raw) merge(o raw) {
	set := func(dst **int64, src *int64) {
		if src != nil {
			*dst = src
		}
	}
	set(&r.PromptTokens, o.PromptTokens)
	set(&r.CompletionTokens, o.CompletionTokens)
	set(&r.InputTokens, o.InputTokens)
	set(&r.OutputTokens, o.OutputTokens)
	set(&r.CacheReadInputTokens, o.CacheReadInputTokens)
	set(&r.CacheCreationInputTokens, o.CacheCreationInputTokens)
	if o.PromptTokensDetails != nil && o.PromptTokensDetails.CachedTokens != nil {
		r.PromptTokensDetails = o.PromptTokensDetails
	}
	if o.InputTokensDetails != nil && o.InputTokensDetails.CachedTokens != nil {
		r.InputTokensDetails = o.InputTokensDetails
	}
}

func (r raw) usage() Usage {
	v := func(p *int64) int64 {
		if p == nil || *p < 0 {
			return 0
		}
		return *p
	}
	var u Usage
	if r.PromptTokens != nil || r.CompletionTokens != nil { // Chat
		u.Input, u.Output = v(r.PromptTokens), v(r.CompletionTokens)
		if d := r.PromptTokensDetails; d != nil {
			u.Cached = v(d.CachedTokens)
		}
		return u
	}
	u.Output = v(r.OutputTokens)
	if d := r.InputTokensDetails; d != nil { // Responses: input_tokens includes cached
		u.Input, u.Cached = v(r.InputTokens), v(d.CachedTokens)
		return u
	}
	// Anthropic: input_tokens excludes the cache.
	u.Cached = v(r.CacheReadInputTokens)
	u.Input = v(r.InputTokens) + u.Cached + v(r.CacheCreationInputTokens)
	return u
}

// parsePair reads the usage of an answer from its first and last usage
// objects (nil when absent; the same bytes for an answer with one): the
// first one's fields overlaid with the last one's, which covers every
// dialect above. ok is false when neither decodes.
func parsePair(first, last []byte) (u Usage, ok bool) {
	var r raw
	if first != nil {
		ok = decode(first, &r)
	}
	if last != nil && !bytes.Equal(last, first) {
		// (An answer with one usage object has it as first and last:
		// merging it onto itself would change nothing, so it is read once.)
		var l raw
		if decode(last, &l) {
			r.merge(l)
			ok = true
		}
	}
	if !ok {
		return Usage{}, false
	}
	return r.usage(), true
}
