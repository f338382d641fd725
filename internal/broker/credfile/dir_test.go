package credfile

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

func TestDirWatcher(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice", "gho_alice\n")
	write("bob", "gho_bob")
	write(".alice.tmp-123", "gho_partial") // atomic-write temporary: ignored
	write("bad name", "gho_x")             // invalid name: ignored
	if err := os.Mkdir(filepath.Join(dir, "carol"), 0o700); err != nil {
		t.Fatal(err)
	}
	valid := func(n string) bool { return !strings.Contains(n, " ") }
	fc := clock.NewFake(time.Unix(0, 0))
	events := make(chan Event, 20)
	w, toks, err := NewDir(DirConfig{Dir: dir, ValidName: valid, Interval: time.Second, Clock: fc, OnChange: func(e Event) { events <- e }})
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 2 || toks["alice"].Reveal() != "gho_alice" || toks["bob"].Reveal() != "gho_bob" {
		t.Fatalf("NewDir() tokens = %v", toks)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	poll := func() {
		t.Helper()
		if err := fc.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fc.Advance(time.Second)
		if err := fc.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	drain := func() []string {
		var got []string
		for {
			select {
			case e := <-events:
				got = append(got, e.Name+":"+e.Kind.String()+":"+e.Token.Reveal())
			default:
				slices.Sort(got)
				return got
			}
		}
	}
	expect := func(want ...string) {
		t.Helper()
		if got := drain(); !slices.Equal(got, want) {
			t.Fatalf("events = %q; want %q", got, want)
		}
	}
	poll()
	expect()

	write("dave", "gho_dave")
	write("alice", "gho_alice2")
	if err := os.Remove(filepath.Join(dir, "bob")); err != nil {
		t.Fatal(err)
	}
	poll()
	expect("alice:changed:gho_alice2", "bob:removed:", "dave:added:gho_dave")

	// An unreadable (empty) file keeps its credential: no removal.
	write("dave", "  \n")
	poll()
	expect()
	write("dave", "gho_dave")
	poll()
	expect()

	// A symlinked file inside the directory counts: Kubernetes secret
	// volumes link each name to ..data/NAME, ..data to a dated directory.
	if err := os.Mkdir(filepath.Join(dir, "..2026_12_07"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("..2026_12_07/erin", "gho_erin")
	if err := os.Symlink("..2026_12_07", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/erin", filepath.Join(dir, "erin")); err != nil {
		t.Fatal(err)
	}
	poll()
	expect("erin:added:gho_erin")

	// Reload reports unchanged files too.
	w.Reload()
	if err := fc.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "three events after Reload", func() bool { return len(events) >= 3 })
	expect("alice:unchanged:gho_alice2", "dave:unchanged:gho_dave", "erin:unchanged:gho_erin")
}

func TestNewDirErrors(t *testing.T) {
	if _, _, err := NewDir(DirConfig{Dir: filepath.Join(t.TempDir(), "missing"), ValidName: func(string) bool { return true }, OnChange: func(Event) {}}); err == nil {
		t.Error("NewDir(missing dir) = nil error")
	}
	if _, _, err := NewDir(DirConfig{Dir: t.TempDir()}); err == nil {
		t.Error("NewDir(no callbacks) = nil error")
	}
}

// TestDirRefusesLinksAndDuplicates: a symlink out of the directory, a file
// with other hard links, a FIFO and a second name for a credential another
// file holds are all refused, each with one warning however many polls see
// it (issue 22: links served any readable file, or another account's seat,
// as a token; a FIFO blocked the poller).
func TestDirRefusesLinksAndDuplicates(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "alice"), "gho_alice")
	write(filepath.Join(outside, "secret"), "gho_elsewhere")
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "mallory")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../"+filepath.Base(outside)+"/secret", filepath.Join(dir, "relative")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(outside, "secret"), filepath.Join(dir, "hardlink")); err != nil {
		t.Skipf("no hard links here: %v", err)
	}
	write(filepath.Join(dir, "zed"), "gho_alice\n") // alice's seat under a second name
	write(filepath.Join(dir, "empty"), "\n")        // unreadable: warned about once, not every poll
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	var logs testutil.SyncBuffer
	fc := clock.NewFake(time.Unix(0, 0))
	events := make(chan Event, 20)
	type result struct {
		w    *DirWatcher
		toks map[string]secret.Secret
		err  error
	}
	opened := make(chan result, 1)
	go func() {
		w, toks, err := NewDir(DirConfig{Dir: dir, ValidName: func(string) bool { return true }, Interval: time.Second, Clock: fc,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)), OnChange: func(e Event) { events <- e }})
		opened <- result{w, toks, err}
	}()
	var r result
	select {
	case r = <-opened:
	case <-time.After(20 * time.Second):
		t.Fatal("NewDir blocked")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.toks) != 1 || r.toks["alice"].Reveal() != "gho_alice" {
		t.Fatalf("NewDir() accounts = %v; want alice only", slices.Sorted(maps.Keys(r.toks)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	done := make(chan struct{})
	go func() { r.w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for range 3 {
		if err := fc.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fc.Advance(time.Second)
	}
	if err := fc.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if len(events) != 0 {
		t.Errorf("%d events from polls of refused files; want none", len(events))
	}
	out := logs.String()
	for _, c := range []struct{ file, msg string }{
		{"mallory", "leads outside the accounts directory"},
		{"relative", "leads outside the accounts directory"},
		{"hardlink", "other hard links"},
		{"pipe", "not a regular file"},
		{"zed", "same credential as another account"},
		{"empty", "account file unreadable"},
	} {
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if slices.Contains(strings.Fields(line), "file="+c.file) {
				n++
			}
		}
		if n != 1 || !strings.Contains(out, c.msg) {
			t.Errorf("%s: %d warnings in %q; want one saying %q", c.file, n, out, c.msg)
		}
	}
	if strings.Contains(out, "gho_") {
		t.Errorf("logs show a credential: %q", out)
	}
}
