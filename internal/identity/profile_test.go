package identity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"go.uber.org/goleak"
)

func TestParseProfile(t *testing.T) {
	base := DefaultProfile()
	tests := []struct {
		name, in string
		want     func(Profile) bool
		err      string
	}{
		{"json one key", `{"editor_version": "vscode/1.150.0"}`,
			func(p Profile) bool {
				return p.Version == "vscode/1.150.0" && p.PluginVersion == DefaultEditorPluginVersion && p.APIVersion == DefaultAPIVersion
			}, ""},
		{"yaml every key", "editor_version: vscode/1.150.0\neditor_plugin_version: copilot-chat/0.70.0\nuser_agent: GitHubCopilotChat/0.70.0\n" +
			"integration_id: vscode-chat\nexchange_api_version: 2025-04-01\napi_version: \"2026-11-01\"\nheaders:\n  x-vscode-user-agent-library-version: electron-fetch\n",
			func(p Profile) bool {
				return p.PluginVersion == "copilot-chat/0.70.0" && p.APIVersion == "2026-11-01" &&
					p.Headers["X-Vscode-User-Agent-Library-Version"] == "electron-fetch"
			}, ""},
		{"yaml date unquoted", "api_version: 2026-11-01\n", func(p Profile) bool { return p.APIVersion == "2026-11-01" }, ""},
		{"empty", "  \n", nil, "empty"},
		{"unknown key", `{"editor_versoin": "vscode/1.150.0"}`, nil, "unknown field"},
		{"bad version", `{"editor_version": "1.150"}`, nil, "want NAME/X.Y.Z"},
		{"bad api version", `api_version: "26-1-1"`, nil, "YYYY-MM-DD"},
		{"reserved header", `{"headers": {"authorization": "x"}}`, nil, "set by the broker or proxy"},
		{"bad header name", `{"headers": {"a b": "x"}}`, nil, "not a valid token"},
		{"header line break", `{"headers": {"X-A": "a\r\nb"}}`, nil, "line breaks"},
		{"not yaml", "editor_version: [", nil, "not JSON, and not YAML"},
		{"two json docs", `{} {}`, nil, "more than one"},
		{"wrong type", `{"editor_version": 3}`, nil, "profile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProfile([]byte(tt.in), base)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v; want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil || !tt.want(p) {
				t.Fatalf("ParseProfile = %+v, %v", p, err)
			}
		})
	}
}

func TestRevisionAndOverride(t *testing.T) {
	a := DefaultProfile()
	b := Profile{Editor: Editor{}} // zero fields are the defaults
	if a.Revision() != b.Revision() {
		t.Error("a profile and its defaults-filled form have different revisions")
	}
	c := Profile{Editor: Default(), Headers: map[string]string{"X-A": "1"}}
	if c.Revision() == a.Revision() {
		t.Error("extra headers do not change the revision")
	}
	got, names := a.Override(Editor{Version: "vscode/9.0.0", PluginVersion: DefaultEditorPluginVersion})
	if got.Version != "vscode/9.0.0" || len(names) != 1 || names[0] != "--editor-version" {
		t.Errorf("Override = %+v, %v; want only --editor-version overriding", got.Editor, names)
	}
}

func FuzzParseProfile(f *testing.F) {
	for _, s := range []string{`{"editor_version":"vscode/1.0.0"}`, "headers:\n  X-A: b\n", "{", "- a\n- b", `{"headers":{"":""}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProfile(b, DefaultProfile())
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("ParseProfile accepted a profile that does not validate: %v", err)
		}
		if p.Revision() == "" {
			t.Fatal("empty revision")
		}
	})
}

func TestHolder(t *testing.T) {
	h := NewHolder(DefaultProfile(), "")
	ch := h.Changed()
	if h.Set(DefaultProfile(), "") {
		t.Fatal("setting the same profile reported a change")
	}
	p := DefaultProfile()
	p.Version = "vscode/2.0.0"
	if !h.Set(p, "f") {
		t.Fatal("a new profile reported no change")
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed by a change")
	}
	if h.Get().Profile.Version != "vscode/2.0.0" || h.Get().Source != "f" {
		t.Errorf("Get = %+v", h.Get())
	}
}

func TestWatcher(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "profile.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("editor_version: vscode/1.150.0\n")
	h := NewHolder(DefaultProfile(), "")
	clk := clock.NewFake(time.Unix(1e9, 0))
	var mu sync.Mutex
	var loads []error
	loaded := make(chan struct{}, 10)
	w, err := NewWatcher(WatchConfig{Path: path, Base: DefaultProfile(), Holder: h, Clock: clk, Interval: time.Second,
		OnLoad: func(err error) {
			mu.Lock()
			loads = append(loads, err)
			mu.Unlock()
			loaded <- struct{}{}
		}})
	if err != nil {
		t.Fatal(err)
	}
	<-loaded
	if got := h.Get(); got.Profile.Version != "vscode/1.150.0" || got.Source != path {
		t.Fatalf("after NewWatcher: %+v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	tick := func() {
		t.Helper()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		if err := clk.WaitForTimers(wctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	wait := func() error {
		t.Helper()
		select {
		case <-loaded:
		case <-time.After(10 * time.Second):
			t.Fatal("no load reported")
		}
		mu.Lock()
		defer mu.Unlock()
		return loads[len(loads)-1]
	}

	changed := h.Changed()
	write("editor_version: vscode/1.160.0\n")
	tick()
	if err := wait(); err != nil {
		t.Fatalf("valid edit refused: %v", err)
	}
	<-changed
	if h.Get().Profile.Version != "vscode/1.160.0" {
		t.Fatalf("profile not changed: %+v", h.Get().Profile)
	}

	write("editor_version: nonsense\n")
	tick()
	if err := wait(); err == nil {
		t.Fatal("malformed profile accepted")
	}
	if h.Get().Profile.Version != "vscode/1.160.0" {
		t.Fatalf("malformed profile replaced the held one: %+v", h.Get().Profile)
	}

	write("editor_version: vscode/1.170.0\n")
	w.Reload()
	if err := wait(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if h.Get().Profile.Version != "vscode/1.170.0" {
		t.Fatalf("reload did not take the file: %+v", h.Get().Profile)
	}
}

func TestNewWatcherRefusesBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(path, []byte(`{"user_agent": "a\nb"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := NewWatcher(WatchConfig{Path: path, Holder: NewHolder(DefaultProfile(), "")})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v; want one naming the file", err)
	}
	if _, err := NewWatcher(WatchConfig{Path: filepath.Join(t.TempDir(), "missing"), Holder: NewHolder(DefaultProfile(), "")}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
