package catalog

import (
	"strconv"
	"strings"
	"testing"
)

// sandboxLike is a 2026 catalog: the ids the Copilot API uses.
func sandboxLike() *Catalog {
	var ms []*Model
	for _, id := range []string{
		"gpt-4.1", "gpt-4o", "gpt-4o-2024-11-20", "gpt-5-mini", "gpt-5", "gpt-5.2-codex", "o3-mini",
		"claude-sonnet-4", "claude-sonnet-4.5", "claude-opus-4", "claude-opus-4.1", "claude-opus-5.5",
		"claude-3.5-haiku", "claude-haiku-4.5", "claude-3.7-sonnet", "text-embedding-3-small",
	} {
		ms = append(ms, &Model{ID: id})
	}
	return New(ms, t0)
}

func TestResolveClientNames(t *testing.T) {
	cat := sandboxLike()
	aliases := mustAliases(t, "fast: gpt-5-mini\nsmart: claude-opus-4-1-20250805\nfuture: gpt-9\nclaude-opus-5-5: gpt-4.1\n")
	tests := []struct {
		name, want string
		rule       Rule
	}{
		// Exact ids, including a dated id the catalog has itself.
		{"gpt-4.1", "gpt-4.1", RuleExact},
		{"claude-sonnet-4.5", "claude-sonnet-4.5", RuleExact},
		{"gpt-4o-2024-11-20", "gpt-4o-2024-11-20", RuleExact},
		// Claude Code and the Anthropic SDKs.
		{"claude-opus-5-5", "claude-opus-5.5", RuleBuiltin}, // Claude Code's default; the alias of the same name loses
		{"claude-sonnet-4-5-20250929", "claude-sonnet-4.5", RuleBuiltin},
		{"claude-sonnet-4-5", "claude-sonnet-4.5", RuleBuiltin},
		{"claude-opus-4-1-20250805", "claude-opus-4.1", RuleBuiltin},
		{"claude-opus-4-1", "claude-opus-4.1", RuleBuiltin},
		{"claude-opus-4-0", "claude-opus-4", RuleBuiltin},
		{"claude-opus-4-20250514", "claude-opus-4", RuleBuiltin},
		{"claude-sonnet-4-20250514", "claude-sonnet-4", RuleBuiltin},
		{"claude-3-5-haiku-latest", "claude-3.5-haiku", RuleBuiltin},
		{"claude-3-5-haiku-20241022", "claude-3.5-haiku", RuleBuiltin},
		{"claude-haiku-3-5", "claude-3.5-haiku", RuleBuiltin},
		{"claude-haiku-4-5-20251001", "claude-haiku-4.5", RuleBuiltin},
		{"claude-3-7-sonnet-latest", "claude-3.7-sonnet", RuleBuiltin},
		{"claude-opus-4-1@20250805", "claude-opus-4.1", RuleBuiltin}, // Vertex AI's form
		{"claude-sonnet-4.5-20250929", "claude-sonnet-4.5", RuleBuiltin},
		{"Claude-Sonnet-4.5", "claude-sonnet-4.5", RuleBuiltin},
		// OpenAI's dated snapshots.
		{"gpt-4.1-2025-04-14", "gpt-4.1", RuleBuiltin},
		{"gpt-4o-2024-08-06", "gpt-4o", RuleBuiltin},
		{"gpt-5-mini-2025-08-07", "gpt-5-mini", RuleBuiltin},
		{"o3-mini-2025-01-31", "o3-mini", RuleBuiltin},
		// The alias file, whose target is resolved in turn.
		{"fast", "gpt-5-mini", RuleAlias},
		{"smart", "claude-opus-4.1", RuleAlias},
		{"future", "gpt-9", RuleAlias}, // not in the catalog: sent anyway, the API answers
		// Rules apply only when the result is in the catalog.
		{"claude-opus-4-2-20260101", "claude-opus-4-2-20260101", RuleUnknown},
		{"claude-sonnet-3-5", "claude-sonnet-3-5", RuleUnknown},
		{"gpt-4.1-2025-04", "gpt-4.1-2025-04", RuleUnknown},
		{"gpt-4.1-20250414x", "gpt-4.1-20250414x", RuleUnknown},
		{"my-model", "my-model", RuleUnknown},
		{"", "", RuleUnknown},
	}
	for _, tt := range tests {
		got := ResolveString(cat, aliases, tt.name)
		if got.ID != tt.want || got.Rule != tt.rule || (got.Model == nil) != (cat.Lookup(tt.want) == nil) {
			t.Errorf("Resolve(%q) = %q %v (model %v); want %q %v", tt.name, got.ID, got.Rule, got.Model != nil, tt.want, tt.rule)
		}
		if raw := Resolve(cat, aliases, []byte(tt.name)); raw.ID != got.ID || raw.Rule != got.Rule {
			t.Errorf("Resolve(bytes %q) = %q %v; want as ResolveString", tt.name, raw.ID, raw.Rule)
		}
	}
}

