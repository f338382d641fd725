package tokens

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// TestExchangeFollowsProfile: the exchange reads the held profile at every
// call, and classifies a refusal of it as identity_rejected.
func TestExchangeFollowsProfile(t *testing.T) {
	h := identity.NewHolder(identity.DefaultProfile(), "")
	var got http.Header
	ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		if r.Header.Get("Editor-Plugin-Version") == "copilot-chat/0.1.0" {
			w.WriteHeader(466)
			fmt.Fprint(w, `{"message":"client not supported: `+testCred+`"}`)
			return
		}
		fmt.Fprint(w, `{"token":"t","expires_at":1900000000,"refresh_in":1500}`)
	}, func(c *ExchangeConfig) { c.Profile = h })

	p := identity.DefaultProfile()
	p.PluginVersion = "copilot-chat/0.1.0"
	h.Set(p, "f")
	_, err := ex.Exchange(context.Background(), secret.New(testCred))
	var ir *IdentityRejectedError
	if !errors.As(err, &ir) || ir.Status != 466 || IsTerminal(err) {
		t.Fatalf("err = %v; want a transient *IdentityRejectedError of 466", err)
	}
	if want := "client not supported: " + secret.Redacted; ir.Message != want {
		t.Errorf("message = %q; want %q (the credential removed)", ir.Message, want)
	}

	p.PluginVersion = "copilot-chat/0.70.0"
	p.Headers = map[string]string{"X-Extra": "1"}
	h.Set(p, "f")
	if _, err := ex.Exchange(context.Background(), secret.New(testCred)); err != nil {
		t.Fatalf("after the profile changed: %v", err)
	}
	if got.Get("Editor-Plugin-Version") != "copilot-chat/0.70.0" || got.Get("X-Extra") != "1" {
		t.Errorf("headers = %v; want the new profile's", got)
	}
}

// TestProfileChangedAfterIdentityRefusal: after the exchange refused the
// identity, a new profile brings the next exchange forward at once, without
// waiting for the backoff.
func TestProfileChangedAfterIdentityRefusal(t *testing.T) {
	clk := clock.NewFake(t0)
	up := newFakeUpstream(clk)
	ok := up.answer
	up.setAnswer(func(n int, cred secret.Secret) (*CopilotToken, error) {
		if n == 1 {
			return nil, &IdentityRejectedError{Status: 466, Message: "client not supported"}
		}
		return ok(n, cred)
	})
	m := newTestManager(t, clk, up, func(c *ManagerConfig) {
		c.BackoffInitial, c.BackoffMax = time.Minute, time.Minute
		c.MinForceInterval = time.Nanosecond
	})
	updates, cancel := m.Subscribe()
	defer cancel()
	waitState(t, updates, "the identity refusal", func(st State) bool { return st.IdentityRejected })
	waitTimer(t, clk)
	clk.Advance(time.Second) // well short of the one-minute backoff
	m.ProfileChanged()
	waitState(t, updates, "a token after the profile changed", isGen(1, StatusValid))
	if calls := up.callTimes(); len(calls) != 2 || !calls[1].Equal(t0.Add(time.Second)) {
		t.Errorf("exchanges at %v; want the second at t0+1s, not after the backoff", calls)
	}
}
