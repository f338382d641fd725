package keys

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

const (
	keyA = "aaaaaaaaaaaaaaaaaaaaaaaaa1"
	keyB = "bbbbbbbbbbbbbbbbbbbbbbbbb2"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantLine int // 0: no LineError expected
		wantErr  error
		wantLen  int
	}{
		{"two keys with comments", "# team keys\n\nproxy-1:" + keyA + "\n  ops.admin:" + keyB + "  \n", 0, nil, 2},
		{"empty file", "# nothing\n\n", 0, ErrNoKeys, 0},
		{"no colon", "proxy-1:" + keyA + "\n" + keyB + "\n", 2, nil, 0},
		{"short secret", "p:short\n", 1, nil, 0},
		{"bad name", "a b:" + keyA + "\n", 1, nil, 0},
		{"empty name", ":" + keyA + "\n", 1, nil, 0},
		{"duplicate name", "p:" + keyA + "\np:" + keyB + "\n", 2, nil, 0},
		{"duplicate secret", "p:" + keyA + "\nq:" + keyA + "\n", 2, nil, 0},
		{"inner space", "p:" + keyA + " x\n", 1, nil, 0},
		{"accounts", "p:" + keyA + ":alice,bob\nq:" + keyB + ":*\n", 0, nil, 2},
		{"empty accounts", "p:" + keyA + ":\n", 1, nil, 0},
		{"empty account in list", "p:" + keyA + ":alice,,bob\n", 1, nil, 0},
		{"star in list", "p:" + keyA + ":alice,*\n", 1, nil, 0},
		{"duplicate account", "p:" + keyA + ":alice,alice\n", 1, nil, 0},
		{"hidden account name", "p:" + keyA + ":.alice\n", 1, nil, 0},
		{"fourth field not admin", "p:" + keyA + ":alice:bob\n", 1, nil, 0},
		{"admin", "ops:" + keyA + ":*:admin\np:" + keyB + ":a,b\n", 0, nil, 2},
		{"admin without accounts", "ops:" + keyA + "::admin\n", 1, nil, 0},
		{"fifth field", "ops:" + keyA + ":*:admin:x\n", 1, nil, 0},
		{"short secret before accounts", "p:short:alice\n", 1, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(strings.NewReader(tt.in))
			var le *LineError
			switch {
			case tt.wantLine != 0:
				if !errors.As(err, &le) || le.Line != tt.wantLine {
					t.Fatalf("Parse() error = %v; want LineError at line %d", err, tt.wantLine)
				}
				if strings.Contains(err.Error(), keyA) || strings.Contains(err.Error(), keyB) {
					t.Fatalf("Parse() error %q quotes a secret", err)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Parse() error = %v; want %v", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatalf("Parse() error = %v", err)
				}
				if s.Len() != tt.wantLen {
					t.Fatalf("Len() = %d; want %d", s.Len(), tt.wantLen)
				}
			}
		})
	}
}

