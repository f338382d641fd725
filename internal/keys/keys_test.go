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
