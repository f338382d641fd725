package tokens

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

const testCred = "ghu_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY"

var secretComparer = cmp.Comparer(func(a, b secret.Secret) bool { return a.Equal(b) })

// serve starts an httptest server and an Exchanger pointed at it.
func serve(t *testing.T, h http.HandlerFunc, edit func(*ExchangeConfig)) *Exchanger {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := ExchangeConfig{APIURL: srv.URL, HTTPClient: srv.Client(), Clock: clock.NewFake(t0)}
	if edit != nil {
		edit(&cfg)
	}
	return NewExchanger(cfg)
}

func TestExchangeSuccessSendsProtocolHeaders(t *testing.T) {
	date := time.Date(2025, 6, 1, 13, 0, 0, 0, time.UTC) // GitHub an hour ahead: irrelevant here
	var got http.Header
	var method, path string
	ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got, method, path = r.Header.Clone(), r.Method, r.URL.Path
		w.Header().Set("Date", date.Format(http.TimeFormat))
		fmt.Fprintf(w, `{"annotations_enabled":true,"chat_enabled":true,"endpoints":{"api":"https://api.business.githubcopilot.com","proxy":"https://proxy.business.githubcopilot.com","telemetry":"https://telemetry.business.githubcopilot.com"},
			"expires_at":%d,"refresh_in":1500,"sku":"copilot_for_business","token":"tid=abc;exp=1;sku=x:sig","limited_user_quotas":null,"future_field":{"x":[1,2]}}`, date.Add(30*time.Minute).Unix())
	}, nil)
	tok, err := ex.Exchange(context.Background(), secret.New(testCred))
	if err != nil {
		t.Fatalf("Exchange() error = %v", err)
	}
	want := &CopilotToken{
		Token:      secret.New("tid=abc;exp=1;sku=x:sig"),
		ExpiresAt:  date.Add(30 * time.Minute),
		RefreshIn:  1500 * time.Second,
		APIBaseURL: "https://api.business.githubcopilot.com",
		SKU:        "copilot_for_business",
		ServerDate: date,
	}
	if diff := cmp.Diff(want, tok, secretComparer); diff != "" {
		t.Errorf("Exchange() mismatch (-want +got):\n%s", diff)
	}
	if method != http.MethodGet || path != "/copilot_internal/v2/token" {
		t.Errorf("request = %s %s; want GET /copilot_internal/v2/token", method, path)
	}
	for k, v := range map[string]string{
		"Authorization":         "token " + testCred,
		"Accept":                "application/json",
		"X-Github-Api-Version":  "2025-04-01",
		"Editor-Version":        identity.DefaultEditorVersion,
		"Editor-Plugin-Version": identity.DefaultEditorPluginVersion,
		"User-Agent":            identity.DefaultUserAgent,
	} {
		if g := got.Get(k); g != v {
			t.Errorf("header %s = %q; want %q", k, g, v)
		}
	}
}

func TestExchangeConfigurable(t *testing.T) {
	var got *http.Request
	ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		fmt.Fprint(w, `{"token":"t","expires_at":1900000000,"refresh_in":1500}`)
	}, func(c *ExchangeConfig) {
		c.APIURL += "/api/v3/" // GitHub Enterprise Server, with a trailing slash
		c.Editor = identity.Editor{Version: "ed/1", PluginVersion: "plug/2", UserAgent: "ua/3", ExchangeAPIVersion: "2099-01-01", APIVersion: "2000-01-01"}
	})
	if _, err := ex.Exchange(context.Background(), secret.New(testCred)); err != nil {
		t.Fatalf("Exchange() error = %v", err)
	}
	if got.URL.Path != "/api/v3/copilot_internal/v2/token" {
		t.Errorf("path = %q; want /api/v3/copilot_internal/v2/token", got.URL.Path)
	}
	for k, v := range map[string]string{"Editor-Version": "ed/1", "Editor-Plugin-Version": "plug/2", "User-Agent": "ua/3", "X-GitHub-Api-Version": "2099-01-01"} {
		if g := got.Header.Get(k); g != v {
			t.Errorf("header %s = %q; want %q", k, g, v)
		}
	}
}

