// Package credfile reads a credential (the GitHub token) from a file and
// notices when its content changes, by polling on an injected clock and on
// demand (SIGHUP). Polling, unlike inotify, works the same on every
// platform and through the symlink swaps of Kubernetes secret volumes.
package credfile

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/filepoll"
	"github.com/copilot-broker/copilot-broker/internal/regfile"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// MaxSize bounds the file: a token is well under 1 KiB, so anything much
// larger is the wrong file.
const MaxSize = 64 << 10

// ErrEmpty is returned for a file that holds no credential.
var ErrEmpty = errors.New("credential file is empty")

// Read returns the file's content with surrounding white space removed. The
// file must be a regular file (a FIFO, device or socket is refused without
// blocking). Its errors never quote the content.
func Read(path string) (secret.Secret, error) {
	f, err := regfile.Open(path)
	if err != nil {
		return secret.Secret{}, fmt.Errorf("credential file: %w", err)
	}
	defer f.Close()
	return readOpen(f)
}

// readOpen reads an opened credential file.
func readOpen(f *os.File) (secret.Secret, error) {
	b, err := regfile.ReadAll(f, MaxSize)
	if err != nil {
		return secret.Secret{}, fmt.Errorf("credential file: %w", err)
	}
	path := f.Name()
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return secret.Secret{}, fmt.Errorf("%s: %w", path, ErrEmpty)
	}
	return secret.New(string(b)), nil
}

// Config configures a [Watcher].
type Config struct {
	// Path is the file to watch. Required.
	Path string
	// Interval is the polling period (default 5 s).
	Interval time.Duration
	// Clock drives polling (nil means the real clock).
	Clock clock.Clock
	// Logger receives reload events, never the credential (nil discards).
	Logger *slog.Logger
	// OnChange is called from [Watcher.Run]'s goroutine with the file's
	// credential when its content changed, and with changed false when a
	// [Watcher.Reload] found the same content, so the caller may re-present
	// an unchanged credential on an operator's request. Required.
	OnChange func(tok secret.Secret, changed bool)
}

// Watcher polls one credential file. Create it with [New], run it with
// [Watcher.Run]; [Watcher.Reload] may be called from any goroutine.
type Watcher struct {
	cfg  Config
	poll *filepoll.Poller
	log  *slog.Logger

	digest [sha256.Size]byte // of the credential last reported; owned by Run after New
	failed string            // the last read error warned about, until a read succeeds
}

// New reads the file once and returns a Watcher that reports later changes,
// and the credential read now.
func New(cfg Config) (*Watcher, secret.Secret, error) {
	if cfg.Path == "" || cfg.OnChange == nil {
		return nil, secret.Secret{}, errors.New("credfile: Config.Path and Config.OnChange are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	w := &Watcher{cfg: cfg, poll: filepoll.New(cfg.Clock, cfg.Interval), log: cfg.Logger}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	tok, err := Read(cfg.Path)
	if err != nil {
		return nil, secret.Secret{}, err
	}
	w.digest = sha256.Sum256([]byte(tok.Reveal()))
	return w, tok, nil
}

// Reload asks Run to re-read the file now, even if it looks unchanged.
func (w *Watcher) Reload() { w.poll.Reload() }

// Run polls until ctx ends. It reads the file every time rather than
// trusting size and modification time: a token of the same length written
// twice within the file system's timestamp granularity would go unseen, and
// reading a file of at most MaxSize every few seconds costs nothing.
func (w *Watcher) Run(ctx context.Context) { w.poll.Run(ctx, w.check) }

func (w *Watcher) check(forced bool) {
	tok, err := Read(w.cfg.Path)
	if err != nil {
		// Once per distinct error, not on every poll.
		if msg := err.Error(); msg != w.failed {
			w.failed = msg
			w.log.Warn("credential file unreadable; keeping the current credential", "path", w.cfg.Path, "error", err)
		}
		return
	}
	w.failed = ""
	d := sha256.Sum256([]byte(tok.Reveal()))
	changed := d != w.digest
	if !changed && !forced {
		return
	}
	w.digest = d
	w.log.Info("credential file re-read", "path", w.cfg.Path, "changed", changed, "fingerprint", tok.Fingerprint())
	w.cfg.OnChange(tok, changed)
}
