package translate

import (
	"bytes"
	"encoding/json"
	"slices"
	"unicode/utf8"
)

// dropUnknown records in info every top-level key of body (a valid JSON
// object) that is not in known (sorted) and whose value is not null. It
// scans the bytes instead of decoding them: the body was decoded once
// already.
func dropUnknown(body []byte, known []string, info *Info) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return
	}
	i++
	for {
		i = skipSpace(body, i)
		if i >= len(body) || body[i] != '"' {
			return
		}
		end := skipString(body, i)
		rawKey := body[i:end]
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return
		}
		i = skipSpace(body, i+1)
		vstart := i
		i = skipValue(body, i)
		if i < 0 {
			return
		}
		var key string
		if bytes.IndexByte(rawKey, '\\') >= 0 || !utf8.Valid(rawKey) {
			if json.Unmarshal(rawKey, &key) != nil {
				return
			}
		} else {
			key = string(rawKey[1 : len(rawKey)-1])
		}
		if _, ok := slices.BinarySearch(known, key); !ok && !isNull(body[vstart:i]) {
			info.drop(key)
		}
		i = skipSpace(body, i)
		if i >= len(body) || body[i] != ',' {
			return
		}
		i++
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value starting at i, or -1.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			i = skipString(b, i)
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return i // the end of the enclosing object
			}
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	if depth == 0 {
		return i
	}
	return -1
}

func isNull(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) == 0 || string(v) == "null"
}

// isString reports whether v is a JSON string.
func isString(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) > 0 && v[0] == '"'
}

// marshal encodes v without HTML escaping, which the APIs do not use.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := b.Bytes()
	return out[:len(out)-1], nil
}

// compactJSON returns s as compact raw JSON when it is valid JSON, else nil.
func compactJSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return nil
	}
	return b.Bytes()
}

func ptr[T any](v T) *T { return &v }

// paraBreak separates texts joined into one: a blank line.
const paraBreak = "\n\n"
