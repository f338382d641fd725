package catalog

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Rule says how a client's model name was resolved.
type Rule uint8

const (
	// RuleNone: the request names no model (or not as a string).
	RuleNone Rule = iota
	// RuleExact: the name is a catalog id.
	RuleExact
	// RuleBuiltin: a built-in rule mapped it to a catalog id ([Builtin]).
	RuleBuiltin
	// RuleAlias: the operator's alias file mapped it.
	RuleAlias
	// RuleUnknown: nothing matched; the name is sent as it is.
	RuleUnknown
)

// String returns the rule's metrics label.
func (r Rule) String() string {
	switch r {
	case RuleExact:
		return "exact"
	case RuleBuiltin:
		return "builtin"
	case RuleAlias:
		return "alias"
	case RuleUnknown:
		return "unknown"
	}
	return "none"
}

// Resolution is what a client's model name resolved to.
type Resolution struct {
	// ID is the name to send upstream: the catalog id, the alias target, or
	// the client's name unchanged (RuleUnknown).
	ID string
	// Model is the catalog entry of ID; nil when the catalog lacks it.
	Model *Model
	Rule  Rule
}

// Resolve resolves name, the raw content of a JSON string (escapes as they
// stand), against cat and then aliases (either may be nil). The exact-id
// path allocates nothing, and the built-in rules' answers are remembered
// per catalog, so a client name they resolve (Claude Code sends
// claude-opus-5-5 on every request) costs a map lookup after the first.
func Resolve(cat *Catalog, aliases *Aliases, name []byte) Resolution {
	if m := cat.lookupBytes(name); m != nil {
		return Resolution{ID: m.ID, Model: m, Rule: RuleExact}
	}
	if cat != nil && bytes.IndexByte(name, '\\') < 0 {
		if m := cat.builtinRaw(name); m != nil {
			return Resolution{ID: m.ID, Model: m, Rule: RuleBuiltin}
		}
		return resolveAlias(cat, aliases, string(name))
	}
	s, ok := unquote(name)
	if !ok {
		return Resolution{Rule: RuleNone}
	}
	return ResolveString(cat, aliases, s)
}

// ResolveString is [Resolve] for a decoded name.
func ResolveString(cat *Catalog, aliases *Aliases, name string) Resolution {
	if m := cat.Lookup(name); m != nil {
		return Resolution{ID: m.ID, Model: m, Rule: RuleExact}
	}
	if m := builtin(cat, name); m != nil {
		return Resolution{ID: m.ID, Model: m, Rule: RuleBuiltin}
	}
	return resolveAlias(cat, aliases, name)
}

// resolveAlias is the resolution of a name that is neither a catalog id nor
// resolved by the built-in rules.
func resolveAlias(cat *Catalog, aliases *Aliases, name string) Resolution {
	if to, ok := aliases.Lookup(name); ok {
		if m := cat.Lookup(to); m != nil {
			return Resolution{ID: m.ID, Model: m, Rule: RuleAlias}
		}
		if m := builtin(cat, to); m != nil {
			return Resolution{ID: m.ID, Model: m, Rule: RuleAlias}
		}
		return Resolution{ID: to, Rule: RuleAlias}
	}
	return Resolution{ID: name, Rule: RuleUnknown}
}

// unquote decodes the raw content of a JSON string.
func unquote(raw []byte) (string, bool) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw), true
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(append(append(q, '"'), raw...), '"')
	var s string
	return s, json.Unmarshal(q, &s) == nil
}

func builtin(cat *Catalog, name string) *Model {
	if cat == nil {
		return nil
	}
	for _, c := range Builtin(name) {
		if m := cat.Lookup(c); m != nil {
			return m
		}
	}
	return nil
}

