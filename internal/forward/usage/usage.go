// Package usage reads the token usage of upstream answers as they pass
// through the proxy, without holding them back or decoding them whole: a
// [Tap] copies the bytes it forwards into a small head and a bounded tail,
// and [Parse] finds the "usage" objects there once the answer ends.
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

// HeadSize and TailSize bound what a [Tap] keeps of an answer.
const (
	HeadSize = 4 << 10
	TailSize = 16 << 10
)

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

// Parse reads the usage of an answer from its head and tail (which may
// overlap, or be the same bytes for a short answer). It takes the first
// "usage" object of the head and overlays the last one of the tail, which
// covers every dialect above. ok is false when no usage object was found.
func Parse(head, tail []byte) (u Usage, ok bool) {
	var r raw
	first := findUsage(head, false)
	if first != nil {
		ok = decode(first, &r)
	}
	if obj := findUsage(tail, true); obj != nil && !bytes.Equal(obj, first) {
		// (A short answer's head and tail hold the same object: merging
		// it onto itself would change nothing, so it is read once.)
		var last raw
		if decode(obj, &last) {
			r.merge(last)
			ok = true
		}
	}
	if !ok {
		return Usage{}, false
	}
	return r.usage(), true
}

var usageKey = []byte(`"usage"`)

// findUsage returns the object value of a "usage" key in b, the first or the
// last one that is whole. A "usage" inside a JSON string is escaped there
// (\"usage\"), so a bare one is a key or a string value; a string value is
// not followed by a colon.
func findUsage(b []byte, last bool) []byte {
	var found []byte
	for rest, off := b, 0; ; {
		i := bytes.Index(rest, usageKey)
		if i < 0 {
			return found
		}
		at := off + i
		if at == 0 || b[at-1] != '\\' {
			if obj := objectAfterColon(b[at+len(usageKey):]); obj != nil {
				if !last {
					return obj
				}
				found = obj
			}
		}
		off = at + len(usageKey)
		rest = b[off:]
	}
}

// objectAfterColon returns the JSON object after ws ':' ws at the start of
// b, or nil when none is there whole.
func objectAfterColon(b []byte) []byte {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != ':' {
		return nil
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '{' {
		return nil
	}
	end := matchObject(b[i:])
	if end < 0 {
		return nil
	}
	return b[i : i+end]
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// matchObject returns the length of the object starting at b[0] == '{',
// or -1 when it does not end within b. Usage objects are small and shallow;
// deeper nesting than maxDepth is refused.
func matchObject(b []byte) int {
	const maxDepth = 8
	depth, inStr := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
			if depth > maxDepth {
				return -1
			}
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
