package server

import (
	"crypto/rand"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// randomSecret returns n letters from g to z: no hex digit, so a window of
// it cannot match a request id or a hash in the logs by chance.
func randomSecret(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		v, err := rand.Int(rand.Reader, big.NewInt(20))
		if err != nil {
			t.Fatal(err)
		}
		b[i] = byte('g' + v.Int64())
	}
	return string(b)
}

// leaks returns the 8-byte windows of secret found in text.
func leaks(text, secret string) []string {
	var found []string
	for i := 0; i+8 <= len(secret); i++ {
		if w := secret[i : i+8]; strings.Contains(text, w) {
			found = append(found, w)
		}
	}
	return found
}

// tokenSecrets returns the parts of a Copilot token that only its holder
// knows: the tid field and the signature. The other fields (exp, sku, ip,
// proxy-ep, feature flags) describe the account and repeat public values:
// the sandbox's token carries ip=127.0.0.1, which every listen address in
// the log contains, and exp is published as the expiry gauge.
func tokenSecrets(t *testing.T, tok string) []string {
	t.Helper()
	fields, sig, ok := strings.Cut(tok, ":")
	var tid string
	for f := range strings.SplitSeq(fields, ";") {
		if v, found := strings.CutPrefix(f, "tid="); found {
			tid = v
		}
	}
	if !ok || len(sig) < 32 || len(tid) < 16 {
		t.Fatalf("Copilot token of an unexpected shape (tid %d bytes, signature %d bytes)", len(tid), len(sig))
	}
	return []string{tid, sig}
}

// TestLogsAndMetricsNameKeysNeverSecrets runs an exchange that touches every
// path handling a credential (good and wrong keys in both header forms, an
// upstream 401 with a token refresh and a retry) with debug logging, then
// checks that the logs and /metrics name the keys and hold no part of any
// key or Copilot token.
func TestLogsAndMetricsNameKeysNeverSecrets(t *testing.T) {
	alice, bob, wrong := randomSecret(t, 32), randomSecret(t, 32), randomSecret(t, 32)
	var logs testutil.SyncBuffer
	st := startStack(t, stackOpts{proxy: func(c *Config) {
		c.Keys = mustKeys(t, "alice:"+alice+"\nbob:"+bob+"\n")
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	first, err := st.proxy.Token()
	if err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name, path, body string
		hdr              map[string]string
		want             int
	}{
		{"bearer", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + alice}, 200},
		{"x-api-key", "/v1/messages", messagesBody, map[string]string{"Authorization": "", "X-Api-Key": bob}, 200},
		{"wrong bearer", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + wrong}, 401},
		{"wrong x-api-key", "/v1/messages", messagesBody, map[string]string{"Authorization": "", "X-Api-Key": wrong}, 401},
		{"key in both headers", "/v1/messages", messagesBody, map[string]string{"Authorization": "Bearer " + bob, "X-Api-Key": bob}, 200},
	}
	for _, s := range steps {
		if resp, body := st.do("POST", s.path, s.body, s.hdr); resp.StatusCode != s.want {
			t.Fatalf("%s: POST %s = %d %s; want %d", s.name, s.path, resp.StatusCode, body, s.want)
		}
	}
	st.sb.InvalidateCopilotTokens()
	if resp, body := st.do("POST", "/v1/chat/completions", chatBody, map[string]string{"Authorization": "Bearer " + alice}); resp.StatusCode != 200 {
		t.Fatalf("after the upstream invalidated the token: %d %s; want 200 (refresh and retry)", resp.StatusCode, body)
	}
	second, err := st.proxy.Token()
	if err != nil {
		t.Fatal(err)
	}
	if second.Generation == first.Generation {
		t.Fatalf("token generation still %d after an upstream 401; want a refreshed token", first.Generation)
	}
	m := waitMetrics(t, st.proxy, map[string]float64{
		requestsSeries("/v1/chat/completions", "200", "alice"):   2,
		requestsSeries("/v1/messages", "200", "bob"):             2,
		`copilot_proxy_upstream_retries_total{result="retried"}`: 1,
	})
	// Each forwarded request is logged at debug level just after it is
	// counted; wait for the four lines.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), `"msg":"request"`) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	out := logs.String()
	for _, want := range []string{`"msg":"request"`, `"key":"alice"`, `"key":"bob"`, "retrying with a newer one"} {
		if !strings.Contains(out, want) {
			t.Errorf("the debug log has no %s; want the exchange logged with key names", want)
		}
	}
	for _, want := range []string{`key="alice"`, `key="bob"`} {
		if !strings.Contains(m.body, want) {
			t.Errorf("/metrics has no %s; want requests counted by key name", want)
		}
	}

	secrets := map[string][]string{
		"alice's key": {alice}, "bob's key": {bob}, "the wrong key": {wrong}, "the broker key": {brokerKey},
		"the first Copilot token":     tokenSecrets(t, first.Value.Reveal()),
		"the refreshed Copilot token": tokenSecrets(t, second.Value.Reveal()),
	}
	for what, parts := range secrets {
		for _, s := range parts {
			if l := leaks(out, s); len(l) > 0 {
				t.Errorf("the log holds parts of %s: %q", what, l)
			}
			if l := leaks(m.body, s); len(l) > 0 {
				t.Errorf("/metrics holds parts of %s: %q", what, l)
			}
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}
