// Package browsertest drives a headless Debian chromium from tests with
// chromedp: a fresh profile per browser, the flags that keep it off the
// network, the page's console messages collected for a check, and
// screenshots saved where a test's artifacts go.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// actionTimeout bounds each action a test runs.
const actionTimeout = 30 * time.Second

// Browser is one headless chromium tab and the console messages it logged.
type Browser struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

// chromiumPath finds Debian's chromium (or another Chrome on PATH).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// New starts chromium with a fresh profile at 1280×900; it stops with the
// test. Without chromium the test is skipped, except under CI (which
// installs it: .ci/run), where it fails.
func New(t *testing.T) *Browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium not found; .ci/run installs it (apt-get install chromium)")
		}
		t.Skip("chromium not found: apt-get install chromium to run the console's browser tests")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	br := &Browser{ctx: ctx}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("starting chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			br.mu.Lock()
			br.msgs = append(br.msgs, m)
			br.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cancelAlloc()
	})
	return br
}

// Do runs actions, failing the test with what on an error.
func (br *Browser) Do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Eval evaluates a JavaScript expression (awaiting a promise) into a T.
func Eval[T any](t *testing.T, br *Browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// WaitJS waits up to d for a JavaScript expression to be truthy.
func (br *Browser) WaitJS(t *testing.T, d time.Duration, what, expr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, d+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		t.Fatalf("waiting %s for %s: %v", d, what, err)
	}
}

// Screenshot saves the whole page as name.png in $CONSOLE_SCREENSHOT_DIR,
// or else in the test's artifact directory (go test -artifacts keeps it).
func (br *Browser) Screenshot(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(br.ctx, actionTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("CONSOLE_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// CheckConsole fails on every console error, warning, exception or browser
// log error the page wrote, but those matching an allowed pattern (the
// refusals a test asks for).
func (br *Browser) CheckConsole(t *testing.T, allowed ...*regexp.Regexp) {
	t.Helper()
	br.mu.Lock()
	defer br.mu.Unlock()
	for _, m := range br.msgs {
		if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException && m.Type != "warning" {
			continue
		}
		ok := false
		for _, re := range allowed {
			ok = ok || re.MatchString(m.Text)
		}
		if !ok {
			t.Errorf("console %s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line)
		}
	}
}

// SecretInPage reports whether s is anywhere in the page's DOM, form
// values included.
func (br *Browser) SecretInPage(t *testing.T, s string) bool {
	t.Helper()
	return Eval[bool](t, br, fmt.Sprintf(`document.documentElement.outerHTML.includes(%[1]s) ||
		[...document.querySelectorAll("input, textarea")].some(e => e.value.includes(%[1]s))`, JSString(s)))
}

// JSString quotes s as a JavaScript string literal.
func JSString(s string) string {
	return fmt.Sprintf("%q", s)
}

// SignIn signs in to the console at base with key through its form.
func (br *Browser) SignIn(t *testing.T, base, key string) {
	t.Helper()
	br.Do(t, "signing in",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("signin-key")),
		chromedp.SendKeys(chromedp.ID("signin-key"), key),
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)),
	)
}
