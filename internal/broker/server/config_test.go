package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/ops"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
)

func TestStartRefusesExposureWithoutKeys(t *testing.T) {
	tok := secret.New("gho_x")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"grpc on all interfaces", Config{GRPCAddr: "0.0.0.0:0", HTTPAddr: "127.0.0.1:0", GitHubToken: tok}},
		{"http on all interfaces", Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: ":0", GitHubToken: tok}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := Start(context.Background(), tt.cfg)
			if err == nil {
				_ = srv.Close()
				t.Fatal("Start() = nil; want a refusal")
			}
			if !errors.Is(err, ops.ErrNoAuthBeyondLoopback) {
				t.Errorf("Start() = %v; want ErrNoAuthBeyondLoopback", err)
			}
			for _, fix := range []string{"--keys-file", "--insecure-no-auth", "127.0.0.1"} {
				if !strings.Contains(err.Error(), fix) {
					t.Errorf("Start() error %q does not mention %s", err, fix)
				}
			}
		})
	}
}

func TestStartValidates(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no token", Config{}, "GITHUB_TOKEN"},
		{"cert without key", Config{GitHubToken: secret.New("x"), TLSCertFile: "c.pem"}, "--tls-key"},
		{"client CA without cert", Config{GitHubToken: secret.New("x"), TLSClientCAFile: "ca.pem"}, "--tls-client-ca"},
		{"missing token file", Config{GitHubTokenFile: filepath.Join(t.TempDir(), "none")}, "no such file"},
		{"negative stream age", Config{GitHubToken: secret.New("x"), MaxStreamAge: -time.Second}, "max-stream-age"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, err := Start(context.Background(), tt.cfg)
			if err == nil {
				_ = srv.Close()
				t.Fatalf("Start() = nil; want an error mentioning %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start() = %v; want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestTokenFileChangeAndReload(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{})
	path := filepath.Join(t.TempDir(), "github-token")
	if err := os.WriteFile(path, []byte(sb.GitHubToken().Reveal()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := startBroker(t, sb, Config{GitHubTokenFile: path, TokenFilePoll: 20 * time.Millisecond})
	ctx := timeout(t, 20*time.Second)
	c := e.client()
	gen := e.getValid(ctx, c).GetGeneration()

	waitStatus := func(want tokens.Status) tokens.State {
		t.Helper()
		for ctx.Err() == nil {
			if st := e.srv.Snapshot(); st.Status == want {
				return st
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("status = %v; want %v", e.srv.Snapshot().Status, want)
		return tokens.State{}
	}

	// Revoked upstream: the broker finds out and stops.
	sb.RevokeGitHubToken(sb.GitHubToken())
	if _, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen}); err == nil {
		t.Fatal("RefreshToken() with a revoked credential = nil; want an error")
	}
	waitStatus(tokens.StatusRejected)

	// A new token in the file lifts REJECTED.
	fresh := secret.New("gho_fresh_token_for_the_file_test")
	sb.AddGitHubToken(fresh)
	if err := os.WriteFile(path, []byte(fresh.Reveal()), 0o600); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(tokens.StatusValid)
	if st.Generation != gen+1 {
		t.Errorf("generation after the file changed = %d; want %d", st.Generation, gen+1)
	}

	// Rejected again; the operator restores the account and sends SIGHUP
	// (Reload) without changing the file: the same credential is retried.
	// The sandbox records an exchange after answering it, so its counters
	// are waited for rather than read at once.
	waitExchanges := func(status, n int) {
		t.Helper()
		for ctx.Err() == nil {
			if sb.Stats().Exchanges[status] >= n {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("sandbox exchanges answered %d = %d; want %d", status, sb.Stats().Exchanges[status], n)
	}
	refusedBefore := sb.Stats().Exchanges[http.StatusUnauthorized]
	sb.RevokeGitHubToken(fresh)
	if _, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: st.Generation}); err == nil {
		t.Fatal("RefreshToken() with a revoked credential = nil; want an error")
	}
	waitStatus(tokens.StatusRejected)
	waitExchanges(http.StatusUnauthorized, refusedBefore+1) // the refusal itself
	refused, ok := sb.Stats().Exchanges[http.StatusUnauthorized], sb.Stats().Exchanges[http.StatusOK]
	sb.AddGitHubToken(fresh)
	e.srv.Reload()
	if st := waitStatus(tokens.StatusValid); st.Generation != gen+2 {
		t.Errorf("generation after Reload = %d; want %d", st.Generation, gen+2)
	}
	waitExchanges(http.StatusOK, ok+1)
	// While REJECTED with an unchanged file the broker asked nothing (an
	// exchange with the revoked credential would have been refused); over
	// longer stretches the credfile and tokens tests show it on a fake clock.
	if got := sb.Stats().Exchanges[http.StatusUnauthorized]; got != refused {
		t.Errorf("refused exchanges while REJECTED = %d; want 0", got-refused)
	}
	if got := sb.Stats().Exchanges[http.StatusOK]; got != ok+1 {
		t.Errorf("exchanges after Reload = %d; want 1", got-ok)
	}
}

// TestStartReleasesWhatItBuiltOnFailure: a listener that cannot be bound
// fails Start after the token file watcher was set up and the other
// listeners were bound; Start names the address, and nothing keeps running
// (goleak, in TestMain).
func TestStartReleasesWhatItBuiltOnFailure(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("gho_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := Start(t.Context(), Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: taken.Addr().String(),
		GitHubTokenFile: file,
	})
	if err == nil {
		_ = srv.Close()
		t.Fatal("Start() = nil; want the admin address's listen error")
	}
	if !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("Start() = %v; want it to name %s", err, taken.Addr())
	}
}