func TestResolveEscapedAndNil(t *testing.T) {
	cat := sandboxLike()
	if r := Resolve(cat, nil, []byte(`gpt-4\u002e1`)); r.ID != "gpt-4.1" || r.Rule != RuleExact {
		t.Errorf("escaped name = %q %v; want gpt-4.1 exact", r.ID, r.Rule)
	}
	if r := Resolve(cat, nil, []byte(`bad\x`)); r.Rule != RuleNone {
		t.Errorf("invalid escape = %v; want none", r.Rule)
	}
	if r := Resolve(nil, nil, []byte("claude-opus-5-5")); r.ID != "claude-opus-5-5" || r.Rule != RuleUnknown {
		t.Errorf("no catalog = %q %v; want unknown, unchanged", r.ID, r.Rule)
	}
}

func TestResolveExactAllocatesNothing(t *testing.T) {
	cat := sandboxLike()
	name := []byte("claude-sonnet-4.5")
	if n := testing.AllocsPerRun(100, func() { _ = Resolve(cat, nil, name) }); n != 0 {
		t.Errorf("Resolve of an exact id allocates %.0f times; want 0", n)
	}
}

func TestResolveBuiltinRemembered(t *testing.T) {
	cat := sandboxLike()
	name := []byte("claude-opus-5-5")
	if r := Resolve(cat, nil, name); r.ID != "claude-opus-5.5" || r.Rule != RuleBuiltin {
		t.Fatalf("Resolve = %q %v", r.ID, r.Rule)
	}
	if n := testing.AllocsPerRun(100, func() { _ = Resolve(cat, nil, name) }); n != 0 {
		t.Errorf("Resolve of a remembered built-in name allocates %.0f times; want 0", n)
	}
	// The memo is bounded: names come from clients.
	for i := range 2 * maxMemo {
		Resolve(cat, nil, []byte("claude-x-"+strconv.Itoa(i)))
	}
	if len(cat.memo) != maxMemo {
		t.Errorf("memo holds %d names; want the bound %d", len(cat.memo), maxMemo)
	}
	if r := Resolve(cat, nil, []byte("claude-sonnet-4-5-20250929")); r.ID != "claude-sonnet-4.5" || r.Rule != RuleBuiltin {
		t.Errorf("past the bound: Resolve = %q %v; want claude-sonnet-4.5 builtin", r.ID, r.Rule)
	}
}

func TestBuiltinBounded(t *testing.T) {
	// Long or odd names give few candidates and never panic.
	for _, n := range []string{strings.Repeat("claude-4-", 100), "claude-", "-latest", "@20250101", "claude-1-2-3-4-5-6", "claude-x-y"} {
		if c := Builtin(n); len(c) > 5 {
			t.Errorf("Builtin(%.30q) = %d candidates; want at most 5", n, len(c))
		}
	}
}

func mustAliases(t *testing.T, s string) *Aliases {
	t.Helper()
	a, bad, err := ParseAliases(strings.NewReader(s))
	if err != nil || len(bad) > 0 {
		t.Fatalf("ParseAliases = %v, %v", bad, err)
	}
	return a
}
