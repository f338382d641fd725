package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
)

// brokerSIGTERMExitBound is how soon a broker must exit after SIGTERM with
// its watch streams open: "a few seconds", and well under the default
// --shutdown-timeout (10 s), so a broker that waits the streams out fails.
// A broker built with -race spends 1 s more at exit (the race runtime's
// atexit_sleep_ms); its own shutdown takes tens of milliseconds.
const brokerSIGTERMExitBound = 5 * time.Second

// TestBrokerSIGTERMWithOpenWatchStreams sends SIGTERM to a broker holding
// 1,000 gRPC WatchToken streams over 10 connections, a REST watch stream
// and a grpc.health.v1 Watch. The broker must exit 0 within
// brokerSIGTERMExitBound; every gRPC watch stream must end with OK (io.EOF,
// not a transport error), the REST stream must end with a complete chunked
// body holding only token lines, and the health watcher must hear
// NOT_SERVING before its stream ends with OK.
func TestBrokerSIGTERMWithOpenWatchStreams(t *testing.T) {
	t.Parallel()
	const conns, perConn = 10, 100
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 25 * time.Minute, chunks: 1})
	br := startBroker(t, sb)
	br.validToken(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	kctx := br.withKey(ctx)

	// gRPC watch streams, each past its first message.
	streams := make([][]grpc.ServerStreamingClient[brokerv1.WatchTokenResponse], conns)
	var opening sync.WaitGroup
	errc := make(chan error, conns)
	for c := range conns {
		cc := br.dial(t)
		opening.Go(func() {
			client := brokerv1.NewTokenBrokerServiceClient(cc)
			for range perConn {
				s, err := client.WatchToken(kctx, &brokerv1.WatchTokenRequest{})
				if err == nil {
					_, err = s.Recv()
				}
				if err != nil {
					errc <- err
					return
				}
				streams[c] = append(streams[c], s)
			}
		})
	}
	opening.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("opening a watch stream: %v", err)
	}

	// The REST watch stream, past its first line.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, br.httpURL+"/v1/token:watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+br.key)
	resp, err := br.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/token:watch = %s; want 200", resp.Status)
	}
	rest := bufio.NewReader(resp.Body)
	if _, err := rest.ReadBytes('\n'); err != nil {
		t.Fatalf("reading the first REST watch line: %v", err)
	}

	// A health watcher, as a load balancer would hold, with no key.
	health, err := healthpb.NewHealthClient(br.dial(t)).Watch(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := health.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch(\"\") first message = %v, %v; want SERVING", m.GetStatus(), err)
	}

	n := 0
	for _, ss := range streams {
		n += len(ss)
	}
	pid := br.cmd.Process.Pid
	br.signal(t, syscall.SIGTERM)
	termAt := time.Now()

	// Every stream must end by itself (the broker tells it to), well within
	// the test's context.
	var ended sync.WaitGroup
	var mu sync.Mutex
	var bad []error
	var lastEnd time.Duration
	note := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		lastEnd = max(lastEnd, time.Since(termAt))
		if err != nil && len(bad) < 5 {
			bad = append(bad, err)
		}
	}
	for _, ss := range streams {
		ended.Go(func() {
			for _, s := range ss {
				note(endOfWatch(s))
			}
		})
	}
	var restErr, healthErr error
	ended.Go(func() { restErr = endOfRESTWatch(rest) })
	ended.Go(func() { healthErr = endOfHealthWatch(health) })

	exitErr := br.wait(t, 2*brokerSIGTERMExitBound)
	exitedAfter := time.Since(termAt)
	ended.Wait()
	if exitErr != nil {
		t.Errorf("broker exit after SIGTERM: %v; want status 0", exitErr)
	}
	if exitedAfter > brokerSIGTERMExitBound {
		t.Errorf("broker (pid %d) exited %s after SIGTERM with %d watch streams; want within %s", pid, exitedAfter, n, brokerSIGTERMExitBound)
	}
	for _, err := range bad {
		t.Errorf("gRPC watch stream at SIGTERM: %v; want it to end with OK (io.EOF)", err)
	}
	if restErr != nil {
		t.Errorf("REST watch stream at SIGTERM: %v; want a clean end", restErr)
	}
	if healthErr != nil {
		t.Errorf("health Watch at SIGTERM: %v", healthErr)
	}
	t.Logf("SIGTERM with %d gRPC watch streams (%d connections), 1 REST watch, 1 health watch: streams ended within %s, exit status 0 after %s",
		n, conns, lastEnd.Round(time.Millisecond), exitedAfter.Round(time.Millisecond))
	for _, l := range strings.Split(br.logs(), "\n") {
		if strings.Contains(l, "shutting down") || strings.Contains(l, "stopped") {
			t.Log("broker:", l)
		}
	}
}

