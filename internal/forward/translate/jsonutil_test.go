package translate

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
	"testing"
)

// dropUnknownRef is dropUnknown by a full decode.
func dropUnknownRef(body []byte, known []string) []string {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var out []string
	for k, v := range m {
		if _, ok := slices.BinarySearch(known, k); !ok && !isNull(v) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func FuzzDropUnknown(f *testing.F) {
	f.Add([]byte(`{"model":"m","seed":1,"x":null,"y":{"a":[1,"}"]},"z":"\"q"}`))
	f.Add([]byte(` { "a\u0062" : [ ] , "model" : true } `))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) || !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
			return
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil || len(m) != countKeys(body) {
			return // duplicate keys: the last wins in a decode
		}
		var info Info
		dropUnknown(body, []string{"model"}, &info)
		got := slices.Clone(info.Dropped)
		sort.Strings(got)
		want := dropUnknownRef(body, []string{"model"})
		if !slices.Equal(got, want) {
			t.Errorf("dropUnknown(%s) = %v; want %v", body, got, want)
		}
	})
}

func countKeys(body []byte) int {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		return -1
	}
	n := 0
	for dec.More() {
		if _, err := dec.Token(); err != nil {
			return -1
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return -1
		}
		n++
	}
	return n
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s\n\r\t\x00\x1f", "é…😀", "\u2028\u2029", "bad\xffutf8", "<&>"} {
		var b bytes.Buffer
		appendJSONString(&b, s)
		want, _ := marshal(s)
		if b.String() != string(want) {
			t.Errorf("appendJSONString(%q) = %s; want %s", s, b.String(), want)
		}
	}
}
