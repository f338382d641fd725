package catalog

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseAliasesBadLines(t *testing.T) {
	file := `# model aliases
fast: gpt-5-mini
smart:claude-opus-4.1   # trailing comment

no colon here
: gpt-4.1
empty:
with space: gpt 4.1
fast: gpt-4.1
self: self
bedrock: anthropic.claude-v2:1
` + "ctl\x01: gpt-4.1\n" + `
  padded  :  gpt-4.1  `
	a, bad, err := ParseAliases(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []Alias{{"fast", "gpt-5-mini", 2}, {"smart", "claude-opus-4.1", 3}, {"padded", "gpt-4.1", 14}}
	if diff := cmp.Diff(want, a.List()); diff != "" {
		t.Errorf("aliases (-want +got):\n%s", diff)
	}
	var lines []int
	for _, e := range bad {
		lines = append(lines, e.Line)
		if !strings.HasPrefix(e.Error(), "line ") {
			t.Errorf("LineError %q; want it to start with the line number", e.Error())
		}
	}
	if diff := cmp.Diff([]int{5, 6, 7, 8, 9, 10, 11, 12}, lines); diff != "" {
		t.Errorf("bad lines (-want +got):\n%s\n%v", diff, bad)
	}
	if !strings.Contains(bad[4].Reason, `"fast" is already an alias`) {
		t.Errorf("duplicate reason = %q", bad[4].Reason)
	}
}

func TestParseAliasesTooLarge(t *testing.T) {
	if _, _, err := ParseAliases(strings.NewReader(strings.Repeat("a", MaxAliasFileBytes+2))); err == nil {
		t.Error("ParseAliases of an oversized line: want an error")
	}
	if _, _, err := ParseAliases(strings.NewReader(strings.Repeat("a: b\n", MaxAliasFileBytes/5+1))); err == nil {
		t.Error("ParseAliases of an oversized file: want an error")
	}
}

func FuzzParseAliases(f *testing.F) {
	f.Add("fast: gpt-5-mini\n# c\nbad line\n")
	f.Add("a:b:c\n\n\r\n:\n#:\n")
	f.Add("x: y # z\nx: w\n\xff: a\n")
	f.Fuzz(func(t *testing.T, s string) {
		a, bad, err := ParseAliases(strings.NewReader(s))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, al := range a.List() {
			if !validName(al.From) || !validName(al.To) || al.From == al.To || seen[al.From] {
				t.Fatalf("alias %+v kept; want it reported", al)
			}
			seen[al.From] = true
			if to, ok := a.Lookup(al.From); !ok || to != al.To {
				t.Fatalf("Lookup(%q) = %q, %v", al.From, to, ok)
			}
		}
		for _, e := range bad {
			if e.Line < 1 || e.Reason == "" {
				t.Fatalf("bad line %+v", e)
			}
		}
	})
}

func TestAliasFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases")
	write := func(s string, mod time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	write("fast: gpt-5-mini\nbad\n", t0)
	clk := clock.NewFake(t0)
	logs := &testutil.SyncBuffer{}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f, err := OpenAliasFile(AliasFileConfig{Path: path, Poll: time.Second, Clock: clk, Metrics: m, Logger: testLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	if to, _ := f.Current().Lookup("fast"); to != "gpt-5-mini" {
		t.Fatalf("fast = %q; want gpt-5-mini", to)
	}
	if !strings.Contains(logs.String(), "line=2") {
		t.Errorf("logs %q; want the bad line 2 reported", logs.String())
	}
	if g := promtest.ToFloat64(m.badLines); g != 1 {
		t.Errorf("bad lines gauge = %v; want 1", g)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { f.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	tick := func() {
		t.Helper()
		if err := clk.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		// The poll is done once Run waits on its timer again.
		if err := clk.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}

	write("fast: gpt-4.1\nsmart: claude-opus-4.1\n", t0.Add(time.Minute))
	tick()
	if to, _ := f.Current().Lookup("fast"); to != "gpt-4.1" || f.Current().Len() != 2 {
		t.Errorf("after a change: fast = %q, %d aliases; want gpt-4.1, 2", to, f.Current().Len())
	}
	// Removed or unreadable: the aliases held stay.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	tick()
	if f.Current().Len() != 2 || !strings.Contains(logs.String(), "keeping the aliases held") {
		t.Errorf("after removal: %d aliases, logs %q; want 2 kept and a warning", f.Current().Len(), logs.String())
	}
	// Back with an edit whose time and size match the old file's: the
	// content decides.
	write("fast: gpt-5.x\nsmart: claude-opus-4.1\n", t0.Add(time.Minute))
	tick()
	if to, _ := f.Current().Lookup("fast"); to != "gpt-5.x" {
		t.Errorf("after re-creation: fast = %q; want gpt-5.x", to)
	}
	if g := promtest.ToFloat64(m.reloads.WithLabelValues("ok")); g != 2 {
		t.Errorf("reloads ok = %v; want 2", g)
	}
	if g := promtest.ToFloat64(m.reloads.WithLabelValues("error")); g != 1 {
		t.Errorf("reloads error = %v; want 1", g)
	}
}

func TestOpenAliasFileMissing(t *testing.T) {
	if _, err := OpenAliasFile(AliasFileConfig{Path: filepath.Join(t.TempDir(), "none")}); err == nil {
		t.Error("OpenAliasFile of a missing file: want an error")
	}
}

func testLogger(w *testutil.SyncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestAliasFileFIFO: a FIFO put at the alias file's path is refused at
// once; the poller goes on and the aliases held stay (issue 22: the open
// blocked forever, stopping reloads and shutdown).
func TestAliasFileFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aliases")
	if err := os.WriteFile(path, []byte("fast: gpt-5-mini\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(t0)
	logs := &testutil.SyncBuffer{}
	f, err := OpenAliasFile(AliasFileConfig{Path: path, Poll: time.Second, Clock: clk, Metrics: NewMetrics(prometheus.NewRegistry()), Logger: testLogger(logs)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	opened := make(chan error, 1)
	go func() {
		_, err := OpenAliasFile(AliasFileConfig{Path: path})
		opened <- err
	}()
	select {
	case err := <-opened:
		if err == nil {
			t.Error("OpenAliasFile of a FIFO: want an error")
		}
	case <-ctx.Done():
		t.Fatal("OpenAliasFile of a FIFO blocked")
	}
	var wg sync.WaitGroup
	wg.Go(func() { f.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	for range 2 {
		if err := clk.WaitForTimers(ctx, 1); err != nil {
			t.Fatalf("the poller did not come back to its timer: %v", err)
		}
		clk.Advance(time.Second)
	}
	if err := clk.WaitForTimers(ctx, 1); err != nil {
		t.Fatalf("the poller did not come back to its timer: %v", err)
	}
	if to, _ := f.Current().Lookup("fast"); to != "gpt-5-mini" || !strings.Contains(logs.String(), "not a regular file") {
		t.Errorf("fast = %q, logs %q; want the alias kept and the FIFO reported", to, logs.String())
	}
}