// Builtin returns the catalog ids a client's model name may stand for, most
// likely first; a resolver takes the first one the catalog has. The rules
// cover the names clients ship with:
//
//   - a date or "-latest" suffix is dropped: OpenAI's dated snapshots
//     (gpt-4.1-2025-04-14 → gpt-4.1), Anthropic's (claude-sonnet-4-5-20250929,
//     claude-opus-4-1@20250805 as Vertex writes it, claude-3-5-haiku-latest);
//   - Anthropic's hyphenated versions become the Copilot API's dotted ones
//     (claude-opus-5-5 → claude-opus-5.5, claude-3-5-haiku → claude-3.5-haiku),
//     a ".0" minor is also tried without it (claude-opus-4-0 → claude-opus-4),
//     and the family and version may stand in either order
//     (claude-haiku-3.5 ↔ claude-3.5-haiku);
//   - an upper-case name is tried in lower case.
func Builtin(name string) []string {
	var out []string
	add := func(s string) {
		if s != "" && s != name && !contains(out, s) {
			out = append(out, s)
		}
	}
	n := strings.ToLower(name)
	add(n)
	base := stripSuffix(n)
	add(base)
	if strings.HasPrefix(base, "claude-") {
		parts := strings.Split(base, "-")
		dotted := joinVersions(parts)
		add(strings.Join(dotted, "-"))
		if trimmed, ok := dropZeroMinor(dotted); ok {
			add(strings.Join(trimmed, "-"))
		}
		if swapped, ok := swapFamily(dotted); ok {
			add(strings.Join(swapped, "-"))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// stripSuffix drops one trailing "-latest", "-YYYYMMDD", "@YYYYMMDD" or
// "-YYYY-MM-DD".
func stripSuffix(n string) string {
	if s, ok := strings.CutSuffix(n, "-latest"); ok {
		return s
	}
	if len(n) > 9 && (n[len(n)-9] == '-' || n[len(n)-9] == '@') && isDate8(n[len(n)-8:]) {
		return n[:len(n)-9]
	}
	if len(n) > 11 && n[len(n)-11] == '-' && isDashedDate(n[len(n)-10:]) {
		return n[:len(n)-11]
	}
	return n
}

func isDate8(s string) bool {
	return allDigits(s) && (strings.HasPrefix(s, "19") || strings.HasPrefix(s, "20"))
}

func isDashedDate(s string) bool {
	return len(s) == 10 && s[4] == '-' && s[7] == '-' && isDate8(s[:4]+s[5:7]+s[8:])
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isVersionPart reports whether a name segment is a short version number
// (one or two digits; dates are longer).
func isVersionPart(s string) bool { return len(s) <= 2 && allDigits(s) }

// joinVersions joins two consecutive short numbers into one dotted version:
// [claude opus 4 1] → [claude opus 4.1].
func joinVersions(parts []string) []string {
	out := make([]string, 0, len(parts))
	for i := 0; i < len(parts); i++ {
		if i+1 < len(parts) && isVersionPart(parts[i]) && isVersionPart(parts[i+1]) {
			out = append(out, parts[i]+"."+parts[i+1])
			i++
			continue
		}
		out = append(out, parts[i])
	}
	return out
}

func dropZeroMinor(parts []string) ([]string, bool) {
	out := make([]string, len(parts))
	changed := false
	for i, p := range parts {
		if v, ok := strings.CutSuffix(p, ".0"); ok && isVersionPart(v) {
			p, changed = v, true
		}
		out[i] = p
	}
	return out, changed
}

// swapFamily turns [claude 3.5 haiku] into [claude haiku 3.5] and back.
func swapFamily(parts []string) ([]string, bool) {
	if len(parts) != 3 {
		return nil, false
	}
	isVer := func(s string) bool {
		a, b, dotted := strings.Cut(s, ".")
		return isVersionPart(a) && (!dotted || isVersionPart(b))
	}
	if isVer(parts[1]) == isVer(parts[2]) {
		return nil, false
	}
	return []string{parts[0], parts[2], parts[1]}, true
}
