package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/copilot-broker/copilot-broker/internal/forward/server"
	"github.com/copilot-broker/copilot-broker/internal/ops"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunCommands(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr bool
		wantOut string
	}{
		{nil, true, "Usage: proxy"},
		{[]string{"help"}, false, "Usage: proxy"},
		{[]string{"bogus"}, true, "Usage: proxy"},
		{[]string{"serve", "--help"}, false, "PROXY_BROKER_KEY_FILE"},
		{[]string{"serve", "extra"}, true, ""},
		{[]string{"serve", "--gc-percent", "-1"}, true, ""},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		err := run(context.Background(), tt.args, func(string) string { return "" }, &out, &out)
		if (err != nil) != tt.wantErr || !strings.Contains(out.String(), tt.wantOut) {
			t.Errorf("run(%q) = %v, output %q; want error %v and output containing %q", tt.args, err, out.String(), tt.wantErr, tt.wantOut)
		}
	}
}

func TestServeHelpShowsDefaults(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"serve", "--help"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--addr (env PROXY_ADDR) (default \"127.0.0.1:4141\")", "--admin-addr (env PROXY_ADMIN_ADDR) (default \"127.0.0.1:4142\")",
		"--broker-addr (env PROXY_BROKER_ADDR) (default \"127.0.0.1:50051\")", "PROXY_BROKER_KEY environment variable", "--keys-file (env PROXY_KEYS_FILE)",
		"--copilot-api-url (env PROXY_COPILOT_API_URL)", "--max-body-bytes (env PROXY_MAX_BODY_BYTES)", "--log-format (env PROXY_LOG_FORMAT)", "--broker-tls-ca",
		"--editor-version (env PROXY_EDITOR_VERSION)", "--editor-plugin-version", "--user-agent", "--integration-id",
		"--openai-intent (env PROXY_OPENAI_INTENT)", "--openai-intent-messages (env PROXY_OPENAI_INTENT_MESSAGES) (default \"messages-proxy\")",
		"--openai-intent-chat (env PROXY_OPENAI_INTENT_CHAT) (default \"conversation-agent\")", "--openai-intent-models (env PROXY_OPENAI_INTENT_MODELS) (default \"model-access\")",
		"--openai-intent-responses (env PROXY_OPENAI_INTENT_RESPONSES) (default \"responses-proxy\")",
		"built in vscode/1.140.0; overrides the broker's upstream profile", "--editor-plugin-version (env PROXY_EDITOR_PLUGIN_VERSION)",
		"--github-api-version (env PROXY_GITHUB_API_VERSION)", "built in 2026-08-01",
		"--allowed-api-hosts (env PROXY_ALLOWED_API_HOSTS) (default \".githubcopilot.com\")", "--connect-to (env PROXY_CONNECT_TO)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "broker-key")
	if err := os.WriteFile(keyFile, []byte("broker-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badKeys := filepath.Join(dir, "keys")
	if err := os.WriteFile(badKeys, []byte("no-colon-here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--admin-addr", "127.0.0.1:0"}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"exposed without keys (flag)", []string{"--addr", "0.0.0.0:0"}, nil, "--keys-file"},
		{"exposed without keys (env)", nil, map[string]string{"PROXY_ADDR": "0.0.0.0:0"}, "--keys-file"},
		{"broker key twice", []string{"--addr", "127.0.0.1:0", "--broker-key-file", keyFile}, map[string]string{"PROXY_BROKER_KEY": "x"}, "not both"},
		{"missing broker key file", []string{"--addr", "127.0.0.1:0", "--broker-key-file", filepath.Join(dir, "none")}, nil, "broker key"},
		{"bad keys file", []string{"--addr", "127.0.0.1:0", "--keys-file", badKeys}, nil, "line 1"},
		{"bad log format", []string{"--addr", "127.0.0.1:0", "--log-format", "xml"}, nil, "log format"},
		{"bad api url", []string{"--addr", "127.0.0.1:0", "--copilot-api-url", "ftp://x"}, nil, "copilot API URL"},
		{"bad connect-to (flag)", []string{"--addr", "127.0.0.1:0", "--connect-to", "api.githubcopilot.com:443:127.0.0.1"}, nil, "HOST:PORT:ADDR:PORT2"},
		{"bad connect-to (env)", []string{"--addr", "127.0.0.1:0"}, map[string]string{"PROXY_CONNECT_TO": "a:443:b:1,a:443:c:2"}, "given twice"},
		{"empty allowed hosts", []string{"--addr", "127.0.0.1:0", "--allowed-api-hosts", " , "}, nil, "--allowed-api-hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), append(append([]string{}, base...), tt.args...), func(k string) string { return tt.env[k] }, &out, &out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("run(%q) = %v; want an error containing %q", tt.args, err, tt.wantErr)
			}
			if strings.Contains(out.String(), "broker-key-0123456789") || (err != nil && strings.Contains(err.Error(), "broker-key-0123456789")) {
				t.Errorf("the broker key was printed")
			}
		})
	}
}

