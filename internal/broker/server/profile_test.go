package server

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/quota"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
)

// TestProfileChangeHealsIdentityRefusal: the exchange refused for the
// identity is made again as soon as the profile file changes, not after
// the (here one-hour) backoff, and the quota fetch presents the profile
// held at the time of each fetch.
func TestProfileChangeHealsIdentityRefusal(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{})
	sb.Retire(sandbox.Retirement{EditorPluginVersions: []string{"copilot-chat/0.50.0"}})
	// In front of the sandbox's GitHub API: the plugin version of every
	// quota fetch, in order.
	target, err := url.Parse(sb.URL)
	if err != nil {
		t.Fatal(err)
	}
	quotaSeen := make(chan string, 64)
	rp := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == quota.Path {
			select {
			case quotaSeen <- r.Header.Get("Editor-Plugin-Version"):
			default:
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	profile := filepath.Join(t.TempDir(), "upstream-profile.yaml")
	writeProfile := func(plugin string) {
		t.Helper()
		tmp := profile + ".tmp"
		if err := os.WriteFile(tmp, []byte("editor_plugin_version: "+plugin+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, profile); err != nil {
			t.Fatal(err)
		}
	}
	writeProfile("copilot-chat/0.50.0")
	e := startBroker(t, sb, Config{
		GitHubAPIURL: front.URL, UpstreamProfile: profile, UpstreamProfilePoll: 10 * time.Millisecond,
		Tune: func(c *tokens.ManagerConfig) {
			fastTune(c)
			c.BackoffInitial, c.BackoffMax = time.Hour, time.Hour
		},
		QuotaTune: func(c *quota.PollerConfig) { c.MinPokeInterval = time.Millisecond },
	})
	e.srv.fleet.mu.Lock()
	m := e.srv.fleet.members[""]
	e.srv.fleet.mu.Unlock()
	updates, cancel := m.mgr.Subscribe()
	defer cancel()
	// The bound only tells a retry on the profile change from one after
	// the hour's backoff; the three waits share it, and on a loaded
	// machine under -race they once took more than 20 s together.
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	wait := func(what string, ok func(tokens.State) bool) {
		t.Helper()
		for {
			select {
			case st := <-updates:
				if ok(st) {
					return
				}
			case <-deadline.C:
				t.Fatalf("timed out waiting for %s; state %+v", what, m.mgr.Snapshot())
			}
		}
	}
	waitQuota := func(plugin string) {
		t.Helper()
		for {
			m.poller.Poke()
			select {
			case got := <-quotaSeen:
				if got == plugin {
					return
				}
			case <-deadline.C:
				t.Fatalf("timed out waiting for a quota fetch presenting %s", plugin)
			}
		}
	}
	wait("the identity refusal", func(st tokens.State) bool { return st.IdentityRejected })
	waitQuota("copilot-chat/0.50.0")

	writeProfile("copilot-chat/0.70.0")
	edited := time.Now()
	wait("a token on the new profile", func(st tokens.State) bool { return st.Status == tokens.StatusValid })
	t.Logf("token exchanged %v after the profile edit (backoff 1 h)", time.Since(edited).Round(time.Millisecond))
	waitQuota("copilot-chat/0.70.0")
}
