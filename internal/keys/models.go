package keys

import (
	"errors"
	"fmt"
	"strings"
)

// Bounds of a model allow list: it travels to every proxy with the key set.
const (
	MaxModelGlobs   = 64
	MaxModelGlobLen = 128
)

// Models is a key's model allow list: globs over resolved model ids, where
// '*' matches any run of characters (none included) and '?' any one. The
// zero value (no globs) allows every model. Immutable once made.
type Models struct {
	globs []string
}

// ParseModels reads a comma-separated list of globs ("gpt-*,claude-sonnet-*");
// "" is the empty list (every model). Globs are 1 to [MaxModelGlobLen]
// letters, digits, '-', '_', '.', ':', '/', '@', '*' or '?'; duplicates and
// more than [MaxModelGlobs] are refused.
func ParseModels(field string) (Models, error) {
	if field == "" {
		return Models{}, nil
	}
	parts := strings.Split(field, ",")
	return ModelList(parts...)
}

// ModelList checks globs as [ParseModels] does and returns them as a list.
func ModelList(globs ...string) (Models, error) {
	if len(globs) == 0 {
		return Models{}, nil
	}
	if len(globs) > MaxModelGlobs {
		return Models{}, fmt.Errorf("at most %d model globs", MaxModelGlobs)
	}
	seen := make(map[string]bool, len(globs))
	for _, g := range globs {
		if err := checkGlob(g); err != nil {
			return Models{}, err
		}
		if seen[g] {
			return Models{}, fmt.Errorf("model glob %q listed twice", g)
		}
		seen[g] = true
	}
	return Models{globs: append([]string(nil), globs...)}, nil
}

var errEmptyGlob = errors.New("empty model glob (leave the list out to allow every model)")

func checkGlob(g string) error {
	if g == "" {
		return errEmptyGlob
	}
	if len(g) > MaxModelGlobLen {
		return fmt.Errorf("model glob longer than %d characters", MaxModelGlobLen)
	}
	for _, r := range g {
		ok := r == '-' || r == '_' || r == '.' || r == ':' || r == '/' || r == '@' || r == '*' || r == '?' ||
			(r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("model glob %q: only letters, digits, '-', '_', '.', ':', '/', '@', '*' and '?'", g)
		}
	}
	return nil
}

// All reports whether every model is allowed (no globs).
func (m Models) All() bool { return len(m.globs) == 0 }

// Globs returns the globs in the order written (a copy; nil for every model).
func (m Models) Globs() []string {
	if len(m.globs) == 0 {
		return nil
	}
	return append([]string(nil), m.globs...)
}

// String returns the list as ParseModels reads it.
func (m Models) String() string { return strings.Join(m.globs, ",") }

// Allows reports whether the model id matches a glob (always, for the empty
// list). Matching is case-sensitive, as model ids are.
func (m Models) Allows(model string) bool {
	if len(m.globs) == 0 {
		return true
	}
	for _, g := range m.globs {
		if MatchGlob(g, model) {
			return true
		}
	}
	return false
}

// MatchGlob reports whether s matches glob, where '*' matches any run of
// bytes and '?' one byte. It runs in O(len(glob)·len(s)) at worst, without
// recursion: on a mismatch it resumes after the last '*', one byte further.
func MatchGlob(glob, s string) bool {
	gi, si := 0, 0
	star, mark := -1, 0 // position of the last '*' in glob, and where s resumed
	for si < len(s) {
		switch {
		case gi < len(glob) && (glob[gi] == '?' || glob[gi] == s[si]):
			gi++
			si++
		case gi < len(glob) && glob[gi] == '*':
			star, mark = gi, si
			gi++
		case star >= 0:
			mark++
			gi, si = star+1, mark
		default:
			return false
		}
	}
	for gi < len(glob) && glob[gi] == '*' {
		gi++
	}
	return gi == len(glob)
}
