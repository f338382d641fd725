package login

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "github-token")
	tok := secret.New("gho_first")

	if err := CheckWritable(path, false); err != nil {
		t.Fatalf("CheckWritable(new) = %v; want nil", err)
	}
	if err := WriteFile(path, tok, false); err != nil {
		t.Fatalf("WriteFile(new) = %v", err)
	}
	assertFile(t, path, "gho_first\n")

	if err := CheckWritable(path, false); !errors.Is(err, ErrExists) {
		t.Errorf("CheckWritable(existing) = %v; want ErrExists", err)
	}
	if err := WriteFile(path, secret.New("gho_second"), false); !errors.Is(err, ErrExists) {
		t.Errorf("WriteFile(existing, no force) = %v; want ErrExists", err)
	}
	assertFile(t, path, "gho_first\n")

	// Overwriting also tightens a file that had been made readable.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, secret.New("gho_second"), true); err != nil {
		t.Fatalf("WriteFile(existing, force) = %v", err)
	}
	assertFile(t, path, "gho_second\n")

	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries; want only the token file (no temporary left)", len(entries))
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s holds %q, %v; want %q", path, b, err, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %v, %v; want 0600", path, fi.Mode().Perm(), err)
	}
}
