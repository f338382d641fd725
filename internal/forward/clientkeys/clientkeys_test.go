package clientkeys

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/forward"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/store"
)

func managed(name string) Managed {
	return Managed{Name: name, Digest: store.DigestOf("secret-of-" + name + "-0123456789")}
}

func sec(name string) secret.Secret { return secret.New("secret-of-" + name + "-0123456789") }

func status(err error) int {
	var ke *forward.KeyError
	if errors.As(err, &ke) {
		return ke.Status
	}
	return 0
}

func TestAuthenticate(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	file, err := keys.Parse(strings.NewReader("alice:alice-file-secret-0123456789\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{File: file, MaxStale: time.Minute, Clock: clk})

	if _, err := s.Authenticate(sec("bob")); status(err) != http.StatusServiceUnavailable {
		t.Errorf("before the first set = %v; want 503", err)
	}
	if k, err := s.Authenticate(secret.New("alice-file-secret-0123456789")); err != nil || k.Name != "alice" {
		t.Errorf("file key before the first set = %v, %v; want alice", k, err)
	}

	models, _ := keys.ParseModels("gpt-*")
	bob := managed("bob")
	bob.Models, bob.Target = models, &forward.Target{Accounts: []string{"a"}}
	expired := managed("old")
	expired.ExpiresAt = clk.Now().Add(time.Second)
	disabled := managed("off")
	disabled.Disabled = true
	clash := managed("alice")
	s.Update([]Managed{bob, expired, disabled, clash})
	if got := s.Clashes(); len(got) != 1 || got[0] != "alice" {
		t.Errorf("Clashes = %v; want alice", got)
	}

	k, err := s.Authenticate(sec("bob"))
	if err != nil || k.Name != "bob" || !k.Models.Allows("gpt-4o") || k.Models.Allows("o3") || k.Target.Accounts[0] != "a" {
		t.Errorf("Authenticate(bob) = %+v, %v", k, err)
	}
	if _, err := s.Authenticate(sec("old")); err != nil {
		t.Errorf("old before expiry: %v", err)
	}
	clk.Advance(time.Second)
	for _, tt := range []struct {
		name string
		in   secret.Secret
		want int
		msg  string
	}{
		{"expired", sec("old"), 401, "expired"},
		{"disabled", sec("off"), 401, "disabled"},
		{"clash refused", sec("alice"), 401, "invalid API key"},
		{"unknown", sec("nobody"), 401, "invalid API key"},
		{"none", secret.Secret{}, 401, "invalid API key"},
	} {
		_, err := s.Authenticate(tt.in)
		if status(err) != tt.want || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: Authenticate = %v; want %d %q", tt.name, err, tt.want, tt.msg)
		}
	}

	// The broker away: fine for MaxStale, then 503 naming the cause; file keys unaffected.
	s.Disconnected()
	clk.Advance(time.Minute)
	if _, err := s.Authenticate(sec("bob")); err != nil {
		t.Errorf("at MaxStale: %v", err)
	}
	s.Disconnected() // a second report of the same outage changes nothing
	clk.Advance(time.Millisecond)
	if _, err := s.Authenticate(sec("bob")); status(err) != 503 || !strings.Contains(err.Error(), "keys-max-stale") {
		t.Errorf("past MaxStale = %v; want 503 naming --keys-max-stale", err)
	}
	if _, err := s.Authenticate(secret.New("alice-file-secret-0123456789")); err != nil {
		t.Errorf("file key while stale: %v", err)
	}
	s.Update([]Managed{bob})
	if _, err := s.Authenticate(sec("bob")); err != nil {
		t.Errorf("after the broker came back: %v", err)
	}
}

// setOf returns a set of n managed keys.
func setOf(n int) *Set {
	s := New(Config{})
	ms := make([]Managed, n)
	for i := range ms {
		ms[i] = managed(fmt.Sprintf("k%d", i))
	}
	s.Update(ms)
	return s
}

// BenchmarkAuthenticate compares one managed key with 10,000: a map lookup
// by digest, so the cost is the same.
func BenchmarkAuthenticate(b *testing.B) {
	for _, n := range []int{1, 10000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			s := setOf(n)
			k := sec("k0")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Authenticate(k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAuthenticateCostFlat: authenticating against 10,000 keys allocates no
// more than against one (the map lookup does not scan).
func TestAuthenticateCostFlat(t *testing.T) {
	one, many := setOf(1), setOf(10000)
	k := sec("k0")
	a1 := testing.AllocsPerRun(100, func() { _, _ = one.Authenticate(k) })
	a2 := testing.AllocsPerRun(100, func() { _, _ = many.Authenticate(k) })
	if a2 > a1 {
		t.Errorf("allocations per Authenticate: %v with 10,000 keys, %v with one", a2, a1)
	}
}