func TestLookup(t *testing.T) {
	s, err := Parse(strings.NewReader("proxy-1:" + keyA + "\nops:" + keyB + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		presented string
		wantName  string
		wantOK    bool
	}{
		{keyA, "proxy-1", true},
		{keyB, "ops", true},
		{keyA + "x", "", false},
		{keyA[:len(keyA)-1], "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		name, ok := s.Lookup(secret.New(tt.presented))
		if name != tt.wantName || ok != tt.wantOK {
			t.Errorf("Lookup(%d bytes) = %q, %v; want %q, %v", len(tt.presented), name, ok, tt.wantName, tt.wantOK)
		}
	}
	var nilSet *Set
	if _, ok := nilSet.Lookup(secret.New(keyA)); ok {
		t.Error("nil Set Lookup() = ok; want not ok")
	}
}

func TestFromBearer(t *testing.T) {
	tests := []struct {
		header string
		want   string
		wantOK bool
	}{
		{"Bearer " + keyA, keyA, true},
		{"bearer " + keyA, keyA, true},
		{"Basic " + keyA, "", false},
		{"Bearer ", "", false},
		{keyA, "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := FromBearer(tt.header)
		if got.Reveal() != tt.want || ok != tt.wantOK {
			t.Errorf("FromBearer(%q) = %q, %v; want %q, %v", tt.header, got.Reveal(), ok, tt.want, tt.wantOK)
		}
	}
}

func TestLoadAndGenerate(t *testing.T) {
	k, err := Generate(rand.Reader)
	if err != nil || len(k.Reveal()) != 64 {
		t.Fatalf("Generate() = %d chars, %v; want 64, nil", len(k.Reveal()), err)
	}
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte("dev:"+k.Reveal()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load() error = %v", err)
	}
	if name, ok := s.Lookup(k); !ok || name != "dev" {
		t.Errorf("Lookup(generated) = %q, %v; want dev, true", name, ok)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Load(missing) error = nil; want error")
	}
	if _, err := Generate(bytes.NewReader(nil)); err == nil {
		t.Error("Generate(empty reader) error = nil; want error")
	}
}

func TestAccounts(t *testing.T) {
	s, err := Parse(strings.NewReader("all:" + keyA + "\nstar:" + keyB + ":*\npool:" + keyA + "3:carol,alice,bob\none:" + keyA + "4:alice\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		presented     string
		wantName      string
		wantSpecified bool
		wantAll       bool
		wantNames     []string
		wantString    string
		allows        map[string]bool
	}{
		{keyA, "all", false, false, nil, "", map[string]bool{"": true, "alice": true, "zed": true}},
		{keyB, "star", true, true, nil, "*", map[string]bool{"": true, "alice": true, "zed": true}},
		{keyA + "3", "pool", true, false, []string{"carol", "alice", "bob"}, "carol,alice,bob", map[string]bool{"": false, "alice": true, "bob": true, "carol": true, "zed": false}},
		{keyA + "4", "one", true, false, []string{"alice"}, "alice", map[string]bool{"": false, "alice": true, "bob": false}},
	}
	for _, tt := range tests {
		t.Run(tt.wantName, func(t *testing.T) {
			k, ok := s.LookupKey(secret.New(tt.presented))
			if !ok || k.Name != tt.wantName {
				t.Fatalf("LookupKey() = %q, %v; want %q, true", k.Name, ok, tt.wantName)
			}
			a := k.Accounts
			if a.Specified() != tt.wantSpecified || a.All() != tt.wantAll || a.String() != tt.wantString {
				t.Errorf("Specified, All, String = %v, %v, %q; want %v, %v, %q", a.Specified(), a.All(), a.String(), tt.wantSpecified, tt.wantAll, tt.wantString)
			}
			if got := a.Names(); strings.Join(got, ",") != strings.Join(tt.wantNames, ",") {
				t.Errorf("Names() = %v; want %v", got, tt.wantNames)
			}
			for acct, want := range tt.allows {
				if got := a.Allows(acct); got != want {
					t.Errorf("Allows(%q) = %v; want %v", acct, got, want)
				}
			}
		})
	}
	if got := s.Keys(); len(got) != 4 || got[2].Name != "pool" || got[2].Accounts.String() != "carol,alice,bob" {
		t.Errorf("Keys() = %+v", got)
	}
	names := s.Keys()[2].Accounts.Names()
	names[0] = "mallory"
	if s.Keys()[2].Accounts.Allows("mallory") {
		t.Error("Names() returned the set's own slice")
	}
}

func TestValidAccountName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"alice", true},
		{"ci-pool_2.x", true},
		{"A1", true},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"..data", false},
		{"a/b", false},
		{"a b", false},
		{"a:b", false},
		{"a,b", false},
		{"*", false},
		{strings.Repeat("a", MaxAccountNameLen), true},
		{strings.Repeat("a", MaxAccountNameLen+1), false},
	}
	for _, tt := range tests {
		if got := ValidAccountName(tt.name); got != tt.want {
			t.Errorf("ValidAccountName(%q) = %v; want %v", tt.name, got, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"p:" + keyA + "\n",
		"p:" + keyA + ":alice,bob\nq:" + keyB + ":*\n",
		"# c\n\np:" + keyA + ":\n",
		"p:" + keyA + ":a,,b\n",
		"p:" + keyA + ":a:b\n",
		"ops:" + keyA + ":*:admin\n",
		"ops:" + keyA + ":a,b:admin\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(strings.NewReader(in))
		if err != nil {
			if s != nil {
				t.Fatal("Parse() returned a set with an error")
			}
			return
		}
		for _, k := range s.Keys() {
			if k.Admin && !strings.Contains(in, ":"+AdminField) {
				t.Fatalf("key %q: admin without the field", k.Name)
			}
			if !validName(k.Name) {
				t.Fatalf("accepted key name %q", k.Name)
			}
			a := k.Accounts
			if a.All() && len(a.Names()) > 0 {
				t.Fatalf("key %q: '*' with names", k.Name)
			}
			for _, n := range a.Names() {
				if !ValidAccountName(n) || !a.Allows(n) {
					t.Fatalf("key %q: bad account %q", k.Name, n)
				}
			}
			if a.Specified() {
				again, err := ParseAccounts(a.String())
				if err != nil || again.String() != a.String() {
					t.Fatalf("key %q: accounts %q do not round-trip: %v", k.Name, a.String(), err)
				}
			}
		}
	})
}
