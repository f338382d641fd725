package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/broker/server"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

const (
	cliAdminKey = "admin-key-0123456789abcdef"
	cliProxyKey = "proxy-key-0123456789abcdef"
)

// keysBroker runs a broker with an admin key and a state directory.
func keysBroker(t *testing.T) string {
	t.Helper()
	sb, err := sandbox.Start(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	set, err := keys.Parse(strings.NewReader("ops:" + cliAdminKey + ":*:admin\nproxy:" + cliProxyKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), server.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		GitHubAPIURL: sb.URL, GitHubToken: sb.GitHubToken(), Keys: set, StateDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addrs().GRPC
}

// keysRunner runs `broker keys ...` against addr with the given admin key.
func keysRunner(t *testing.T, addr, key string) func(args ...string) (string, string, error) {
	return func(args ...string) (string, string, error) {
		t.Helper()
		var out, errb testutil.SyncBuffer
		err := run(context.Background(), append(append([]string{"keys"}, args...), "--broker-addr", addr),
			env(map[string]string{"BROKER_ADMIN_KEY": key}), nil, &out, &errb)
		return out.String(), errb.String(), err
	}
}

func TestKeysCLI(t *testing.T) {
	addr := keysBroker(t)
	keysCLI := keysRunner(t, addr, cliAdminKey)

	out, _, err := keysCLI("create", "alice", "--models", "gpt-*,claude-sonnet-*", "--accounts", "*", "--expires", "90d")
	if err != nil {
		t.Fatalf("keys create = %v", err)
	}
	sec := strings.TrimSuffix(out, "\n")
	if strings.ContainsAny(sec, " \n\t") || len(sec) < 32 {
		t.Fatalf("keys create stdout = %q; want the secret alone", out)
	}

	out, _, err = keysCLI("list")
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "gpt-*,claude-sonnet-*") || !strings.Contains(out, "active") || strings.Contains(out, sec) {
		t.Fatalf("keys list = %q, %v", out, err)
	}
	if _, _, err := keysCLI("update", "alice", "--disable", "--expires", "never"); err != nil {
		t.Fatalf("keys update = %v", err)
	}
	if out, _, _ := keysCLI("list"); !strings.Contains(out, "disabled") || !strings.Contains(out, "never") {
		t.Errorf("keys list after update = %q", out)
	}

	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, []byte("bob:bob-secret-0123456789abcdef:a,b\nalice:alice-other-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := keysCLI("import", file)
	if err != nil || !strings.Contains(out, "imported 1 keys") || !strings.Contains(errOut, `skipped "alice"`) {
		t.Fatalf("keys import = %q %q, %v", out, errOut, err)
	}
	if _, _, err := keysCLI("revoke", "bob"); err != nil {
		t.Fatalf("keys revoke = %v", err)
	}
	if out, _, _ := keysCLI("list"); !strings.Contains(out, "revoked") {
		t.Errorf("keys list after revoke = %q", out)
	}

	for _, tt := range []struct {
		name string
		args []string
		key  string
		want string
	}{
		{"wrong key", []string{"list"}, "wrong-key-0123456789abcdef", "refused the admin key"},
		{"proxy key", []string{"list"}, cliProxyKey, "may not manage keys"},
		{"no key", []string{"list"}, "", "no admin key"},
		{"unknown name", []string{"revoke", "carol"}, cliAdminKey, `no key named "carol"`},
		{"duplicate", []string{"create", "alice"}, cliAdminKey, `"alice" exists already`},
		{"bad glob", []string{"create", "dave", "--models", "gpt 4"}, cliAdminKey, "--models"},
		{"bad expiry", []string{"create", "dave", "--expires", "soon"}, cliAdminKey, "--expires"},
		{"revoked", []string{"update", "bob", "--enable"}, cliAdminKey, "revoked"},
		{"no change", []string{"update", "alice"}, cliAdminKey, "nothing to change"},
		{"missing name", []string{"create"}, cliAdminKey, "want one NAME"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := keysRunner(t, addr, tt.key)(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) || out != "" {
				t.Errorf("keys %v = %q, %v; want an error saying %q and nothing on stdout", tt.args, out, err, tt.want)
			}
		})
	}
}

func TestKeysCLIUnreachable(t *testing.T) {
	var out, errb testutil.SyncBuffer
	err := run(context.Background(), []string{"keys", "list", "--broker-addr", "127.0.0.1:1", "--timeout", "2s"},
		env(map[string]string{"BROKER_ADMIN_KEY": cliAdminKey}), nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the broker at 127.0.0.1:1") {
		t.Errorf("keys list against nothing = %v", err)
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"90d": now.AddDate(0, 0, 90), "12h": now.Add(12 * time.Hour), "2027-01-31": time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC),
		"2027-01-31T10:00:00Z": time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseExpiry(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0d", "-1h", "soon", "d"} {
		if _, err := parseExpiry(bad, now); err == nil {
			t.Errorf("parseExpiry(%q) succeeded", bad)
		}
	}
}
