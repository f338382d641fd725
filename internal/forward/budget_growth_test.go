package forward

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/copilot-broker/copilot-broker/internal/keys"
)

const (
	testKey3 = "third-key-0123456789"
	// growStep is body.Chunk, written out so that these tests also build
	// against the budget that reserved announced lengths (issue 22).
	growStep = 64 << 10
)

// pipeRequest is a request to the handler whose body the test writes.
type pipeRequest struct {
	pw   *io.PipeWriter
	rec  *httptest.ResponseRecorder
	done chan struct{}
}

// startPipe serves a POST to path with a body written through the returned
// pipe, announcing length (-1: chunked), from the client key secret ("":
// none), on its own goroutine.
func startPipe(h http.Handler, path, secret string, length int64) *pipeRequest {
	pr, pw := io.Pipe()
	req := httptest.NewRequest(http.MethodPost, path, pr)
	req.ContentLength = length
	if length < 0 {
		req.TransferEncoding = []string{"chunked"}
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	p := &pipeRequest{pw: pw, rec: httptest.NewRecorder(), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer pr.Close()
		h.ServeHTTP(p.rec, req)
	}()
	return p
}

// writeWithin writes b to the request's body, failing the test if the
// handler has not read it within d (a body the budget does not admit is not
// read).
func (p *pipeRequest) writeWithin(t *testing.T, b []byte, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := p.pw.Write(b); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("writing the body: %v", err)
		}
	case <-time.After(d):
		p.pw.CloseWithError(errors.New("test gave up"))
		<-done
		t.Fatalf("%d body bytes not read within %v: the body was not admitted", len(b), d)
	}
}

// jsonBody is a chat body of exactly n bytes.
func jsonBody(n int) []byte {
	head, tail := `{"model":"m","messages":[{"role":"user","content":"`, `"}]}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// TestTrickledBodiesDoNotStarve reproduces issue 22's finding 3: eight
// connections announcing 32 MiB each and trickling their bodies held the
// whole budget, and every other client's POST got 503. A body now holds what
// it has sent plus a step, so another client's POST is served at once.
func TestTrickledBodiesDoNotStarve(t *testing.T) {
	threeKeys := func(c *Config) {
		ks, err := keys.Parse(strings.NewReader("alice:" + testKey + "\nbob:" + testKey2 + "\ncarol:" + testKey3 + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		c.Keys = ks
	}
	const announced = 32<<20 - 1 // a reservation of exactly 32 MiB on the old budget
	tests := []struct {
		name      string
		mod       func(*Config)
		attackers []string // one trickling body per entry, by key
		length    int64    // announced by each: -1 chunked
		other     string   // the key of the POST that must be served
		close     func(*io.PipeWriter) error
		wantCode  int // what the trickled bodies get when their sender stops
	}{
		{
			name: "one key that may hold the whole budget",
			mod: func(c *Config) {
				c.MaxInflightBodyBytes, c.MaxInflightBodyBytesPerKey = 128<<20, 128<<20
			},
			attackers: []string{testKey, testKey, testKey, testKey, testKey, testKey, testKey, testKey},
			length:    announced, other: testKey2,
			close:    func(pw *io.PipeWriter) error { return pw.CloseWithError(errors.New("client gone")) },
			wantCode: http.StatusBadRequest,
		},
		{
			name: "two keys, each at its default half",
			mod: func(c *Config) {
				threeKeys(c)
				c.MaxInflightBodyBytes = 128 << 20
			},
			attackers: []string{testKey, testKey3, testKey, testKey3, testKey, testKey3, testKey, testKey3},
			length:    announced, other: testKey2,
			close:    func(pw *io.PipeWriter) error { return pw.CloseWithError(errors.New("client gone")) },
			wantCode: http.StatusBadRequest,
		},
		{
			name:      "no client keys: everyone shares one key",
			mod:       func(c *Config) { c.Keys, c.MaxInflightBodyBytes = nil, 128<<20 },
			attackers: []string{"", "", "", "", "", "", "", ""},
			length:    announced, other: "",
			// The sender ends early: the body is shorter than announced.
			close:    func(pw *io.PipeWriter) error { return pw.Close() },
			wantCode: http.StatusBadRequest,
		},
		{
			name:      "chunked bodies",
			mod:       func(c *Config) { c.MaxInflightBodyBytes, c.MaxInflightBodyBytesPerKey = 128<<20, 128<<20 },
			attackers: []string{testKey, testKey, testKey, testKey, testKey, testKey, testKey, testKey},
			length:    -1, other: testKey2,
			close:    func(pw *io.PipeWriter) error { return pw.CloseWithError(errors.New("client gone")) },
			wantCode: http.StatusBadRequest,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil, func(c *Config) {
				c.InflightBodyWait = 100 * time.Millisecond // the old budget refused after this; the new one never waits here
				tt.mod(c)
			})
			var trickling []*pipeRequest
			for _, k := range tt.attackers {
				p := startPipe(e.handler, "/v1/chat/completions", k, tt.length)
				trickling = append(trickling, p)
				// Once the first bytes are read, the body is admitted.
				p.writeWithin(t, []byte(`{"model":"m","messages":[`), 10*time.Second)
			}
			held := testutil.ToFloat64(e.handler.metrics.inflightBody)
			if most := float64(len(tt.attackers) * growStep); held > most {
				t.Errorf("%d trickling bodies hold %.0f bytes of the budget; want at most a step each, %.0f", len(tt.attackers), held, most)
			}

			hdr := map[string]string{"Authorization": "Bearer " + tt.other}
			if tt.other == "" {
				hdr["Authorization"] = ""
			}
			resp, got := e.do(t, "POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`, hdr)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("another client's POST while %d bodies trickle = %d %.200s; want 200", len(tt.attackers), resp.StatusCode, got)
			}

			for _, p := range trickling {
				_ = tt.close(p.pw)
				<-p.done
				if p.rec.Code != tt.wantCode {
					t.Errorf("a trickled body whose sender stopped got %d %.200s; want %d", p.rec.Code, p.rec.Body.String(), tt.wantCode)
				}
			}
			if got := testutil.ToFloat64(e.handler.metrics.budgetRefused); got != 0 {
				t.Errorf("copilot_proxy_body_budget_refusals_total = %v; want 0", got)
			}
			if got := testutil.ToFloat64(e.handler.metrics.inflightBody); got != 0 {
				t.Errorf("copilot_proxy_inflight_body_bytes after every request ended = %v; want 0", got)
			}
		})
	}
}

