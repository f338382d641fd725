package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil/pgtest"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// pg is the PostgreSQL server of the store tests (pgtest: skipped without
// the binaries, except in CI).
var pg *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m, &pg)) }

// Broker keys of the tests.
const (
	testKey  = "proxy-key-0123456789abcdef"
	otherKey = "other-key-0123456789abcdef"
)

func testKeys(t *testing.T) *keys.Set {
	t.Helper()
	set, err := keys.Parse(strings.NewReader("proxy:" + testKey + "\nci:" + otherKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// env is a sandbox upstream with a broker in front of it.
type env struct {
	t   *testing.T
	sb  *sandbox.Running
	srv *Server
}

// fastTune makes the manager react in milliseconds instead of seconds.
func fastTune(mc *tokens.ManagerConfig) {
	mc.MinRefreshDelay = 50 * time.Millisecond
	mc.BackoffInitial = 20 * time.Millisecond
	mc.BackoffMax = 200 * time.Millisecond
	mc.MinForceInterval = 5 * time.Millisecond
}

// start runs a sandbox with sbCfg and a broker in front of it with cfg.
func start(t *testing.T, sbCfg sandbox.Config, cfg Config) *env {
	t.Helper()
	return startBroker(t, startSandbox(t, sbCfg), cfg)
}

func startSandbox(t *testing.T, cfg sandbox.Config) *sandbox.Running {
	t.Helper()
	sb, err := sandbox.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	return sb
}

// startBroker runs a broker on loopback port 0 with cfg (GitHub URL and
// token from sb when unset, a fast-reacting manager) until cleanup.
func startBroker(t *testing.T, sb *sandbox.Running, cfg Config) *env {
	t.Helper()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if cfg.GitHubAPIURL == "" {
		cfg.GitHubAPIURL = sb.URL
	}
	if cfg.GitHubToken.IsZero() && cfg.GitHubTokenFile == "" {
		cfg.GitHubToken = sb.GitHubToken()
	}
	if cfg.Tune == nil {
		cfg.Tune = fastTune
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 5 * time.Second
	}
	srv, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close() = %v; want nil", err)
		}
	})
	return &env{t: t, sb: sb, srv: srv}
}

// conn dials the broker's gRPC port.
func (e *env) conn(opts ...grpc.DialOption) *grpc.ClientConn {
	e.t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+e.srv.Addrs().GRPC, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (e *env) client() brokerv1.TokenBrokerServiceClient {
	return brokerv1.NewTokenBrokerServiceClient(e.conn())
}

// withKey adds the broker key to ctx's outgoing metadata.
func withKey(ctx context.Context, key string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// getValid waits for the broker to hold a VALID token and returns it.
func (e *env) getValid(ctx context.Context, c brokerv1.TokenBrokerServiceClient) *brokerv1.Token {
	e.t.Helper()
	resp, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{})
	if err != nil {
		e.t.Fatalf("GetToken() = %v; want a token", err)
	}
	return resp.GetToken()
}

// httpClient returns a client whose idle connections close at cleanup.
func httpClient(t *testing.T) *http.Client {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// adminStatus returns the HTTP status of GET path on the admin listener.
func adminStatus(t *testing.T, e *env, path string) int {
	t.Helper()
	resp, err := httpClient(t).Get("http://" + e.srv.Addrs().Admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func benchKeys(b *testing.B) *keys.Set {
	set, err := keys.Parse(strings.NewReader("proxy:" + testKey + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	return set
}

func dialBench(b *testing.B, e *env) *grpc.ClientConn {
	cc, err := grpc.NewClient("passthrough:///"+e.srv.Addrs().GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cc.Close() })
	return cc
}
