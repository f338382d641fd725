package credfile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/filepoll"
	"github.com/copilot-broker/copilot-broker/internal/regfile"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// EventKind is what happened to one file of a watched directory.
type EventKind int

// Event kinds of [DirWatcher].
const (
	// Added: a new file (a new account).
	Added EventKind = iota + 1
	// Changed: the file's content changed.
	Changed
	// Removed: the file is gone.
	Removed
	// Unchanged: a [DirWatcher.Reload] found the same content; the caller
	// may re-present the credential on the operator's request.
	Unchanged
)

func (k EventKind) String() string {
	switch k {
	case Added:
		return "added"
	case Changed:
		return "changed"
	case Removed:
		return "removed"
	case Unchanged:
		return "unchanged"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one file's change; Token is zero for Removed.
type Event struct {
	Name  string
	Kind  EventKind
	Token secret.Secret
}

// DirConfig configures a [DirWatcher].
type DirConfig struct {
	// Dir holds one credential file per name. Required.
	Dir string
	// ValidName reports whether a file name may name an entry; other files
	// are ignored with a warning, as are hidden files (a leading '.': editor
	// and atomic-write temporaries, Kubernetes' ..data links). Required.
	ValidName func(string) bool
	// Interval is the polling period (default 5 s).
	Interval time.Duration
	// Clock drives polling (nil means the real clock).
	Clock clock.Clock
	// Logger receives events, never a credential (nil discards).
	Logger *slog.Logger
	// OnChange is called from [DirWatcher.Run]'s goroutine for each change,
	// removals last. Required.
	OnChange func(Event)
}

// DirWatcher polls a directory of credential files, each read like [Read].
// A file that cannot be read keeps its last credential (a write in
// progress, a permission slip); only a file that is gone is Removed.
//
// Only regular files inside the directory count: a symlink is followed
// only to a file inside the directory (as in Kubernetes' ..data layout),
// and a file with other hard links is ignored, so that no link serves
// another account's seat, or any readable file, as a token. Two files with
// the same credential are one seat under two names: the second (the one
// not already serving it, else the later name) is refused.
type DirWatcher struct {
	cfg  DirConfig
	poll *filepoll.Poller
	log  *slog.Logger

	digests map[string][sha256.Size]byte // owned by Run after NewDir
	warned  map[string]string            // name → the warning last logged about it
}

// NewDir reads the directory once and returns a watcher of later changes
// and the credentials read now, by name. The directory must exist; it may
// be empty.
func NewDir(cfg DirConfig) (*DirWatcher, map[string]secret.Secret, error) {
	if cfg.Dir == "" || cfg.OnChange == nil || cfg.ValidName == nil {
		return nil, nil, errors.New("credfile: DirConfig.Dir, ValidName and OnChange are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	w := &DirWatcher{cfg: cfg, poll: filepoll.New(cfg.Clock, cfg.Interval), log: cfg.Logger,
		digests: map[string][sha256.Size]byte{}, warned: map[string]string{}}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	toks, _, err := w.scan()
	if err != nil {
		return nil, nil, err
	}
	for name, tok := range toks {
		w.digests[name] = sha256.Sum256([]byte(tok.Reveal()))
	}
	return w, toks, nil
}

// scan reads every valid file of the directory. Files that cannot be read
// are missing from toks but listed in kept, so they are not taken for
// removed; so is a known account whose file now repeats another's
// credential.
func (w *DirWatcher) scan() (toks map[string]secret.Secret, kept map[string]bool, err error) {
	root, err := filepath.EvalSymlinks(w.cfg.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts directory: %w", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts directory: %w", err)
	}
	toks, kept = map[string]secret.Secret{}, map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if !w.cfg.ValidName(name) {
			w.warnOnce(name, "ignoring a file whose name is not a valid account name")
			continue
		}
		tok, skip, err := w.readEntry(root, name)
		switch {
		case skip != "":
			w.warnOnce(name, skip)
		case err != nil:
			w.warnOnce(name, "account file unreadable; keeping its current credential", "error", err)
			kept[name] = true
		default:
			toks[name] = tok
		}
	}
	w.refuseDuplicates(toks, kept)
	for name := range toks {
		delete(w.warned, name) // read and taken: warn again if it breaks
	}
	return toks, kept, nil
}

// readEntry reads the file name of the directory root (symlinks resolved).
// skip says why the entry is no account file at all; err is a read error.
func (w *DirWatcher) readEntry(root, name string) (tok secret.Secret, skip string, err error) {
	real, err := filepath.EvalSymlinks(filepath.Join(root, name))
	if err != nil {
		return tok, "ignoring an entry that is not a regular file", nil
	}
	if rel, err := filepath.Rel(root, real); err != nil || !filepath.IsLocal(rel) {
		return tok, "ignoring a link that leads outside the accounts directory", nil
	}
	f, err := regfile.Open(real)
	if errors.Is(err, regfile.ErrNotRegular) {
		return tok, "ignoring an entry that is not a regular file", nil
	}
	if err != nil {
		return tok, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return tok, "", err
	}
	if regfile.Links(fi) > 1 {
		return tok, "ignoring a file with other hard links (it may be a file from elsewhere)", nil
	}
	tok, err = readOpen(f)
	return tok, "", err
}

// refuseDuplicates takes out of toks every file whose credential another
// name holds: the name that already serves it, else the first name in
// order, keeps it. A known account so refused keeps its current credential.
func (w *DirWatcher) refuseDuplicates(toks map[string]secret.Secret, kept map[string]bool) {
	owner := map[[sha256.Size]byte]string{}
	names := make([]string, 0, len(toks))
	for name := range toks {
		names = append(names, name)
	}
	// Known holders first, then by name.
	slices.SortFunc(names, func(a, b string) int {
		da, ka := w.digests[a]
		db, kb := w.digests[b]
		ha := ka && da == sha256.Sum256([]byte(toks[a].Reveal()))
		hb := kb && db == sha256.Sum256([]byte(toks[b].Reveal()))
		if ha != hb {
			if ha {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		d := sha256.Sum256([]byte(toks[name].Reveal()))
		first, dup := owner[d]
		if !dup {
			owner[d] = name
			continue
		}
		delete(toks, name)
		if _, known := w.digests[name]; known {
			kept[name] = true
		}
		w.warnOnce(name, "account file refused: it holds the same credential as another account (one seat under two names)", "same_as", first)
	}
}

// warnOnce logs msg about the file name unless it was the last warning
// logged about it; a successful read clears it.
func (w *DirWatcher) warnOnce(name, msg string, args ...any) {
	if w.warned[name] == msg {
		return
	}
	w.warned[name] = msg
	w.log.Warn(msg, append([]any{"dir", w.cfg.Dir, "file", name}, args...)...)
}

// Reload asks Run to re-read the directory now; unchanged files are then
// reported as Unchanged.
func (w *DirWatcher) Reload() { w.poll.Reload() }

// Run polls until ctx ends.
func (w *DirWatcher) Run(ctx context.Context) { w.poll.Run(ctx, w.check) }

func (w *DirWatcher) check(forced bool) {
	toks, kept, err := w.scan()
	if err != nil {
		w.log.Warn("accounts directory unreadable; keeping the current accounts", "dir", w.cfg.Dir, "error", err)
		return
	}
	for name, tok := range toks {
		d := sha256.Sum256([]byte(tok.Reveal()))
		old, known := w.digests[name]
		kind := Added
		switch {
		case !known:
		case old != d:
			kind = Changed
		case forced:
			kind = Unchanged
		default:
			continue
		}
		w.digests[name] = d
		w.log.Info("account file read", "account", name, "event", kind.String(), "fingerprint", tok.Fingerprint())
		w.cfg.OnChange(Event{Name: name, Kind: kind, Token: tok})
	}
	for name := range w.digests {
		if _, ok := toks[name]; ok || kept[name] {
			continue
		}
		delete(w.digests, name)
		w.log.Info("account file removed", "account", name)
		w.cfg.OnChange(Event{Name: name, Kind: Removed})
	}
}
