package quota

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

const userAnswerJSON = `{"login":"alice","access_type_sku":"plus_monthly_subscriber_quota","copilot_plan":"individual_pro",
"chat_enabled":true,"quota_reset_date":"2026-12-01","quota_snapshots":{
"premium_interactions":{"entitlement":1500,"remaining":1234.5,"percent_remaining":82.3,"unlimited":false,"overage_count":0,"overage_permitted":true,"quota_id":"premium_interactions"},
"chat":{"entitlement":0,"remaining":0,"percent_remaining":100,"unlimited":true,"overage_count":0,"overage_permitted":false,"quota_id":"chat"},
"completions":{"entitlement":0,"remaining":0,"percent_remaining":100,"unlimited":true,"overage_count":0,"overage_permitted":false,"quota_id":"completions"}}}`

func TestParse(t *testing.T) {
	r, err := Parse([]byte(userAnswerJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := []Snapshot{
		{Kind: "chat", PercentRemaining: 100, Unlimited: true},
		{Kind: "completions", PercentRemaining: 100, Unlimited: true},
		{Kind: "premium_interactions", Entitlement: 1500, Remaining: 1234.5, PercentRemaining: 82.3, OveragePermitted: true},
	}
	if len(r.Snapshots) != 3 {
		t.Fatalf("Snapshots = %+v", r.Snapshots)
	}
	for i := range want {
		if r.Snapshots[i] != want[i] {
			t.Errorf("Snapshots[%d] = %+v; want %+v", i, r.Snapshots[i], want[i])
		}
	}
	if !r.ResetAt.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || r.Plan != "individual_pro" {
		t.Errorf("ResetAt, Plan = %v, %q", r.ResetAt, r.Plan)
	}
	if r.Exhausted() {
		t.Error("Exhausted() = true; want false")
	}
}

func TestParseEdges(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
		check   func(t *testing.T, r Reading)
	}{
		{"not json", `<html>`, true, nil},
		{"no snapshots", `{"copilot_plan":"free"}`, true, nil},
		{"spent, no overage", `{"quota_snapshots":{"chat":{"entitlement":50,"remaining":0,"percent_remaining":0}}}`, false, func(t *testing.T, r Reading) {
			if !r.Exhausted() || !r.Snapshots[0].Exhausted() {
				t.Errorf("Exhausted() = false for %+v", r.Snapshots)
			}
		}},
		{"spent, overage permitted", `{"quota_snapshots":{"premium_interactions":{"entitlement":50,"remaining":0,"overage_permitted":true,"overage_count":3}}}`, false, func(t *testing.T, r Reading) {
			if r.Exhausted() || r.Snapshots[0].OverageCount != 3 {
				t.Errorf("reading = %+v; want not exhausted, overage 3", r)
			}
		}},
		{"percent derived", `{"quota_snapshots":{"chat":{"entitlement":200,"remaining":50}}}`, false, func(t *testing.T, r Reading) {
			if r.Snapshots[0].PercentRemaining != 25 {
				t.Errorf("PercentRemaining = %v; want 25", r.Snapshots[0].PercentRemaining)
			}
		}},
		{"bad kinds dropped", `{"quota_snapshots":{"a b":{},"x\"y":{},"ok":{"unlimited":true},"null":null}}`, false, func(t *testing.T, r Reading) {
			if len(r.Snapshots) != 1 || r.Snapshots[0].Kind != "ok" {
				t.Errorf("Snapshots = %+v; want only ok", r.Snapshots)
			}
		}},
		{"utc reset preferred", `{"quota_reset_date":"2026-12-01","quota_reset_date_utc":"2026-12-01T08:00:00Z","quota_snapshots":{}}`, false, func(t *testing.T, r Reading) {
			if !r.ResetAt.Equal(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)) {
				t.Errorf("ResetAt = %v", r.ResetAt)
			}
		}},
		{"bad reset date", `{"quota_reset_date":"soon","quota_snapshots":{}}`, false, func(t *testing.T, r Reading) {
			if !r.ResetAt.IsZero() {
				t.Errorf("ResetAt = %v; want zero", r.ResetAt)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse([]byte(tt.body))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Parse() error = %v; want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse() error = %v; want ErrMalformed", err)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestFetch(t *testing.T) {
	const tok = "gho_secret_value_1234567890"
	var redirected bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/elsewhere":
			redirected = true
			w.WriteHeader(200)
		case r.Header.Get("Authorization") != "token "+tok:
			w.WriteHeader(401)
		case r.URL.Path == "/redirect"+Path:
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case r.URL.Path == Path && r.Header.Get("Editor-Version") == "vscode/1":
			_, _ = w.Write([]byte(userAnswerJSON))
		default:
			w.WriteHeader(404)
		}
	}))
	defer srv.Close()
	h := http.Header{}
	h.Set("Editor-Version", "vscode/1")
	f := NewFetcher(FetchConfig{APIURL: srv.URL + "/", Headers: h, HTTPClient: srv.Client()})
	r, err := f.Fetch(context.Background(), secret.New(tok))
	if err != nil || len(r.Snapshots) != 3 {
		t.Fatalf("Fetch() = %+v, %v", r, err)
	}
	_, err = f.Fetch(context.Background(), secret.New("gho_other"))
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 401 || strings.Contains(err.Error(), "gho_") {
		t.Errorf("Fetch(wrong token) = %v; want StatusError 401 without the token", err)
	}
	if _, err := f.Fetch(context.Background(), secret.Secret{}); err == nil {
		t.Error("Fetch(no token) = nil error")
	}
	fr := NewFetcher(FetchConfig{APIURL: srv.URL + "/redirect", HTTPClient: srv.Client()})
	if _, err := fr.Fetch(context.Background(), secret.New(tok)); !errors.As(err, &se) || se.Status != http.StatusFound || redirected {
		t.Errorf("Fetch(redirect) = %v, followed %v; want StatusError 302, not followed", err, redirected)
	}
	big := NewFetcher(FetchConfig{APIURL: srv.URL, HTTPClient: srv.Client(), Headers: h, MaxResponseBytes: 100})
	if _, err := big.Fetch(context.Background(), secret.New(tok)); !errors.Is(err, ErrMalformed) {
		t.Errorf("Fetch(too large) = %v; want ErrMalformed", err)
	}
}

