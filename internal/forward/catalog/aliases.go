package catalog

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/filepoll"
	"github.com/copilot-broker/copilot-broker/internal/regfile"
)

// Limits of an alias file.
const (
	// MaxAliasFileBytes bounds the alias file read.
	MaxAliasFileBytes = 1 << 20
	// MaxAliases bounds the aliases kept; later lines are reported.
	MaxAliases = 10000
)

// Alias is one "from: to" line of the alias file.
type Alias struct {
	From, To string
	Line     int
}

// Aliases are the operator's model aliases. A nil *Aliases has none. They
// are immutable once parsed.
type Aliases struct {
	list []Alias // file order
	to   map[string]string
}

// Lookup returns the target of name.
func (a *Aliases) Lookup(name string) (string, bool) {
	if a == nil {
		return "", false
	}
	to, ok := a.to[name]
	return to, ok
}

// List returns the aliases in file order.
func (a *Aliases) List() []Alias {
	if a == nil {
		return nil
	}
	return a.list
}

// Len returns the number of aliases.
func (a *Aliases) Len() int {
	if a == nil {
		return 0
	}
	return len(a.list)
}

// LineError is a line of the alias file that was ignored.
type LineError struct {
	Line   int
	Reason string
}

func (e LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// ParseAliases reads an alias file: one "from: to" a line, where from is a
// name clients send and to the model to send instead; blank lines and text
// after "#" are ignored. A name is a run of printable characters without
// spaces, ":" or "#". Lines that break these rules, repeat an earlier from,
// or map a name to itself are reported in the returned errors and skipped;
// the rest still count. Only a read failure is an error.
func ParseAliases(r io.Reader) (*Aliases, []LineError, error) {
	a := &Aliases{to: map[string]string{}}
	var bad []LineError
	sc := bufio.NewScanner(io.LimitReader(r, MaxAliasFileBytes+1))
	sc.Buffer(make([]byte, 0, 4096), MaxAliasFileBytes+1)
	n, read := 0, 0
	for sc.Scan() {
		n++
		raw := sc.Bytes()
		read += len(raw) + 1
		if read > MaxAliasFileBytes+1 {
			return nil, nil, fmt.Errorf("alias file larger than %d bytes", MaxAliasFileBytes)
		}
		line := string(raw)
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		from, to, ok := strings.Cut(line, ":")
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		reason := ""
		switch {
		case !ok:
			reason = `want "from: to"`
		case from == "" || to == "":
			reason = `want "from: to" with both names`
		case !validName(from):
			reason = fmt.Sprintf("%q is not a model name (no spaces, colons or control characters, at most %d bytes)", from, MaxIDLen)
		case !validName(to):
			reason = fmt.Sprintf("%q is not a model name (no spaces, colons or control characters, at most %d bytes)", to, MaxIDLen)
		case from == to:
			reason = fmt.Sprintf("%q is an alias of itself", from)
		case a.to[from] != "":
			reason = fmt.Sprintf("%q is already an alias (of %q); the first line wins", from, a.to[from])
		case len(a.list) == MaxAliases:
			reason = fmt.Sprintf("more than %d aliases", MaxAliases)
		}
		if reason != "" {
			bad = append(bad, LineError{Line: n, Reason: reason})
			continue
		}
		a.to[from] = to
		a.list = append(a.list, Alias{From: from, To: to, Line: n})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, fmt.Errorf("alias file larger than %d bytes", MaxAliasFileBytes)
		}
		return nil, nil, err
	}
	return a, bad, nil
}

func validName(s string) bool {
	if len(s) > MaxIDLen {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == ':' || r == '#' || r == '\uFFFD' {
			return false
		}
	}
	return true
}

// AliasFileConfig configures an [AliasFile].
type AliasFileConfig struct {
	// Path is the alias file. Required.
	Path string
	// Poll is how often the file is checked for changes. Default 5 s.
	Poll time.Duration
	// Metrics receives the reloads; nil: none.
	Metrics *Metrics
	// Clock times the polls. Default real.
	Clock clock.Clock
	// Logger receives bad lines and reloads. Default: discard.
	Logger *slog.Logger
}

// AliasFile is an alias file kept current: [AliasFile.Run] re-reads it every
// Poll and takes it when its content changed. A reload that fails (the file is gone or unreadable)
// keeps the aliases held.
type AliasFile struct {
	cfg  AliasFileConfig
	log  *slog.Logger
	poll *filepoll.Poller
	cur  atomic.Pointer[Aliases]
	hash [sha256.Size]byte // of the content held
}

// OpenAliasFile reads the file once; an unreadable file is an error (bad
// lines are only logged).
func OpenAliasFile(cfg AliasFileConfig) (*AliasFile, error) {
	if cfg.Path == "" {
		return nil, errors.New("alias file: no path")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	f := &AliasFile{cfg: cfg, poll: filepoll.New(cfg.Clock, cfg.Poll), log: cfg.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if err := f.load(true); err != nil {
		return nil, err
	}
	return f, nil
}

// Current returns the aliases in force.
func (f *AliasFile) Current() *Aliases {
	if f == nil {
		return nil
	}
	return f.cur.Load()
}

// Run checks the file every Poll until ctx ends.
func (f *AliasFile) Run(ctx context.Context) {
	f.poll.Run(ctx, func(bool) {
		if err := f.load(false); err != nil {
			f.log.Warn("model alias file not reloaded; keeping the aliases held", "path", f.cfg.Path, "aliases", f.Current().Len(), "error", err)
			f.cfg.Metrics.aliasReload("error")
		}
	})
}

// load reads the file and takes it when its content changed (a small file
// read every few seconds: no modification time to trust or miss).
func (f *AliasFile) load(first bool) error {
	// A regular file only, opened without blocking: a FIFO at the path
	// would stop reloads, and shutdown, for good.
	data, err := regfile.Read(f.cfg.Path, MaxAliasFileBytes)
	if err != nil {
		return fmt.Errorf("model alias file: %w", err)
	}
	sum := sha256.Sum256(data)
	if !first && sum == f.hash {
		return nil
	}
	a, bad, err := ParseAliases(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("model alias file %s: %w", f.cfg.Path, err)
	}
	f.hash = sum
	for _, e := range bad {
		f.log.Warn("model alias file: line ignored", "path", f.cfg.Path, "line", e.Line, "error", e.Reason)
	}
	f.cur.Store(a)
	f.cfg.Metrics.aliasesLoaded(a.Len(), len(bad))
	if !first {
		f.cfg.Metrics.aliasReload("ok")
	}
	f.log.Info("model aliases loaded", "path", f.cfg.Path, "aliases", a.Len(), "bad_lines", len(bad))
	return nil
}
