package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/broker/server"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestServeHelp(t *testing.T) {
	var out, errb testutil.SyncBuffer
	if err := run(context.Background(), []string{"serve", "--help"}, env(nil), nil, &out, &errb); err != nil {
		t.Fatalf("run(serve --help) = %v; want nil", err)
	}
	help := errb.String()
	for _, want := range []string{
		`--grpc-addr (env BROKER_GRPC_ADDR) (default "127.0.0.1:50051")`,
		`--http-addr (env BROKER_HTTP_ADDR) (default "127.0.0.1:8080")`,
		`--admin-addr (env BROKER_ADMIN_ADDR) (default "127.0.0.1:8081")`,
		`--github-api-url (env BROKER_GITHUB_API_URL) (default "https://api.github.com")`,
		`--github-token-file (env BROKER_GITHUB_TOKEN_FILE)`,
		`--keys-file (env BROKER_KEYS_FILE)`,
		`--insecure-no-auth (env BROKER_INSECURE_NO_AUTH)`,
		`--tls-cert (env BROKER_TLS_CERT)`, `--tls-key (env BROKER_TLS_KEY)`, `--tls-client-ca (env BROKER_TLS_CLIENT_CA)`,
		`--log-level (env BROKER_LOG_LEVEL) (default "info")`,
		`--log-format (env BROKER_LOG_FORMAT) (default "auto")`,
		`--max-stream-age (env BROKER_MAX_STREAM_AGE) (default "30m0s")`,
		// The identity flags default to the upstream profile's values,
		// whose built-in default the help names.
		`--editor-version (env BROKER_EDITOR_VERSION)`, `built in vscode/1.140.0`,
		`--editor-plugin-version (env BROKER_EDITOR_PLUGIN_VERSION)`, `built in copilot-chat/0.68.0`,
		`--user-agent (env BROKER_USER_AGENT)`, `built in GitHubCopilotChat/0.68.0`,
		`--exchange-api-version (env BROKER_EXCHANGE_API_VERSION)`, `built in 2025-04-01`,
		`--upstream-profile (env BROKER_UPSTREAM_PROFILE)`, `--upstream-profile-poll (env BROKER_UPSTREAM_PROFILE_POLL) (default "500ms")`,
		"GITHUB_TOKEN",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
}

func TestServeRefusesAllInterfacesWithoutKeys(t *testing.T) {
	var out, errb testutil.SyncBuffer
	err := run(context.Background(), []string{"serve", "--grpc-addr", "0.0.0.0:50051"},
		env(map[string]string{"GITHUB_TOKEN": "gho_x"}), nil, &out, &errb)
	if err == nil {
		t.Fatal("run(serve --grpc-addr 0.0.0.0:50051) = nil; want a refusal")
	}
	for _, fix := range []string{"--keys-file", "--insecure-no-auth", "127.0.0.1"} {
		if !strings.Contains(err.Error(), fix) {
			t.Errorf("error %q does not say how to fix it (%s)", err, fix)
		}
	}
	// The environment works the same as the flag.
	err = run(context.Background(), []string{"serve"},
		env(map[string]string{"GITHUB_TOKEN": "gho_x", "BROKER_HTTP_ADDR": "0.0.0.0:8080"}), nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "0.0.0.0:8080") {
		t.Errorf("run(serve) with BROKER_HTTP_ADDR=0.0.0.0:8080 = %v; want a refusal naming it", err)
	}
}

func TestServeNeedsGitHubToken(t *testing.T) {
	var out, errb testutil.SyncBuffer
	err := run(context.Background(), []string{"serve"}, env(nil), nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "broker login") {
		t.Errorf("run(serve) without a token = %v; want an error pointing at broker login", err)
	}
}

func TestServeAndShutdown(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json"},
			env(map[string]string{"GITHUB_TOKEN": sb.GitHubToken().Reveal(), "BROKER_GITHUB_API_URL": sb.URL}), nil, &out, &errb)
	}()
	var httpAddr string
	for deadline := time.Now().Add(10 * time.Second); httpAddr == "" && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, f := range strings.Fields(out.String()) {
			if a, ok := strings.CutPrefix(f, "http="); ok {
				httpAddr = a
			}
		}
	}
	if httpAddr == "" {
		t.Fatalf("no listening line on stdout: %q", out.String())
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + httpAddr + "/v1/token")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "TOKEN_STATUS_VALID") {
		t.Errorf("GET /v1/token = %d %s; want 200 VALID", resp.StatusCode, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run(serve) after cancel = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run(serve) did not return after cancel")
	}
	if logs := errb.String(); strings.Contains(logs, sb.GitHubToken().Reveal()) || !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("logs leak the GitHub token or lack the stop line:\n%s", logs)
	}
}

