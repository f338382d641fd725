// Package keys loads named API keys from a file and checks presented keys in
// constant time. The broker (broker keys) and the proxy (client API keys) use
// the same file format: one NAME:SECRET[:ACCOUNTS[:admin]] a line, '#'
// comments and blank lines ignored. The optional third field names the
// accounts the key is for: a comma-separated list of account names, or '*'
// for every account; what a key without it may use is the caller's choice
// (the broker: every account; the proxy: its default account). The optional
// fourth field, the word admin, marks a broker key that may manage the
// broker's client keys; a proxy's keys file has no use for it.
//
// [ParseModels] reads a managed key's model allow list, globs over model
// ids.
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

// MaxAccountNameLen is the longest account name accepted.
const MaxAccountNameLen = 64

// ValidAccountName reports whether name can name an account: 1 to
// [MaxAccountNameLen] letters, digits, '-', '_' or '.', not starting with
// '.'. Account names are also file names (the broker's accounts directory),
// so "." and ".." and hidden files are never accounts. The default account,
// "", is not a valid name: it cannot be listed in a key.
func ValidAccountName(name string) bool {
	return len(name) <= MaxAccountNameLen && validName(name) && name[0] != '.'
}

// Accounts is the set of accounts a key is for: unspecified (no third field),
// every account ('*'), or a list of names in the order written. The zero
// value is unspecified.
type Accounts struct {
	specified bool
	all       bool
	names     []string
}

// AllAccounts is the '*' set.
func AllAccounts() Accounts { return Accounts{specified: true, all: true} }

// AccountList is the set of the given names (not checked; [Parse] checks
// the names it reads).
func AccountList(names ...string) Accounts {
	return Accounts{specified: true, names: append([]string(nil), names...)}
}

// Specified reports whether the key line had a third field.
func (a Accounts) Specified() bool { return a.specified }

// All reports whether the key is for every account ('*').
func (a Accounts) All() bool { return a.all }

// Names returns the listed account names in the order written: nil when
// unspecified or '*'. The slice is a copy.
func (a Accounts) Names() []string {
	if len(a.names) == 0 {
		return nil
	}
	return append([]string(nil), a.names...)
}

// Allows reports whether the key may use account. Unspecified and '*' allow
// every account, the default account "" included; a list allows exactly its
// names.
func (a Accounts) Allows(account string) bool {
	if !a.specified || a.all {
		return true
	}
	for _, n := range a.names {
		if n == account {
			return true
		}
	}
	return false
}

// String returns the third field as written ("" when unspecified).
func (a Accounts) String() string {
	switch {
	case !a.specified:
		return ""
	case a.all:
		return "*"
	}
	return strings.Join(a.names, ",")
}

// ParseAccounts parses a key line's third field: '*' or a comma-separated
// list of distinct valid account names.
func ParseAccounts(field string) (Accounts, error) {
	if field == "*" {
		return AllAccounts(), nil
	}
	if field == "" {
		return Accounts{}, errors.New("empty account list (leave out the third field, or write '*')")
	}
	parts := strings.Split(field, ",")
	seen := make(map[string]bool, len(parts))
	for _, n := range parts {
		switch {
		case n == "*":
			return Accounts{}, errors.New("'*' must stand alone")
		case !ValidAccountName(n):
			return Accounts{}, fmt.Errorf("account name %q must be 1-%d letters, digits, '-', '_' or '.', not starting with '.'", n, MaxAccountNameLen)
		case seen[n]:
			return Accounts{}, fmt.Errorf("account %q listed twice", n)
		}
		seen[n] = true
	}
	return Accounts{specified: true, names: parts}, nil
}

// Key is a key's name, the accounts it is for and whether it is an admin
// key; never its secret.
type Key struct {
	Name     string
	Accounts Accounts
	// Admin is the fourth field: the key may manage the broker's keys.
	Admin bool
}

// AdminField is the fourth field's only accepted value.
const AdminField = "admin"

