package inspect

import "hash/fnv"

// Conversation affinity: a pool sends the turns of one conversation to the
// same account, so the upstream's prompt cache (per account) keeps hitting.
// A conversation is recognised by its opening: the instructions (Anthropic
// "system", Responses "instructions") and the first two turns, which every
// later request of the conversation repeats unchanged. Each part counts up
// to affinityPart bytes, so hashing costs the same for any history length.
// The scan notes where the parts are; Affinity hashes them only when a pool
// asks.

const (
	affinityTurns = 2
	affinityPart  = 4 << 10
	// maxParts bounds the parts noted: the turns and a few instructions
	// (a body may repeat "system" in other cases; the rest are not hashed).
	maxParts = affinityTurns + 4
)

// span is a range of the body; a zero span is none.
type span struct{ start, end int }

// part is one piece of the opening: a key (for instructions) and a value.
type part struct{ key, val span }

func (r *Result) addPart(key, val span) {
	r.turns++
	if r.nparts < maxParts {
		r.parts[r.nparts] = part{key, val}
		r.nparts++
	}
}

// Affinity returns the hash of body's opening, or 0 when the body has no
// turns (or is not JSON). FNV-1a is the same in every proxy, so replicas
// agree on the account of a conversation. body is the one scanned.
func (r *Result) Affinity(body []byte) uint64 {
	if r.turns <= 0 {
		return 0
	}
	h := fnv.New64a()
	for _, p := range r.parts[:r.nparts] {
		h.Write(body[p.key.start:p.key.end])
		v := body[p.val.start:p.val.end]
		h.Write(v[:min(len(v), affinityPart)])
	}
	return h.Sum64() | 1<<63 // never 0 or 1, which mean "none"
}
