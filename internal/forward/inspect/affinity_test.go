package inspect

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestConversationHash(t *testing.T) {
	base := `{"model":"m","system":"be brief","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`
	later := `{"model":"m","system":"be brief","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}],"stream":true}`
	other := `{"model":"m","system":"be brief","messages":[{"role":"user","content":"z"},{"role":"assistant","content":"b"}]}`
	otherSystem := `{"model":"m","system":"be long","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`
	h := conversationHash(Messages, []byte(base))
	if h == 0 {
		t.Fatal("no hash for a conversation")
	}
	if got := conversationHash(Messages, []byte(later)); got != h {
		t.Error("a later turn of the same conversation hashes differently")
	}
	for _, b := range []string{other, otherSystem} {
		if conversationHash(Messages, []byte(b)) == h {
			t.Errorf("%s hashes like %s", b, base)
		}
	}
	for _, tt := range []struct {
		kind Shape
		body string
	}{
		{Messages, `{"model":"m","messages":[]}`},
		{Messages, `{"model":"m"}`},
		{Messages, `not json`},
		{Messages, `{"messages":[{"role":"user"`},
		{Opaque, base},
		{Opaque, base},
	} {
		if got := conversationHash(tt.kind, []byte(tt.body)); got != 0 {
			t.Errorf("conversationHash(%d, %s) = %x; want 0", tt.kind, tt.body, got)
		}
	}
	if conversationHash(Responses, []byte(`{"input":"hello","instructions":"x"}`)) == 0 {
		t.Error("a Responses string input has no hash")
	}
	if conversationHash(Responses, []byte(`{"input":[{"role":"user","content":"hello"}]}`)) == 0 {
		t.Error("a Responses input list has no hash")
	}
	// Long turns cost their first affinityPart bytes only.
	long := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 1<<20) + `"}]}`
	if conversationHash(Messages, []byte(long)) == 0 {
		t.Error("a long turn has no hash")
	}
}

func TestRequestModel(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{`{"model":"gpt-4.1","messages":[]}`, "gpt-4.1"},
		{`{"messages":[{"model":"inner"}],"model":"claude-sonnet-4.5"}`, "claude-sonnet-4.5"},
		{`{"model":12}`, ""},
		{`{"model":"a\"b"}`, ""},
		{`{"messages":[]}`, ""},
		{`[]`, ""},
		{``, ""},
	} {
		if got := requestModel([]byte(tt.body)); got != tt.want {
			t.Errorf("requestModel(%s) = %q; want %q", tt.body, got, tt.want)
		}
	}
}

func FuzzConversationHash(f *testing.F) {
	f.Add([]byte(`{"model":"m","system":"s","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`))
	f.Add([]byte(`{"input":"hi","instructions":"x"}`))
	f.Add([]byte(`{"model":"gpt","messages":[{"model":"x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h1 := conversationHash(Messages, b)
		if h2 := conversationHash(Messages, b); h1 != h2 {
			t.Fatal("hash not deterministic")
		}
		_ = conversationHash(Responses, b)
		got := requestModel(b)
		// Where encoding/json reads a top-level string model without
		// escapes, the walker finds the same (with one "model" key in any
		// case: encoding/json takes the last and folds case).
		var v struct {
			Model *string `json:"model"`
		}
		if got != "" && json.Valid(b) && bytes.Count(bytes.ToLower(b), []byte(`"model"`)) == 1 {
			if json.Unmarshal(b, &v) != nil || v.Model == nil || *v.Model != got {
				t.Fatalf("requestModel = %q; encoding/json reads %v", got, v.Model)
			}
		}
	})
}