// TestServeFlagsLists checks that --connect-to repeats and splits on commas,
// after PROXY_CONNECT_TO, and that --allowed-api-hosts defaults to
// .githubcopilot.com.
func TestServeFlagsLists(t *testing.T) {
	var cfg server.Config
	var o options
	fs := flag.NewFlagSet("proxy serve", flag.ContinueOnError)
	serveFlags(fs, &cfg, &o)
	env := map[string]string{"PROXY_CONNECT_TO": "a:443:b:1"}
	if err := ops.ParseFlags(fs, "PROXY", []string{"--connect-to", "c:443:d:2, e:443:f:3", "--connect-to", "g:443:h:4"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if want := (listFlag{"a:443:b:1", "c:443:d:2", "e:443:f:3", "g:443:h:4"}); !slices.Equal(o.connectTo, want) {
		t.Errorf("--connect-to = %q; want %q", o.connectTo, want)
	}
	if o.allowedAPIHosts != ".githubcopilot.com" {
		t.Errorf("--allowed-api-hosts default = %q; want .githubcopilot.com", o.allowedAPIHosts)
	}
}

// lineWriter signals the first complete line written to it.
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	line chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if i := bytes.IndexByte(w.buf.Bytes(), '\n'); i >= 0 && w.line != nil {
		w.line <- w.buf.String()[:i]
		w.line = nil
	}
	return len(p), nil
}

func TestServeRunsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan string, 1) // read from here, not stdout.line, which Write clears under its lock
	stdout := &lineWriter{line: lines}
	env := map[string]string{"PROXY_BROKER_KEY": "broker-key-0123456789", "PROXY_LOG_LEVEL": "warn"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--broker-addr", "127.0.0.1:1"},
			func(k string) string { return env[k] }, stdout, io.Discard)
	}()
	var line string
	select {
	case line = <-lines:
	case err := <-done:
		t.Fatalf("run() returned early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("run() printed no listening line")
	}
	m := regexp.MustCompile(`admin=(\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("listening line %q; want admin=ADDR", line)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		resp, err := http.Get("http://" + m[1] + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d; want %d (no broker, so no token)", path, resp.StatusCode, want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() after cancel = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run() did not return after cancel")
	}
}

func TestGCPercent(t *testing.T) {
	tests := []struct {
		flag    int
		env     string
		want    int
		wantSet bool
	}{
		{defaultGCPercent, "", defaultGCPercent, true},
		{400, "", 400, true},
		{0, "", 0, false},
		{400, "100", 0, false},
		{400, "off", 0, false},
	}
	for _, tt := range tests {
		got, set := gcPercent(tt.flag, tt.env)
		if got != tt.want || set != tt.wantSet {
			t.Errorf("gcPercent(%d, %q) = %d, %v; want %d, %v", tt.flag, tt.env, got, set, tt.want, tt.wantSet)
		}
	}
}
