package sandbox

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/copilot-broker/copilot-broker/internal/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 3, 14, 12, 0, 0, 0, time.UTC)

// env is a running sandbox on a fake clock and a plain client talking to it.
type env struct {
	t      *testing.T
	sb     *Running
	clock  *clock.Fake
	client *http.Client
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	fc := clock.NewFake(t0)
	if cfg.Clock == nil {
		cfg.Clock = fc
	}
	sb, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	tr := &http.Transport{}
	e := &env{t: t, sb: sb, clock: fc, client: &http.Client{Transport: tr}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := sb.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return e
}

// do sends a request and returns the answer with its body read.
func (e *env) do(method, path string, h http.Header, body string) (*http.Response, []byte) {
	e.t.Helper()
	return e.doCtx(context.Background(), method, path, h, body)
}

func (e *env) doCtx(ctx context.Context, method, path string, h http.Header, body string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.sb.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, b
}

func ghHeader(tok string) http.Header {
	return http.Header{"Authorization": {"token " + tok}, "Accept": {"application/json"}}
}

// exchange swaps the sandbox's GitHub token for a Copilot token.
func (e *env) exchange() exchangeAnswer {
	e.t.Helper()
	resp, body := e.do("GET", "/copilot_internal/v2/token", ghHeader(e.sb.GitHubToken().Reveal()), "")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("exchange: status %d, body %s", resp.StatusCode, body)
	}
	var ans exchangeAnswer
	mustUnmarshal(e.t, body, &ans)
	return ans
}

// apiHeader is what the proxy sends to the Copilot API.
func apiHeader(tok string) http.Header {
	return http.Header{
		"Authorization":          {"Bearer " + tok},
		"Copilot-Integration-Id": {"vscode-chat"},
		"Editor-Version":         {"vscode/1.111.0"},
		"Editor-Plugin-Version":  {"copilot-chat/0.42.0"},
		"Content-Type":           {"application/json"},
		"X-Initiator":            {"user"},
		"X-Request-Id":           {"7d4c5f8e-2b1a-4c3d-9e8f-0a1b2c3d4e5f"},
	}
}

// api calls the Copilot API with a fresh token.
func (e *env) api(method, path, body string) (*http.Response, []byte) {
	e.t.Helper()
	return e.do(method, path, apiHeader(e.exchange().Token), body)
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
}

// errorCode returns error.code of an API error body.
func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e apiError
	mustUnmarshal(t, b, &e)
	return e.Error.Code
}

func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
