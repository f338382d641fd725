package tokens

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// A redirecting token exchange is not followed: the GitHub token must never
// reach the redirect's target (another port or scheme would get it with Go's
// default redirect policy), and the answer is a transient failure.
func TestExchangeFollowsNoRedirect(t *testing.T) {
	var reached, withCred atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if r.Header.Get("Authorization") != "" {
			withCred.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+r.URL.Path, code)
		}, func(c *ExchangeConfig) { c.HTTPClient = &http.Client{} }) // Go's default redirect policy
		_, err := ex.Exchange(t.Context(), secret.New(testCred))
		var te *TransientError
		if !errors.As(err, &te) || te.Status != code {
			t.Errorf("exchange answered %d: %v; want a transient error with status %d", code, err, code)
		}
	}
	if reached.Load() != 0 || withCred.Load() != 0 {
		t.Errorf("the redirect target got %d requests, %d with the credential; want none", reached.Load(), withCred.Load())
	}
}
