package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/filepoll"
)

// DefaultProfilePoll is how often a [Watcher] reads its file by default:
// often enough that an edit reaches every proxy within a second or two.
const DefaultProfilePoll = 500 * time.Millisecond

// WatchConfig configures a [Watcher].
type WatchConfig struct {
	// Path is the profile file. Required.
	Path string
	// Base gives the values of keys the file leaves out (the built-in
	// default, with the broker's own flags applied).
	Base Profile
	// Holder receives every valid profile read. Required.
	Holder *Holder
	// Interval is the polling period (default [DefaultProfilePoll]).
	Interval time.Duration
	// Clock drives polling (nil means the real clock).
	Clock clock.Clock
	// Logger receives reloads and refusals (nil discards).
	Logger *slog.Logger
	// OnLoad, when set, is told the outcome of every read that found new
	// content (or was forced), after the Holder has it: nil for a profile
	// taken, the reason for one refused. For metrics.
	OnLoad func(err error)
}

// Watcher reads an upstream profile file into a [Holder] when its content
// changes (polled, so it follows Kubernetes' symlink swaps too) and on
// [Watcher.Reload] (SIGHUP). A file that is unreadable or invalid leaves
// the held profile as it is, with a log line naming the file and why.
type Watcher struct {
	cfg    WatchConfig
	poll   *filepoll.Poller
	log    *slog.Logger
	digest [sha256.Size]byte // of the content last read; owned by Run after NewWatcher
}

// ReadProfileFile reads and parses one profile file over base.
func ReadProfileFile(path string, base Profile) (Profile, [sha256.Size]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return Profile{}, [sha256.Size]byte{}, fmt.Errorf("upstream profile: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxProfileSize+1))
	if err != nil {
		return Profile{}, [sha256.Size]byte{}, fmt.Errorf("upstream profile %s: %w", path, err)
	}
	d := sha256.Sum256(b)
	p, err := ParseProfile(b, base)
	if err != nil {
		return Profile{}, d, fmt.Errorf("upstream profile %s: %w", path, err)
	}
	return p, d, nil
}

// NewWatcher reads the file once into cfg.Holder; a broker must not start
// on a bad profile, so that error is returned.
func NewWatcher(cfg WatchConfig) (*Watcher, error) {
	if cfg.Path == "" || cfg.Holder == nil {
		return nil, errors.New("identity: WatchConfig.Path and Holder are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultProfilePoll
	}
	w := &Watcher{cfg: cfg, poll: filepoll.New(cfg.Clock, cfg.Interval), log: cfg.Logger}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	p, d, err := ReadProfileFile(cfg.Path, cfg.Base)
	if err != nil {
		if cfg.OnLoad != nil {
			cfg.OnLoad(err)
		}
		return nil, err
	}
	w.digest = d
	cfg.Holder.Set(p, cfg.Path)
	if cfg.OnLoad != nil {
		cfg.OnLoad(nil)
	}
	w.log.Info("upstream profile loaded", profileAttrs(cfg.Holder.Get())...)
	return w, nil
}

// Reload asks Run to re-read the file now, even when it looks unchanged.
func (w *Watcher) Reload() { w.poll.Reload() }

// Run polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) { w.poll.Run(ctx, w.check) }

func (w *Watcher) check(forced bool) {
	p, d, err := ReadProfileFile(w.cfg.Path, w.cfg.Base)
	if d == w.digest && !forced {
		return // same content (or the same unreadable state): said already
	}
	w.digest = d
	if err != nil {
		cur := w.cfg.Holder.Get()
		w.log.Error("upstream profile refused; keeping the current profile", "path", w.cfg.Path,
			"error", err, "revision", cur.Revision)
	} else if w.cfg.Holder.Set(p, w.cfg.Path) {
		w.log.Info("upstream profile changed", profileAttrs(w.cfg.Holder.Get())...)
	}
	if w.cfg.OnLoad != nil {
		w.cfg.OnLoad(err)
	}
}

// profileAttrs are the log attributes naming a profile.
func profileAttrs(c *Current) []any {
	e := c.Profile.Editor
	return []any{"path", c.Source, "revision", c.Revision, "editor_version", e.Version,
		"editor_plugin_version", e.PluginVersion, "user_agent", e.UserAgent, "api_version", e.APIVersion,
		"exchange_api_version", e.ExchangeAPIVersion, "extra_headers", len(c.Profile.Headers)}
}
