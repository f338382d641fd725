package login

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// The device flow follows no redirect: its requests carry the device code
// and its answers the token, so a redirect to another origin fails the
// login instead of reaching that origin.
func TestRunFollowsNoRedirect(t *testing.T) {
	var reached atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { reached.Add(1) }))
	defer target.Close()
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer gh.Close()
	_, err := Run(ctxT(t), Config{GitHubURL: gh.URL, Prompt: func(Code) { t.Error("prompted after a redirect") }})
	if err == nil || reached.Load() != 0 {
		t.Errorf("Run() against a redirecting GitHub = %v, target reached %d times; want an error and no request there", err, reached.Load())
	}
}
