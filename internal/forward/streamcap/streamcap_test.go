package streamcap

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCap holds `held` requests in the handler and sends one more: past the
// cap it is refused in its path's dialect, within it served; once the held
// ones end, the count is back at zero.
func TestCap(t *testing.T) {
	for _, tc := range []struct {
		name       string
		max, held  int
		path       string
		wantStatus int
		wantShape  string // "openai", "anthropic" or "" (served)
	}{
		{"under the cap", 3, 2, "/v1/chat/completions", http.StatusOK, ""},
		{"at the cap, chat", 2, 2, "/v1/chat/completions", http.StatusServiceUnavailable, "openai"},
		{"at the cap, messages", 1, 1, "/v1/messages", http.StatusServiceUnavailable, "anthropic"},
		{"no cap", 0, 5, "/v1/responses", http.StatusOK, ""},
		{"negative: no cap", -1, 5, "/v1/responses", http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c := New(tc.max, reg)
			entered := make(chan struct{})
			release := make(chan struct{})
			h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Hold") != "" {
					entered <- struct{}{}
					<-release
				}
				w.WriteHeader(http.StatusOK)
			}))
			var wg sync.WaitGroup
			for range tc.held {
				wg.Go(func() {
					r := httptest.NewRequest(http.MethodPost, tc.path, nil)
					r.Header.Set("X-Hold", "1")
					h.ServeHTTP(httptest.NewRecorder(), r)
				})
				<-entered
			}
			if got := c.Open(); got != tc.held {
				t.Fatalf("Open() = %d with %d held, want %d", got, tc.held, tc.held)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, tc.path, nil))
			close(release)
			wg.Wait()
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			refused := 0.0
			if tc.wantShape != "" {
				refused = 1
				if rec.Header().Get("Retry-After") == "" {
					t.Error("no Retry-After on the refusal")
				}
				var body map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
					t.Fatalf("refusal is not JSON: %v: %s", err, rec.Body)
				}
				if _, anthropic := body["type"]; anthropic != (tc.wantShape == "anthropic") {
					t.Errorf("refusal %s is not in the %s shape", rec.Body, tc.wantShape)
				}
			}
			if got := testutil.ToFloat64(c.refused); got != refused {
				t.Errorf("copilot_proxy_streams_refused_total = %v, want %v", got, refused)
			}
			if got := c.Open(); got != 0 {
				t.Errorf("Open() = %d once every request ended, want 0", got)
			}
			if n, err := testutil.GatherAndCount(reg, "copilot_proxy_streams"); err != nil || n != 1 {
				t.Errorf("copilot_proxy_streams gathered %d series (%v), want 1", n, err)
			}
		})
	}
}