// TestBodyGrowthCannotDeadlock: two bodies that each hold part of the
// budget and both need more than is left would wait on each other until
// both were refused (the first attempt at growing as bytes arrive: 0 of 100
// served). The older one now takes the room of the younger, which waits for
// room too: it is served, the younger gets 503 with Retry-After in its
// dialect at once, long before the wait would end.
func TestBodyGrowthCannotDeadlock(t *testing.T) {
	const (
		size   = 2<<20 - 1 // each body: together twice the budget
		budget = 2 << 20
		first  = 256 << 10 // what each sends before both send the rest
	)
	tests := []struct {
		name       string
		older      string // key of the older request
		younger    string
		olderPath  string
		youngPath  string
		chunked    bool
		keyIsShare bool // the key's share is the whole budget
	}{
		{"one key, announced lengths", testKey, testKey, "/v1/chat/completions", "/v1/messages", false, true},
		{"one key, chunked", testKey, testKey, "/v1/chat/completions", "/v1/messages", true, true},
		{"two keys", testKey, testKey2, "/v1/messages", "/v1/chat/completions", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil, func(c *Config) {
				c.MaxBodyBytes, c.MaxInflightBodyBytes, c.MaxInflightBodyBytesPerKey = size, budget, budget
				c.InflightBodyWait = time.Minute // a test that needs it to end has failed
			})
			length := int64(size)
			if tt.chunked {
				length = -1
			}
			body := jsonBody(size)
			older := startPipe(e.handler, tt.olderPath, tt.older, length)
			older.writeWithin(t, body[:first], 10*time.Second)
			younger := startPipe(e.handler, tt.youngPath, tt.younger, length)
			younger.writeWithin(t, body[:first], 10*time.Second)

			var wg sync.WaitGroup
			for _, p := range []*pipeRequest{older, younger} {
				wg.Go(func() {
					_, _ = io.Copy(p.pw, bytes.NewReader(body[first:]))
					_ = p.pw.Close()
				})
			}
			for _, p := range []*pipeRequest{older, younger} {
				select {
				case <-p.done:
				case <-time.After(30 * time.Second):
					t.Fatal("a request still waits for room after 30 s: the bodies wait on each other")
				}
			}
			wg.Wait()

			if older.rec.Code != http.StatusOK {
				t.Errorf("older request = %d %.200s; want 200", older.rec.Code, older.rec.Body.String())
			}
			y := younger.rec
			anthropic := tt.youngPath == "/v1/messages"
			if y.Code != http.StatusServiceUnavailable || y.Header().Get("Retry-After") == "" || !dialectOK(y.Body.String(), anthropic) {
				t.Errorf("younger request = %d (Retry-After %q) %.200s; want 503 with Retry-After in its dialect", y.Code, y.Header().Get("Retry-After"), y.Body.String())
			}
			if got := testutil.ToFloat64(e.handler.metrics.budgetRefused); got != 1 {
				t.Errorf("copilot_proxy_body_budget_refusals_total = %v; want 1", got)
			}
			if got := testutil.ToFloat64(e.handler.metrics.inflightBody); got != 0 {
				t.Errorf("copilot_proxy_inflight_body_bytes after both ended = %v; want 0", got)
			}
		})
	}
}
