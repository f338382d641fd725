// Package keys loads named API keys from a file and checks presented keys in
// constant time. The broker (broker keys) and the proxy (client API keys) use
// the same file format: one NAME:SECRET a line, '#' comments and blank lines
// ignored.
package keys

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// MinSecretLen is the shortest secret accepted; shorter ones are too easy to
// guess.
const MinSecretLen = 16

// ErrNoKeys is returned by [Parse] for a file with no keys in it.
var ErrNoKeys = errors.New("keys: no keys defined")

// LineError reports a malformed line by number. It never quotes the line,
// which may hold a secret.
type LineError struct {
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("keys: line %d: %s", e.Line, e.Reason) }

// Set is an immutable set of named keys, safe for concurrent use.
type Set struct {
	names   []string
	digests [][sha256.Size]byte
}

// Load reads a key file.
func Load(path string) (*Set, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Parse reads keys in the NAME:SECRET format. Names are unique and made of
// letters, digits, '-', '_' and '.'; secrets are at least [MinSecretLen]
// bytes, unique, and have no surrounding white space.
func Parse(r io.Reader) (*Set, error) {
	s := &Set{}
	seenNames := map[string]bool{}
	seenDigests := map[[sha256.Size]byte]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, key, ok := strings.Cut(line, ":")
		switch {
		case !ok:
			return nil, &LineError{n, "want NAME:SECRET"}
		case !validName(name):
			return nil, &LineError{n, "name must be non-empty letters, digits, '-', '_' or '.'"}
		case len(key) < MinSecretLen:
			return nil, &LineError{n, fmt.Sprintf("secret shorter than %d bytes", MinSecretLen)}
		case strings.TrimSpace(key) != key || strings.ContainsAny(key, " \t"):
			return nil, &LineError{n, "secret contains white space"}
		case seenNames[name]:
			return nil, &LineError{n, fmt.Sprintf("duplicate name %q", name)}
		}
		d := sha256.Sum256([]byte(key))
		if seenDigests[d] {
			return nil, &LineError{n, "secret already used by another name"}
		}
		seenNames[name], seenDigests[d] = true, true
		s.names = append(s.names, name)
		s.digests = append(s.digests, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keys: read: %w", err)
	}
	if len(s.names) == 0 {
		return nil, ErrNoKeys
	}
	return s, nil
}

func validName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		ok := r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// Len returns the number of keys.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.names)
}

// Lookup returns the name of the key equal to presented. It compares the
// SHA-256 digests of every key in constant time, so neither the match nor its
// position leaks through timing.
func (s *Set) Lookup(presented secret.Secret) (name string, ok bool) {
	if s == nil || presented.IsZero() {
		return "", false
	}
	d := sha256.Sum256([]byte(presented.Reveal()))
	found := -1
	for i := range s.digests {
		if subtle.ConstantTimeCompare(d[:], s.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return s.names[found], true
}

// FromBearer extracts the credential of an "Authorization: Bearer X" header
// value; the scheme is case-insensitive.
func FromBearer(header string) (secret.Secret, bool) {
	scheme, cred, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return secret.Secret{}, false
	}
	cred = strings.TrimSpace(cred)
	if cred == "" {
		return secret.Secret{}, false
	}
	return secret.New(cred), true
}

// Generate returns a new random key file line's secret: 32 bytes of
// randomness, hex encoded.
func Generate(rand io.Reader) (secret.Secret, error) {
	var b [32]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return secret.Secret{}, fmt.Errorf("keys: generate: %w", err)
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "%x", b)
	return secret.New(out.String()), nil
}