func TestExchangeErrors(t *testing.T) {
	date := time.Date(2025, 6, 1, 11, 0, 0, 0, time.UTC) // GitHub an hour behind the fake clock
	tests := []struct {
		name     string
		status   int
		headers  map[string]string
		body     string
		maxBytes int64
		check    func(t *testing.T, err error)
		terminal bool
	}{
		{name: "401", status: 401, body: `{"message":"Bad credentials"}`, terminal: true,
			check: func(t *testing.T, err error) { mustIs(t, err, ErrCredentialRejected) }},
		{name: "403 no access", status: 403, terminal: true,
			body: `{"can_signup_for_limited":true,"message":"not licensed","error_details":{"url":"https://github.com/settings/copilot","message":"No Copilot for you.","title":"Not authorized","notification_id":"no_copilot_access"}}`,
			check: func(t *testing.T, err error) {
				var na *NoAccessError
				if !errors.As(err, &na) {
					t.Fatalf("error %v is not a *NoAccessError", err)
				}
				want := &NoAccessError{Status: 403, NotificationID: "no_copilot_access", Message: "No Copilot for you."}
				if diff := cmp.Diff(want, na); diff != "" {
					t.Errorf("NoAccessError mismatch (-want +got):\n%s", diff)
				}
			}},
		{name: "403 without details", status: 403, body: `<html>forbidden</html>`, terminal: true,
			check: func(t *testing.T, err error) { mustAs[*NoAccessError](t, err) }},
		{name: "403 rate limit message", status: 403, body: `{"message":"API rate limit exceeded for user ID 1.","documentation_url":"https://docs.github.com"}`,
			check: func(t *testing.T, err error) { wantRetryAfter(t, err, 0) }},
		{name: "403 rate limit headers, reset against Date", status: 403,
			headers: map[string]string{"Date": date.Format(http.TimeFormat), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": fmt.Sprint(date.Add(90 * time.Second).Unix())},
			body:    `{"message":"You have exceeded a secondary rate limit."}`,
			check:   func(t *testing.T, err error) { wantRetryAfter(t, err, 90*time.Second) }},
		{name: "429 Retry-After 120", status: 429, headers: map[string]string{"Retry-After": "120"},
			check: func(t *testing.T, err error) { wantRetryAfter(t, err, 120*time.Second) }},
		{name: "429 Retry-After date", status: 429,
			headers: map[string]string{"Date": date.Format(http.TimeFormat), "Retry-After": date.Add(45 * time.Second).Format(http.TimeFormat)},
			check:   func(t *testing.T, err error) { wantRetryAfter(t, err, 45*time.Second) }},
		{name: "429 without delay", status: 429,
			check: func(t *testing.T, err error) { wantRetryAfter(t, err, 0) }},
		{name: "429 garbage Retry-After", status: 429, headers: map[string]string{"Retry-After": "soon"},
			check: func(t *testing.T, err error) { wantRetryAfter(t, err, 0) }},
		{name: "500", status: 500, check: func(t *testing.T, err error) { wantTransient(t, err, 500) }},
		{name: "502", status: 502, check: func(t *testing.T, err error) { wantTransient(t, err, 502) }},
		{name: "503", status: 503, check: func(t *testing.T, err error) { wantTransient(t, err, 503) }},
		{name: "404 token of another app", status: 404, body: `{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}`, terminal: true,
			check: func(t *testing.T, err error) {
				mustIs(t, err, ErrNotExchangeable)
				mustIs(t, err, ErrCredentialRejected)
				for _, kind := range []string{"personal access token", "gho_", "another app", "--github-api-url", "broker login"} {
					if !strings.Contains(err.Error(), kind) {
						t.Errorf("404 error %q does not name %q", err, kind)
					}
				}
			}},
		{name: "200 not JSON", status: 200, body: `<html>`,
			check: func(t *testing.T, err error) { mustIs(t, err, ErrMalformedResponse) }},
		{name: "200 without token", status: 200, body: `{"expires_at":1900000000,"refresh_in":1500}`,
			check: func(t *testing.T, err error) { mustIs(t, err, ErrMalformedResponse) }},
		{name: "200 without lifetime", status: 200, body: `{"token":"abc"}`,
			check: func(t *testing.T, err error) { mustIs(t, err, ErrMalformedResponse) }},
		{name: "200 too large", status: 200, body: `{"token":"abc","expires_at":1900000000,"refresh_in":1500,"pad":"` + strings.Repeat("x", 100) + `"}`, maxBytes: 100,
			check: func(t *testing.T, err error) { mustIs(t, err, ErrMalformedResponse) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.headers {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}, func(c *ExchangeConfig) { c.MaxResponseBytes = tt.maxBytes })
			tok, err := ex.Exchange(context.Background(), secret.New(testCred))
			if err == nil {
				t.Fatalf("Exchange() = %+v, nil; want an error", tok)
			}
			tt.check(t, err)
			if got := IsTerminal(err); got != tt.terminal {
				t.Errorf("IsTerminal(%v) = %v; want %v", err, got, tt.terminal)
			}
		})
	}
}

