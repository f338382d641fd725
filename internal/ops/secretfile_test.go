package ops

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

func TestWarnSecretFiles(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		mode fs.FileMode
		warn bool
	}{
		{0o600, false}, {0o400, false}, {0o640, false}, {0o440, false},
		{0o644, true}, {0o604, true}, {0o660, true}, {0o666, true},
	} {
		p := filepath.Join(dir, "keys")
		if err := os.WriteFile(p, []byte("a:b\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tt.mode); err != nil {
			t.Fatal(err)
		}
		var buf testutil.SyncBuffer
		WarnSecretFiles(slogText(&buf), p, "")
		if got := strings.Contains(buf.String(), "secret file permissions"); got != tt.warn {
			t.Errorf("mode %#o: warned %v; want %v (log %q)", tt.mode, got, tt.warn, buf.String())
		}
	}
}

func slogText(w *testutil.SyncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
