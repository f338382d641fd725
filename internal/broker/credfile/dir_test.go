package credfile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
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

	// A symlinked file (Kubernetes secret volumes) counts.
	target := filepath.Join(t.TempDir(), "erin")
	if err := os.WriteFile(target, []byte("gho_erin"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "erin")); err != nil {
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