// TestFetchFollowsProfile: the fetch reads the held profile at every call,
// as the token exchange does: a changed profile's identity and extra
// headers are on the next fetch, over the fixed Headers.
func TestFetchFollowsProfile(t *testing.T) {
	const tok = "gho_secret_value_1234567890"
	got := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		_, _ = w.Write([]byte(userAnswerJSON))
	}))
	defer srv.Close()
	fixed := http.Header{}
	fixed.Set("Editor-Version", "fixed/1")
	h := identity.NewHolder(identity.DefaultProfile(), "")
	f := NewFetcher(FetchConfig{APIURL: srv.URL, HTTPClient: srv.Client(), Headers: fixed, Profile: h})
	fetch := func() http.Header {
		t.Helper()
		if _, err := f.Fetch(context.Background(), secret.New(tok)); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		return <-got
	}

	def := identity.Default()
	first := fetch()
	if first.Get("Editor-Version") != def.Version || first.Get("User-Agent") != def.UserAgent {
		t.Errorf("first fetch headers = %v; want the held (default) profile's, not the fixed ones", first)
	}

	p := identity.DefaultProfile()
	p.Version = "vscode/9.9.9"
	p.PluginVersion = "copilot-chat/9.9.9"
	p.UserAgent = "GitHubCopilotChat/9.9.9"
	p.ExchangeAPIVersion = "2099-01-01"
	p.Headers = map[string]string{"X-Extra": "1"}
	h.Set(p, "f")
	next := fetch()
	for k, want := range map[string]string{
		"Editor-Version": "vscode/9.9.9", "Editor-Plugin-Version": "copilot-chat/9.9.9",
		"User-Agent": "GitHubCopilotChat/9.9.9", "X-Github-Api-Version": "2099-01-01",
		"X-Extra": "1", "Authorization": "token " + tok, "Accept": "application/json",
	} {
		if v := next.Get(k); v != want {
			t.Errorf("after the profile changed, %s = %q; want %q", k, v, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(userAnswerJSON))
	f.Add([]byte(`{"quota_snapshots":{"chat":{"entitlement":50,"remaining":0}}}`))
	f.Add([]byte(`{"quota_reset_date":"2026-12-01","quota_snapshots":{"a b":{}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := Parse(body)
		if err != nil {
			return
		}
		if len(r.Snapshots) > MaxKinds {
			t.Fatalf("%d kinds kept", len(r.Snapshots))
		}
		for i, s := range r.Snapshots {
			if !validKind(s.Kind) || (i > 0 && r.Snapshots[i-1].Kind >= s.Kind) {
				t.Fatalf("kinds not valid and sorted: %+v", r.Snapshots)
			}
		}
		if len(r.Plan) > 64 || !utf8Valid(r.Plan) {
			t.Fatalf("plan %q", r.Plan)
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }
