package translate

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
)

// dropUnknown records in info every top-level key of body that is not in
// known (sorted) and whose value is not null.
func dropUnknown(body []byte, known []string, info *Info) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return
	}
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if _, ok := slices.BinarySearch(known, k); !ok && !isNull(v) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		info.drop(k)
	}
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
