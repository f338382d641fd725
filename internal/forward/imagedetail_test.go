package forward

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestNormalizeImageDetail(t *testing.T) {
	tests := []struct {
		name, in string
		changed  bool
		want     []string // substrings of the result
	}{
		{"auto to high", `{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"auto"},{"type":"input_text","text":"a<b"}]}],"max_output_tokens":12345678901234567890}`,
			true, []string{`"detail":"high"`, `"text":"a<b"`, `12345678901234567890`}},
		{"low kept", `{"input":[{"role":"user","content":[{"type":"input_image","image_url":"x","detail":"low"}]}]}`, false, []string{`"detail":"low"`}},
		{"no image", `{"input":"detail"}`, false, nil},
		{"not json", `{"input_image" "detail"`, false, nil},
	}
	for _, tt := range tests {
		got, changed := normalizeImageDetail([]byte(tt.in))
		if changed != tt.changed {
			t.Errorf("%s: changed = %v", tt.name, changed)
		}
		if !changed && string(got) != tt.in {
			t.Errorf("%s: unchanged body rewritten: %s", tt.name, got)
		}
		if changed && !json.Valid(got) {
			t.Errorf("%s: invalid JSON %s", tt.name, got)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(got), w) {
				t.Errorf("%s: %s lacks %s", tt.name, got, w)
			}
		}
	}
}

func FuzzNormalizeImageDetail(f *testing.F) {
	f.Add([]byte(`{"input":[{"content":[{"type":"input_image","detail":"auto"}]}]}`))
	f.Add([]byte(`[[[[{"type":"input_image","detail":1}]]]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, changed := normalizeImageDetail(b)
		if changed && !json.Valid(out) {
			t.Fatalf("changed body is not JSON: %s", out)
		}
		if !changed && string(out) != string(b) {
			t.Fatal("unchanged body rewritten")
		}
	})
}