func TestLogin(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{DeviceInterval: time.Millisecond, DeviceAutoApproveAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	out := filepath.Join(t.TempDir(), "github-token")
	var stdout, stderr testutil.SyncBuffer
	args := []string{"login", "--github-url", sb.URL, "--out", out}
	if err := run(context.Background(), args, env(nil), nil, &stdout, &stderr); err != nil {
		t.Fatalf("run(login) = %v; stderr %s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 || !strings.HasPrefix(tok, "gho_") {
		t.Errorf("token file mode %v, token prefix %q; want 0600, gho_", fi.Mode().Perm(), tok[:min(4, len(tok))])
	}
	printed := stdout.String() + stderr.String()
	if strings.Contains(printed, tok) {
		t.Error("login printed the token")
	}
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	var sawURL, sawCode bool
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		sawURL = sawURL || line == sb.URL+"/login/device"
		sawCode = sawCode || (len(line) == 9 && line[4] == '-')
	}
	if !sawURL || !sawCode {
		t.Errorf("login output lacks the verification URL or the code:\n%s", stdout.String())
	}

	// A second login refuses to overwrite, before any device flow.
	before := len(sb.DeviceCodes())
	err = run(context.Background(), args, env(nil), nil, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("run(login) over an existing file = %v; want a refusal naming --force", err)
	}
	if after := len(sb.DeviceCodes()); after != before {
		t.Errorf("device codes asked for by a refused login = %d; want 0", after-before)
	}
	if err := run(context.Background(), append(args, "--force"), env(nil), nil, &stdout, &stderr); err != nil {
		t.Errorf("run(login --force) = %v; want nil", err)
	}
	if b2, _ := os.ReadFile(out); string(b2) == string(b) {
		t.Error("login --force did not replace the token")
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errb testutil.SyncBuffer
	if err := run(context.Background(), []string{"frobnicate"}, env(nil), nil, &out, &errb); err == nil {
		t.Error("run(frobnicate) = nil; want an error")
	}
	if err := run(context.Background(), nil, env(nil), nil, &out, &errb); err == nil {
		t.Error("run() = nil; want an error")
	}
}

// TestServeKeepsSIGHUPDuringStartup sends SIGHUP to the process while the
// server is starting (inside the start function, before the listeners are
// bound): serve must already own the signal, keep it, and apply it (a
// reload) once the server exists. With the handler registered after Start,
// the signal would be lost (or, without the test's own handler, end the
// process).
func TestServeKeepsSIGHUPDuringStartup(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	// The test's own registration keeps a misrouted SIGHUP from killing the
	// test binary, and tells when the signal has been dispatched.
	seen := make(chan os.Signal, 1)
	signal.Notify(seen, syscall.SIGHUP)
	defer signal.Stop(seen)

	startWithHUP := func(ctx context.Context, cfg server.Config) (*server.Server, error) {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			return nil, err
		}
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			return nil, errors.New("SIGHUP not delivered within 10s")
		}
		return server.Start(ctx, cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testutil.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serveCmd(ctx, []string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json"},
			env(map[string]string{"GITHUB_TOKEN": sb.GitHubToken().Reveal(), "BROKER_GITHUB_API_URL": sb.URL}), &out, &errb, startWithHUP)
	}()
	const reloaded = `"msg":"SIGHUP: re-reading the GitHub token"`
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errb.String(), reloaded) && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("serve returned %v before applying the SIGHUP; logs:\n%s", err, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.Contains(errb.String(), reloaded) {
		t.Errorf("SIGHUP sent during startup was not applied within 10s; logs:\n%s", errb.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel = %v; want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
}

func TestLoginAccount(t *testing.T) {
	sb, err := sandbox.Start(sandbox.Config{DeviceInterval: time.Millisecond, DeviceAutoApproveAfter: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	dir := filepath.Join(t.TempDir(), "accounts")
	var stdout, stderr testutil.SyncBuffer
	args := []string{"login", "--github-url", sb.URL, "--account", "alice"}
	// The directory from the environment, as for every flag.
	if err := run(context.Background(), args, env(map[string]string{"BROKER_LOGIN_ACCOUNTS_DIR": dir}), nil, &stdout, &stderr); err != nil {
		t.Fatalf("run(login --account alice) = %v; stderr %s", err, stderr.String())
	}
	path := filepath.Join(dir, "alice")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("account file: %v, mode %v; want 0600", err, fi)
	}
	if !strings.Contains(stdout.String(), "--accounts-dir "+dir) {
		t.Errorf("login output does not name the accounts dir:\n%s", stdout.String())
	}
	for _, bad := range [][]string{
		{"login", "--github-url", sb.URL, "--account", "../etc", "--accounts-dir", dir},
		{"login", "--github-url", sb.URL, "--account", ".hidden", "--accounts-dir", dir},
		{"login", "--github-url", sb.URL, "--account", "bob"},
		{"login", "--github-url", sb.URL, "--accounts-dir", dir},
		{"login", "--github-url", sb.URL, "--account", "alice", "--accounts-dir", dir}, // exists, no --force
	} {
		before := len(sb.DeviceCodes())
		if err := run(context.Background(), bad, env(nil), nil, &stdout, &stderr); err == nil {
			t.Errorf("run(%q) = nil; want an error", bad)
		}
		if after := len(sb.DeviceCodes()); after != before {
			t.Errorf("run(%q) asked for a device code", bad)
		}
	}
}
