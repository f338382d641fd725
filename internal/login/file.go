package login

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// ErrExists is returned by [WriteFile] when the file exists and overwriting
// was not asked for.
var ErrExists = errors.New("file exists")

// CheckWritable returns [ErrExists] (wrapped) when path exists and force is
// false, so a login can be refused before the user goes through it.
func CheckWritable(path string, force bool) error {
	if force {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s: %w (pass --force to replace it)", path, ErrExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// WriteFile stores tok in path with mode 0600, atomically: readers see the
// old file or the new one, never a partial one. Missing directories are made
// with mode 0700. Without force an existing file is left alone and
// [ErrExists] returned; the check and the write are one step (a hard link),
// so a file created meanwhile is not overwritten either.
func WriteFile(path string, tok secret.Secret, force bool) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	defer func() {
		_ = os.Remove(tmp.Name()) // gone already after a rename
	}()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("token file: %w", err)
	}
	if _, err := tmp.WriteString(tok.Reveal() + "\n"); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("token file: writing: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("token file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if force {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w (pass --force to replace it)", path, ErrExists)
		}
	}
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	syncDir(dir)
	return nil
}

// syncDir makes the new directory entry durable; failure only weakens that
// guarantee, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
