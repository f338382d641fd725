package forward

import (
	"bytes"
	"hash/fnv"
)

// Conversation affinity: a pool sends the turns of one conversation to the
// same account, so the upstream's prompt cache (per account) keeps hitting.
// A conversation is recognised by its opening: the instructions (Anthropic
// "system", Responses "instructions") and the first two turns, which every
// later request of the conversation repeats unchanged. Each part counts up
// to affinityPart bytes, so hashing costs the same for any history length;
// finding the parts is one pass of the walker that skips the rest.

const (
	affinityTurns = 2
	affinityPart  = 4 << 10
)

// conversationHash returns the hash of body's opening, or 0 when the body
// has no turns (or is not JSON). FNV-1a is the same in every proxy, so
// replicas agree on the account of a conversation.
func conversationHash(kind bodyKind, body []byte) uint64 {
	var field string
	switch kind {
	case bodyMessages:
		field = "messages"
	case bodyResponses:
		field = "input"
	default:
		return 0
	}
	w := jsonWalker{data: body}
	if w.enter('{') != nil {
		return 0
	}
	h := fnv.New64a()
	turns := 0
	for first := true; ; first = false {
		ok, err := w.more('}', first)
		if err != nil {
			return 0
		}
		if !ok {
			break
		}
		k, err := w.key()
		if err != nil {
			return 0
		}
		switch {
		case keyIs(k, "system") || keyIs(k, "instructions"):
			v, err := w.value()
			if err != nil {
				return 0
			}
			h.Write(k)
			h.Write(v[:min(len(v), affinityPart)])
		case keyIs(k, field) && w.next() == '[':
			if w.enter('[') != nil {
				return 0
			}
			for i := 0; ; i++ {
				ok, err := w.more(']', i == 0)
				if err != nil {
					return 0
				}
				if !ok {
					break
				}
				v, err := w.value()
				if err != nil {
					return 0
				}
				if i < affinityTurns {
					h.Write(v[:min(len(v), affinityPart)])
					turns++
				}
			}
		case keyIs(k, field):
			v, err := w.value() // a string input: the turn itself
			if err != nil {
				return 0
			}
			h.Write(v[:min(len(v), affinityPart)])
			turns++
		default:
			if w.skipValue() != nil {
				return 0
			}
		}
	}
	if turns == 0 {
		return 0
	}
	return h.Sum64() | 1<<63 // never 0 or 1, which mean "none"
}

// requestModel returns the top-level "model" string of a JSON body, or ""
// (for the usage metrics' model label). Clients put it first, so the walk
// usually stops at the first member.
func requestModel(body []byte) string {
	w := jsonWalker{data: body}
	if w.enter('{') != nil {
		return ""
	}
	for first := true; ; first = false {
		ok, err := w.more('}', first)
		if err != nil || !ok {
			return ""
		}
		k, err := w.key()
		if err != nil {
			return ""
		}
		if !keyIs(k, "model") {
			if w.skipValue() != nil {
				return ""
			}
			continue
		}
		v, err := w.value()
		if err != nil || len(v) < 2 || v[0] != '"' || bytes.IndexByte(v, '\\') >= 0 {
			return ""
		}
		return string(v[1 : len(v)-1])
	}
}
