package credfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type change struct {
	tok     string
	changed bool
}

func TestWatcher(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("  gho_one\n")
	fc := clock.NewFake(time.Unix(0, 0))
	changes := make(chan change, 10)
	w, tok, err := New(Config{Path: path, Interval: time.Second, Clock: fc, OnChange: func(s secret.Secret, changed bool) {
		changes <- change{s.Reveal(), changed}
	}})
	if err != nil || tok.Reveal() != "gho_one" {
		t.Fatalf("New() = %q, %v; want gho_one (trimmed)", tok.Reveal(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// poll advances to the next poll and waits until it has run: Run is
	// back on its timer.
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
	expect := func(want *change) {
		t.Helper()
		select {
		case got := <-changes:
			if want == nil || got != *want {
				t.Fatalf("OnChange(%+v); want %+v", got, want)
			}
		default:
			if want != nil {
				t.Fatalf("no OnChange; want %+v", *want)
			}
		}
	}

	poll()
	expect(nil) // unchanged

	write("gho_two")
	poll()
	expect(&change{"gho_two", true})

	// Touched, same content: no call.
	now := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
	poll()
	expect(nil)

	// An empty file (mid-write, say) keeps the current credential.
	write("")
	poll()
	expect(nil)
	write("gho_three\n")
	poll()
	expect(&change{"gho_three", true})

	// Same length, same modification time (a coarse file system
	// timestamp): the content still counts.
	stamp := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, tok := range []string{"gho_four", "gho_five"} {
		write(tok)
		if err := os.Chtimes(path, stamp, stamp); err != nil {
			t.Fatal(err)
		}
		poll()
		expect(&change{tok, true})
	}

	// Reload re-reads at once and reports an unchanged credential too.
	w.Reload()
	select {
	case got := <-changes:
		if got != (change{"gho_five", false}) {
			t.Fatalf("OnChange after Reload = %+v; want gho_five unchanged", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnChange after Reload")
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte(" \n"), 0o600)
	big := filepath.Join(dir, "big")
	_ = os.WriteFile(big, make([]byte, MaxSize+1), 0o600)
	if _, err := Read(empty); !errors.Is(err, ErrEmpty) {
		t.Errorf("Read(blank file) = %v; want ErrEmpty", err)
	}
	if _, err := Read(big); err == nil {
		t.Error("Read(oversized file) = nil; want an error")
	}
	if _, err := Read(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(missing) = %v; want ErrNotExist", err)
	}
}

// TestReadFIFO: a FIFO at the token file's path is refused at once (issue
// 22: the open blocked the poller forever, and SIGTERM with it).
func TestReadFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Read(path)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Read(FIFO) = %v; want not a regular file", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Read(FIFO) blocked")
	}
}