// endOfWatch reads s to its end: nil when it ends with OK.
func endOfWatch(s grpc.ServerStreamingClient[brokerv1.WatchTokenResponse]) error {
	for {
		if _, err := s.Recv(); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// endOfRESTWatch reads a /v1/token:watch body to its end: nil when every
// line is a result and the chunked body ends properly (io.EOF, not
// io.ErrUnexpectedEOF or a reset).
func endOfRESTWatch(r *bufio.Reader) error {
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var msg struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if jerr := json.Unmarshal(line, &msg); jerr != nil || msg.Error != nil || msg.Result == nil {
				return errors.New("line " + string(line) + ": want a result line")
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// endOfHealthWatch reads a health Watch to its end: nil when NOT_SERVING
// came before the stream ended with OK.
func endOfHealthWatch(s grpc.ServerStreamingClient[healthpb.HealthCheckResponse]) error {
	last := healthpb.HealthCheckResponse_SERVING
	for {
		m, err := s.Recv()
		if err == io.EOF {
			if last != healthpb.HealthCheckResponse_NOT_SERVING {
				return errors.New("ended with OK, last status " + last.String() + "; want NOT_SERVING first")
			}
			return nil
		}
		if err != nil {
			return err
		}
		last = m.GetStatus()
	}
}

// TestBrokerSIGHUPLiftsRejected: the sandbox refuses the broker's Copilot
// access (403 no_copilot_access) and the broker reports REJECTED. Once access
// is restored the broker does not retry by itself, token file unchanged and
// polled every 500 ms: no exchange for 3 s. A SIGHUP, with the same file,
// makes one exchange and the token is VALID again in the same process.
func TestBrokerSIGHUPLiftsRejected(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, sandboxOpts{lifetime: 30 * time.Minute, refreshIn: 25 * time.Minute, chunks: 1})
	br := startBroker(t, sb, "--token-file-poll", "500ms", "--min-force-interval", "100ms")
	first := br.validToken(t)
	pid := br.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	client := brokerv1.NewTokenBrokerServiceClient(br.dial(t))
	kctx := br.withKey(ctx)

	// Copilot access withdrawn; a forced refresh meets it.
	sb.failExchanges(t, http.StatusForbidden)
	if _, err := client.RefreshToken(kctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: first.GetGeneration()}); err != nil {
		t.Logf("RefreshToken with access withdrawn: %v", err)
	}
	waitFor(t, 30*time.Second, "the broker to report REJECTED", func() bool {
		_, err := client.GetToken(kctx, &brokerv1.GetTokenRequest{})
		return status.Code(err) == codes.FailedPrecondition
	})
	waitFor(t, 5*time.Second, "grpc health of the API service NOT_SERVING when REJECTED", func() bool {
		return br.health(t, apiService) == healthpb.HealthCheckResponse_NOT_SERVING
	})

	// Access restored: nothing happens until the operator says so.
	sb.clearFaults(t)
	before := sb.stats(t).exchanges(0)
	const quiet = 3 * time.Second // six polls of the unchanged file
	time.Sleep(quiet)             // the assertion is that nothing happens meanwhile
	if after := sb.stats(t).exchanges(0); after != before {
		t.Errorf("exchanges in %s after access was restored, file unchanged, no SIGHUP = %d; want 0", quiet, after-before)
	}
	if _, err := client.GetToken(kctx, &brokerv1.GetTokenRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("GetToken() before SIGHUP = %v; want FAILED_PRECONDITION (still REJECTED)", err)
	}

	br.signal(t, syscall.SIGHUP)
	hupAt := time.Now()
	var tok *brokerv1.Token
	waitFor(t, 10*time.Second, "the token VALID after SIGHUP", func() bool {
		resp, err := client.GetToken(kctx, &brokerv1.GetTokenRequest{})
		tok = resp.GetToken()
		return err == nil && tok.GetStatus() == brokerv1.TokenStatus_TOKEN_STATUS_VALID
	})
	lifted := time.Since(hupAt)
	if tok.GetGeneration() <= first.GetGeneration() {
		t.Errorf("generation after SIGHUP = %d; want above %d", tok.GetGeneration(), first.GetGeneration())
	}
	if n := sb.stats(t).exchanges(0) - before; n != 1 {
		t.Errorf("exchanges made for the SIGHUP = %d; want 1", n)
	}
	waitFor(t, 5*time.Second, "grpc health of the API service SERVING after SIGHUP", func() bool {
		return br.health(t, apiService) == healthpb.HealthCheckResponse_SERVING
	})
	if br.exited() || br.cmd.Process.Pid != pid {
		t.Errorf("broker restarted or exited (pid %d, was %d); want the same process", br.cmd.Process.Pid, pid)
	}
	t.Logf("REJECTED lifted by SIGHUP in %s, same process (pid %d)", lifted.Round(time.Millisecond), pid)
}

// dial opens a gRPC connection to the broker, closed when the test ends.
func (b *brokerProc) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(b.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// withKey adds the broker key to ctx's outgoing gRPC metadata.
func (b *brokerProc) withKey(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+b.key)
}
