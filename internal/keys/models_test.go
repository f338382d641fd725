package keys

import (
	"path"
	"strings"
	"testing"
)

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		glob, s string
		want    bool
	}{
		{"gpt-*", "gpt-4o", true},
		{"gpt-*", "gpt-", true},
		{"gpt-*", "o3-mini", false},
		{"claude-sonnet-*", "claude-sonnet-4.5", true},
		{"claude-sonnet-*", "claude-opus-4", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"gpt-4o", "gpt-4o", true},
		{"gpt-4o", "gpt-4o-mini", false},
		{"*-mini", "gpt-4o-mini", true},
		{"o?-mini", "o3-mini", true},
		{"o?-mini", "o-mini", false},
		{"*a*b*c", "xaybzc", true},
		{"*a*b*c", "xaybzcz", false},
		{"a**b", "ab", true},
		{"GPT-*", "gpt-4o", false},
	}
	for _, tt := range tests {
		if got := MatchGlob(tt.glob, tt.s); got != tt.want {
			t.Errorf("MatchGlob(%q, %q) = %v; want %v", tt.glob, tt.s, got, tt.want)
		}
	}
}

func TestParseModels(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		allows  []string
		refuses []string
	}{
		{in: "", allows: []string{"anything"}},
		{in: "gpt-*,claude-sonnet-*", allows: []string{"gpt-4o", "claude-sonnet-4"}, refuses: []string{"o3", "claude-opus-4"}},
		{in: "gpt-*,", wantErr: true},
		{in: "gpt-*,gpt-*", wantErr: true},
		{in: "gpt 4", wantErr: true},
		{in: "gpt-[ab]", wantErr: true},
		{in: strings.Repeat("a", MaxModelGlobLen+1), wantErr: true},
		{in: strings.Repeat("a,", MaxModelGlobs) + "b", wantErr: true},
	}
	for _, tt := range tests {
		m, err := ParseModels(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseModels(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if m.String() != tt.in {
			t.Errorf("ParseModels(%q).String() = %q", tt.in, m.String())
		}
		for _, id := range tt.allows {
			if !m.Allows(id) {
				t.Errorf("ParseModels(%q).Allows(%q) = false", tt.in, id)
			}
		}
		for _, id := range tt.refuses {
			if m.Allows(id) {
				t.Errorf("ParseModels(%q).Allows(%q) = true", tt.in, id)
			}
		}
	}
}

// TestMatchGlobLinear: a glob built to make naive backtracking exponential
// matches a long id quickly (the matcher is O(len(glob)·len(s))).
func TestMatchGlobLinear(t *testing.T) {
	glob := strings.Repeat("*a", 60) + "*b"
	s := strings.Repeat("a", 4000)
	if MatchGlob(glob, s) {
		t.Fatal("matched")
	}
}

func FuzzMatchGlob(f *testing.F) {
	for _, seed := range [][2]string{{"gpt-*", "gpt-4o"}, {"*a*b?c", "xxaybzc"}, {"?", ""}, {"**", "x"}, {"claude-*-4", "claude-sonnet-4"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, glob, s string) {
		got := MatchGlob(glob, s)
		if checkGlob(glob) != nil || strings.ContainsAny(s, "/[\\\\") || strings.ContainsAny(glob, "/") || !ascii(s) {
			return // path.Match, the reference, treats these differently
		}
		want, err := path.Match(glob, s)
		if err != nil {
			t.Fatalf("path.Match(%q): %v", glob, err)
		}
		if got != want {
			t.Fatalf("MatchGlob(%q, %q) = %v; path.Match says %v", glob, s, got, want)
		}
		m, err := ParseModels(glob)
		if err != nil || m.Allows(s) != got {
			t.Fatalf("ParseModels(%q).Allows(%q) disagrees with MatchGlob (err %v)", glob, s, err)
		}
	})
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