// TestExchangeNeverQuotesTheCredential answers every way with bodies that echo
// the credential; no error text may contain it.
func TestExchangeNeverQuotesTheCredential(t *testing.T) {
	for _, status := range []int{200, 401, 403, 429, 500} {
		ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
			a := r.Header.Get("Authorization")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"message":%q,"error_details":{"message":%q,"notification_id":%q},"token":7,"refresh_in":%q}`, a, a, a, a)
		}, nil)
		_, err := ex.Exchange(context.Background(), secret.New(testCred))
		if err == nil || strings.Contains(err.Error(), testCred) || strings.Contains(fmt.Sprintf("%+v", err), testCred) {
			t.Errorf("HTTP %d: Exchange() error = %v; want an error without the credential", status, err)
		}
	}
}

func TestExchangeTransportFailures(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		ex := NewExchanger(ExchangeConfig{APIURL: "http://" + addr})
		_, err = ex.Exchange(context.Background(), secret.New(testCred))
		wantTransient(t, err, 0)
	})
	t.Run("client timeout", func(t *testing.T) {
		release := make(chan struct{})
		ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		}, func(c *ExchangeConfig) { c.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} })
		defer close(release)
		_, err := ex.Exchange(context.Background(), secret.New(testCred))
		wantTransient(t, err, 0)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("Exchange() error = %v; want a timeout", err)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
			cancel()
			<-r.Context().Done()
		}, nil)
		_, err := ex.Exchange(ctx, secret.New(testCred))
		wantTransient(t, err, 0)
		mustIs(t, err, context.Canceled)
	})
	t.Run("empty credential makes no request", func(t *testing.T) {
		ex := serve(t, func(w http.ResponseWriter, r *http.Request) {
			t.Error("request made with an empty credential")
		}, nil)
		_, err := ex.Exchange(context.Background(), secret.Secret{})
		mustIs(t, err, ErrCredentialRejected)
	})
}

func TestDefaultHTTPClientHasTimeouts(t *testing.T) {
	c := NewHTTPClient()
	tr, ok := c.Transport.(*http.Transport)
	if c.Timeout <= 0 || !ok || tr.TLSHandshakeTimeout <= 0 || tr.ResponseHeaderTimeout <= 0 {
		t.Errorf("NewHTTPClient() = timeout %v, transport %T; want a total timeout and TLS and header timeouts", c.Timeout, c.Transport)
	}
}

func mustIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v; want one matching %v", err, target)
	}
}

func mustAs[E error](t *testing.T, err error) E {
	t.Helper()
	var e E
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T); want a %T", err, err, e)
	}
	return e
}

func wantRetryAfter(t *testing.T, err error, d time.Duration) {
	t.Helper()
	if rl := mustAs[*RateLimitedError](t, err); rl.RetryAfter != d {
		t.Errorf("RetryAfter = %v; want %v", rl.RetryAfter, d)
	}
}

func wantTransient(t *testing.T, err error, status int) {
	t.Helper()
	if te := mustAs[*TransientError](t, err); te.Status != status {
		t.Errorf("TransientError.Status = %d; want %d", te.Status, status)
	}
}