// Set is an immutable set of named keys, safe for concurrent use.
type Set struct {
	keys    []Key
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

// Parse reads keys in the NAME:SECRET[:ACCOUNTS[:admin]] format. Names are
// unique and made of letters, digits, '-', '_' and '.'; secrets are at least
// [MinSecretLen] bytes, unique, and contain no white space and no ':'
// (a ':' starts the third field); ACCOUNTS is as [ParseAccounts] reads it;
// the fourth field, when present, is the word [AdminField].
func Parse(r io.Reader) (*Set, error) {
	entries, err := ParseEntries(r)
	if err != nil {
		return nil, err
	}
	s := &Set{keys: make([]Key, len(entries)), digests: make([][sha256.Size]byte, len(entries))}
	for i, e := range entries {
		s.keys[i], s.digests[i] = e.Key, sha256.Sum256([]byte(e.Secret.Reveal()))
	}
	return s, nil
}

// Entry is one line of a keys file, secret included: for `broker keys
// import`, which hands the secrets to the broker.
type Entry struct {
	Key
	Secret secret.Secret
}

// ParseEntries reads a keys file as [Parse] does and returns its lines,
// secrets included, in file order.
func ParseEntries(r io.Reader) ([]Entry, error) {
	var out []Entry
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
		key, acctField, hasAccounts := strings.Cut(key, ":")
		acctField, flag, hasFlag := strings.Cut(acctField, ":")
		switch {
		case !ok:
			return nil, &LineError{n, "want NAME:SECRET or NAME:SECRET:ACCOUNTS"}
		case !validName(name):
			return nil, &LineError{n, "name must be non-empty letters, digits, '-', '_' or '.'"}
		case len(key) < MinSecretLen:
			return nil, &LineError{n, fmt.Sprintf("secret shorter than %d bytes", MinSecretLen)}
		case strings.TrimSpace(key) != key || strings.ContainsAny(key, " \t"):
			return nil, &LineError{n, "secret contains white space"}
		case seenNames[name]:
			return nil, &LineError{n, fmt.Sprintf("duplicate name %q", name)}
		case hasFlag && flag != AdminField:
			return nil, &LineError{n, "the fourth field can only be the word " + AdminField}
		}
		var accounts Accounts
		if hasAccounts {
			var err error
			if accounts, err = ParseAccounts(acctField); err != nil {
				return nil, &LineError{n, err.Error()}
			}
		}
		d := sha256.Sum256([]byte(key))
		if seenDigests[d] {
			return nil, &LineError{n, "secret already used by another name"}
		}
		seenNames[name], seenDigests[d] = true, true
		out = append(out, Entry{Key: Key{Name: name, Accounts: accounts, Admin: hasFlag}, Secret: secret.New(key)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keys: read: %w", err)
	}
	if len(out) == 0 {
		return nil, ErrNoKeys
	}
	return out, nil
}

// ValidName reports whether name can name a key: letters, digits, '-', '_'
// and '.', at least one.
func ValidName(name string) bool { return validName(name) }

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
	return len(s.keys)
}

// Keys returns every key's name and accounts in file order.
func (s *Set) Keys() []Key {
	if s == nil {
		return nil
	}
	return append([]Key(nil), s.keys...)
}

// Lookup returns the name of the key equal to presented. It compares the
// SHA-256 digests of every key in constant time, so neither the match nor its
// position leaks through timing.
func (s *Set) Lookup(presented secret.Secret) (name string, ok bool) {
	k, ok := s.LookupKey(presented)
	return k.Name, ok
}

// LookupKey is [Set.Lookup] returning the whole key: its name and accounts.
func (s *Set) LookupKey(presented secret.Secret) (Key, bool) {
	if s == nil || presented.IsZero() {
		return Key{}, false
	}
	d := sha256.Sum256([]byte(presented.Reveal()))
	found := -1
	for i := range s.digests {
		if subtle.ConstantTimeCompare(d[:], s.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Key{}, false
	}
	return s.keys[found], true
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

// CheckSecret reports why s cannot be a key's secret, as [Parse] would: too
// short, longer than 256 bytes, or holding white space or ':'. The error
// never quotes s.
func CheckSecret(s string) error {
	switch {
	case len(s) < MinSecretLen:
		return fmt.Errorf("secret shorter than %d bytes", MinSecretLen)
	case len(s) > 256:
		return errors.New("secret longer than 256 bytes")
	case strings.ContainsAny(s, " \t\r\n:"):
		return errors.New("secret contains white space or ':'")
	}
	return nil
}
