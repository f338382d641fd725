package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "gh-token")
	env := map[string]string{"SANDBOX_ADDR": "127.0.0.1:0", "SANDBOX_TOKEN_LIFETIME": "90s"}
	var stdout, stderr testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--github-token-file", tokenFile, "--github-token", "gho_fromflag"},
			func(k string) string { return env[k] }, &stdout, &stderr)
	}()

	re := regexp.MustCompile(`(?s)listening on (http://127\.0\.0\.1:\d+)\n.*github token \(fake\): (\S+)\n.*admin api: `)
	var m []string
	deadline := time.Now().Add(10 * time.Second)
	for m = re.FindStringSubmatch(stdout.String()); m == nil; m = re.FindStringSubmatch(stdout.String()) {
		select {
		case err := <-done:
			t.Fatalf("run() = %v before printing its URL; stderr %s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no URL printed; stdout %q", stdout.String())
		}
	}
	url, token := m[1], m[2]
	if token != "gho_fromflag" {
		t.Errorf("printed token %q; want gho_fromflag", token)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil || string(b) != token+"\n" {
		t.Errorf("token file = %q, %v; want %q and a newline (as broker login writes it)", b, err, token)
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", url+"/copilot_internal/v2/token", nil)
	req.Header.Set("Authorization", "token "+token)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"refresh_in":1500`) || !strings.Contains(string(body), `"api":"`+url+`"`) {
		t.Errorf("exchange = %d %s; want 200 with refresh_in 1500 and api %s", resp.StatusCode, body, url)
	}
	tr.CloseIdleConnections()

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

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown flag", []string{"--nope"}, nil},
		{"bad duration env", nil, map[string]string{"SANDBOX_TOKEN_LIFETIME": "soon"}},
		{"bad int env", nil, map[string]string{"SANDBOX_CHUNKS": "many"}},
		{"extra argument", []string{"extra"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			if err == nil {
				t.Errorf("run(%q, %v) = nil; want an error", tt.args, tt.env)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	o, err := parse(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := options{addr: "127.0.0.1:8787", lifetime: 30 * time.Minute, refreshIn: 1500 * time.Second,
		chunks: 5, chunkDelay: 50 * time.Millisecond, sku: "monthly_subscriber",
		minPlugin: "0.30.0", betas: "interleaved-thinking-*,context-management-*,advanced-tool-use-*,extended-cache-ttl-*"}
	if o != want {
		t.Errorf("parse() defaults = %+v; want %+v", o, want)
	}
}

func TestParseEnvAndHelp(t *testing.T) {
	env := map[string]string{"SANDBOX_ADDR": "127.0.0.1:9999", "SANDBOX_CHUNKS": "7", "SANDBOX_TOKEN_LIFETIME": "10s"}
	o, err := parse([]string{"--chunks", "9"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.addr != "127.0.0.1:9999" || o.lifetime != 10*time.Second || o.chunks != 9 {
		t.Errorf("parse() = %+v; want addr and lifetime from the environment, chunks 9 from the flag", o)
	}
	var usage strings.Builder
	if err := run(context.Background(), []string{"--help"}, func(string) string { return "" }, io.Discard, &usage); err != nil {
		t.Errorf("run(--help) = %v; want nil", err)
	}
	if !strings.Contains(usage.String(), "SANDBOX_CHUNK_DELAY") {
		t.Errorf("usage = %q; want every flag's environment variable", usage.String())
	}
}

// TestRunTLS serves HTTPS with SANDBOX_TLS_CERT/KEY (HTTP/2 offered) and puts
// --api-url into the tokens' endpoints.api.
func TestRunTLS(t *testing.T) {
	pki := testutil.NewPKI(t, "127.0.0.1", "api.sandbox.githubcopilot.com")
	env := map[string]string{"SANDBOX_ADDR": "127.0.0.1:0", "SANDBOX_TLS_CERT": pki.CertFile, "SANDBOX_TLS_KEY": pki.KeyFile}
	var stdout, stderr testutil.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--github-token", "gho_tls", "--api-url", "https://api.sandbox.githubcopilot.com/"},
			func(k string) string { return env[k] }, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`listening on (https://127\.0\.0\.1:\d+)\n`)
	var m []string
	deadline := time.Now().Add(10 * time.Second)
	for m = re.FindStringSubmatch(stdout.String()); m == nil; m = re.FindStringSubmatch(stdout.String()) {
		select {
		case err := <-done:
			t.Fatalf("run() = %v before printing its URL; stderr %s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no https URL printed; stdout %q", stdout.String())
		}
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	req, _ := http.NewRequest("GET", m[1]+"/copilot_internal/v2/token", nil)
	req.Header.Set("Authorization", "token gho_tls")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("exchange over TLS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(string(body), `"api":"https://api.sandbox.githubcopilot.com"`) {
		t.Errorf("exchange = %d %s %s; want 200 over HTTP/2 with api https://api.sandbox.githubcopilot.com", resp.StatusCode, resp.Proto, body)
	}
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

func TestRunTLSErrors(t *testing.T) {
	pki := testutil.NewPKI(t, "127.0.0.1")
	for _, args := range [][]string{
		{"--tls-cert", pki.CertFile},
		{"--tls-key", pki.KeyFile},
		{"--tls-cert", pki.CertFile, "--tls-key", pki.CAFile},
		{"--tls-cert", pki.CertFile + ".missing", "--tls-key", pki.KeyFile},
	} {
		if err := run(context.Background(), append([]string{"--addr", "127.0.0.1:0"}, args...), func(string) string { return "" }, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) = nil; want an error", args)
		}
	}
}
