package usage

import "encoding/json"

// decode reads a usage object into r as json.Unmarshal would, without
// reflection or allocation for the common shape: ASCII keys without
// escapes, integers for the token counts, any valid JSON for the other
// keys. Anything else (an escape, a non-ASCII key, a count that is not a
// plain integer or null, nesting deeper than maxScanDepth) falls back to
// json.Unmarshal, so the result is always the standard decoder's. It reports
// whether the object decoded without error.
func decode(obj []byte, r *raw) bool {
	s := scanner{b: obj}
	var fast raw
	if s.object(func(key []byte) bool { return s.usageField(key, &fast) }) && s.end() {
		*r = fast
		return true
	}
	*r = raw{}
	return json.Unmarshal(obj, r) == nil
}

// maxScanDepth bounds the nesting the fast path walks; usage objects are
// two levels deep at most.
const maxScanDepth = 8

// scanner is a strict recursive-descent reader of a subset of JSON: what it
// accepts is valid JSON, and it gives up (returns false) on anything it
// does not handle, never guessing.
type scanner struct {
	b     []byte
	i     int
	depth int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end says whether only whitespace is left.
func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

// object reads {"key": value, ...}; field reads each value (after the
// colon) and says whether it could.
func (s *scanner) object(field func(key []byte) bool) bool {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	return s.container('}', func() bool {
		key, ok := s.str()
		if !ok {
			return false
		}
		s.space()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		s.space()
		return field(key)
	})
}

// container reads the rest of an object or array whose opening byte is at
// s.i: items separated by commas up to end, each read by item (called at
// the item's first non-space byte). It bounds the nesting.
func (s *scanner) container(end byte, item func() bool) bool {
	if s.depth++; s.depth > maxScanDepth {
		return false
	}
	defer func() { s.depth-- }()
	s.i++
	s.space()
	if s.i < len(s.b) && s.b[s.i] == end {
		s.i++
		return true
	}
	for {
		s.space()
		if !item() {
			return false
		}
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case end:
			s.i++
			return true
		default:
			return false
		}
	}
}

// str reads a string without escapes or control characters and returns
// its bytes; non-ASCII bytes are fine in values (the caller checks keys).
func (s *scanner) str() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			s.i = j + 1
			return s.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// skip reads any JSON value this scanner handles.
func (s *scanner) skip() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{':
		return s.object(func([]byte) bool { return s.skip() })
	case c == '[':
		return s.container(']', s.skip)
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		_, _, ok := s.number()
		return ok
	}
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number reads a JSON number; integer says it had no fraction or exponent,
// and v is its value then (ok is false when an integer overflows int64).
func (s *scanner) number() (v int64, integer, ok bool) {
	j := s.i
	neg := j < len(s.b) && s.b[j] == '-'
	if neg {
		j++
	}
	digits := j
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		d := int64(s.b[j] - '0')
		if v > (1<<63-1-d)/10 {
			return 0, false, false
		}
		v = v*10 + d
		j++
	}
	if j == digits || (s.b[digits] == '0' && j-digits > 1) {
		return 0, false, false // no digits, or a leading zero
	}
	integer = true
	if j < len(s.b) && s.b[j] == '.' {
		integer = false
		j++
		k := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		if j == k {
			return 0, false, false
		}
	}
	if j < len(s.b) && (s.b[j] == 'e' || s.b[j] == 'E') {
		integer = false
		j++
		if j < len(s.b) && (s.b[j] == '+' || s.b[j] == '-') {
			j++
		}
		k := j
		for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
			j++
		}
		if j == k {
			return 0, false, false
		}
	}
	s.i = j
	if neg {
		v = -v
	}
	return v, integer, true
}

// count reads a token count into *dst: an integer, or null (which, as in
// encoding/json, sets the pointer to nil). Anything else is for the
// standard decoder.
func (s *scanner) count(dst **int64) bool {
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		if !s.literal("null") {
			return false
		}
		*dst = nil
		return true
	}
	v, integer, ok := s.number()
	if !ok || !integer {
		return false
	}
	*dst = &v
	return true
}

// details reads a {"cached_tokens": N} object into *dst, merging into one
// already there as encoding/json does; null sets it to nil.
func (s *scanner) details(dst **cachedDetails) bool {
	if s.i < len(s.b) && s.b[s.i] == 'n' {
		if !s.literal("null") {
			return false
		}
		*dst = nil
		return true
	}
	d := *dst
	if d == nil {
		d = new(cachedDetails)
	}
	if !s.object(func(key []byte) bool {
		if !asciiKey(key) {
			return false
		}
		if equalFoldASCII(key, "cached_tokens") {
			return s.count(&d.CachedTokens)
		}
		return s.skip()
	}) {
		return false
	}
	*dst = d
	return true
}

// usageField reads the value of key into r.
func (s *scanner) usageField(key []byte, r *raw) bool {
	if !asciiKey(key) {
		return false // encoding/json folds some non-ASCII letters onto ASCII ones
	}
	switch {
	case equalFoldASCII(key, "prompt_tokens"):
		return s.count(&r.PromptTokens)
	case equalFoldASCII(key, "completion_tokens"):
		return s.count(&r.CompletionTokens)
	case equalFoldASCII(key, "input_tokens"):
		return s.count(&r.InputTokens)
	case equalFoldASCII(key, "output_tokens"):
		return s.count(&r.OutputTokens)
	case equalFoldASCII(key, "cache_read_input_tokens"):
		return s.count(&r.CacheReadInputTokens)
	case equalFoldASCII(key, "cache_creation_input_tokens"):
		return s.count(&r.CacheCreationInputTokens)
	case equalFoldASCII(key, "prompt_tokens_details"):
		return s.details(&r.PromptTokensDetails)
	case equalFoldASCII(key, "input_tokens_details"):
		return s.details(&r.InputTokensDetails)
	}
	return s.skip()
}

func asciiKey(k []byte) bool {
	for _, c := range k {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// equalFoldASCII is encoding/json's key match for ASCII keys: exact or
// case-insensitive.
func equalFoldASCII(k []byte, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i := range k {
		a, b := k[i], name[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
