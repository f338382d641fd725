package forward

import (
	"bytes"
	"encoding/json"
)

// Image detail on /responses: some models refuse an input_image detail
// other than "low" or "high" (docs/protocol.md section 4); Codex and the
// OpenAI SDKs send "auto". The proxy sends "high" for any other value, so
// the image keeps its resolution. Only bodies with an image pay for this:
// the handler calls it when inspect saw one.

// normalizeImageDetail returns body with every input_image detail other
// than low or high set to high, and whether it changed anything. A body it
// cannot decode is left as it is (the API answers it). A changed body is
// re-encoded: key order may change, numbers are kept as written.
func normalizeImageDetail(body []byte) ([]byte, bool) {
	if !bytes.Contains(body, []byte(`"input_image"`)) || !bytes.Contains(body, []byte(`"detail"`)) {
		return body, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return body, false
	}
	if !fixDetail(v, 0) {
		return body, false
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return body, false
	}
	return bytes.TrimRight(out.Bytes(), "\n"), true
}

// maxDetailDepth bounds the walk (a request nests a few levels).
const maxDetailDepth = 64

func fixDetail(v any, depth int) bool {
	if depth > maxDetailDepth {
		return false
	}
	changed := false
	switch x := v.(type) {
	case map[string]any:
		if x["type"] == "input_image" {
			if d, ok := x["detail"].(string); ok && d != "low" && d != "high" {
				x["detail"] = "high"
				changed = true
			}
		}
		for _, e := range x {
			changed = fixDetail(e, depth+1) || changed
		}
	case []any:
		for _, e := range x {
			changed = fixDetail(e, depth+1) || changed
		}
	}
	return changed
}
