package server

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

func TestGetToken(t *testing.T) {
	e := start(t, sandbox.Config{SKU: "copilot_for_business"}, Config{})
	ctx := timeout(t, 10*time.Second)
	tok := e.getValid(ctx, e.client())
	if tok.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID || tok.GetValue() == "" || tok.GetGeneration() != 1 {
		t.Errorf("GetToken() = status %v, value set %v, generation %d; want VALID, a value, 1",
			tok.GetStatus(), tok.GetValue() != "", tok.GetGeneration())
	}
	if tok.GetApiBaseUrl() != e.sb.URL || tok.GetSku() != "copilot_for_business" || tok.GetEpoch() == "" {
		t.Errorf("GetToken() = api %q sku %q epoch %q; want %q, copilot_for_business, an epoch",
			tok.GetApiBaseUrl(), tok.GetSku(), tok.GetEpoch(), e.sb.URL)
	}
	if !tok.GetExpiresAt().AsTime().After(time.Now()) || tok.GetRefreshAt() == nil {
		t.Errorf("GetToken() expires_at = %v, refresh_at = %v; want a future expiry and a refresh time", tok.GetExpiresAt(), tok.GetRefreshAt())
	}
	_, err := e.client().GetToken(ctx, &brokerv1.GetTokenRequest{Account: "nobody"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("GetToken(account nobody) = %v; want NOT_FOUND", err)
	}
}

func TestGetTokenWaitsWhilePending(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{})
	sb.FailExchangesUntilCleared(sandbox.Fault{Status: 503}) // the broker stays PENDING
	e := startBroker(t, sb, Config{})
	c := e.client()

	short := timeout(t, 300*time.Millisecond)
	if _, err := c.GetToken(short, &brokerv1.GetTokenRequest{}); status.Code(err) != codes.DeadlineExceeded && status.Code(err) != codes.Unavailable {
		t.Fatalf("GetToken() while pending with a 300ms deadline = %v; want DEADLINE_EXCEEDED or UNAVAILABLE", err)
	}
	result := make(chan error, 1)
	go func() {
		_, err := c.GetToken(timeout(t, 10*time.Second), &brokerv1.GetTokenRequest{})
		result <- err
	}()
	// The sync point: the broker retried the exchange (and failed) twice
	// more while the call was open; the call must still be waiting.
	ctx := timeout(t, 10*time.Second)
	for before := sb.Stats().ExchangeCount(); sb.Stats().ExchangeCount() < before+2; {
		select {
		case err := <-result:
			t.Fatalf("GetToken() returned %v while still pending; want it to wait", err)
		case <-ctx.Done():
			t.Fatal("the broker made no further exchange attempts while pending")
		case <-time.After(5 * time.Millisecond): // polling the sandbox's counter
		}
	}
	select {
	case err := <-result:
		t.Fatalf("GetToken() returned %v while still pending; want it to wait", err)
	default:
	}
	e.sb.ClearFaults()
	if err := <-result; err != nil {
		t.Errorf("GetToken() after the upstream recovered = %v; want a token", err)
	}
}

// TestWatchTokenFirstMessageAtOnce: the first message is the current state,
// sent at once. The sandbox's token rotates only after minutes, so a broker
// that waited for a change would send nothing before the context ends.
func TestWatchTokenFirstMessageAtOnce(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{})
	ctx := timeout(t, 20*time.Second)
	c := e.client()
	current := e.getValid(ctx, c)
	stream, err := c.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("first WatchToken message: %v; want the current state at once", err)
	}
	if got := msg.GetToken(); got.GetGeneration() != current.GetGeneration() || got.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID {
		t.Errorf("first message = generation %d, %v; want the current generation %d, VALID", got.GetGeneration(), got.GetStatus(), current.GetGeneration())
	}
}

func TestWatchTokenRotations(t *testing.T) {
	// Tokens live an hour and ask to be refreshed after one: no scheduled
	// refresh and no expiry during the test, whatever the machine's speed.
	// Each rotation is a forced refresh of the generation held (the same
	// exchange and publication as a scheduled one).
	e := start(t, sandbox.Config{TokenLifetime: time.Hour, RefreshIn: time.Hour}, Config{})
	ctx := timeout(t, 20*time.Second)
	c := e.client()
	first := e.getValid(ctx, c) // also warms the connection

	stream, err := c.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	gen := msg.GetToken().GetGeneration()
	if gen < first.GetGeneration() {
		t.Errorf("first message generation = %d; want >= %d", gen, first.GetGeneration())
	}
	for range 3 {
		refreshed, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen})
		if err != nil {
			t.Fatalf("RefreshToken(generation %d) = %v", gen, err)
		}
		if g := refreshed.GetToken().GetGeneration(); g != gen+1 {
			t.Fatalf("RefreshToken(generation %d) answered generation %d; want %d", gen, g, gen+1)
		}
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv() = %v", err)
		}
		got := msg.GetToken()
		if got.GetGeneration() != gen+1 || got.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID || got.GetValue() == "" {
			t.Fatalf("rotation: generation %d status %v; want generation %d VALID with a value", got.GetGeneration(), got.GetStatus(), gen+1)
		}
		gen++
	}
}

func TestStalledWatcherDoesNotDelayOthers(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{})
	ctx := timeout(t, 60*time.Second)
	c := e.client()
	gen := e.getValid(ctx, c).GetGeneration()

	// The stalled watcher never reads. A fixed 64 KiB window (which turns
	// off window growth) fills after ~150 messages, so the broker's Send
	// to it blocks for most of the rotations below. Were that to hold up
	// the others, the healthy watcher would stop receiving after ~150
	// rotations and the test would fail at its context's deadline: no
	// wall-clock bound is needed.
	stalledConn := e.conn(grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	stalledCtx, stopStalled := context.WithCancel(ctx)
	defer stopStalled()
	if _, err := brokerv1.NewTokenBrokerServiceClient(stalledConn).WatchToken(stalledCtx, &brokerv1.WatchTokenRequest{}); err != nil {
		t.Fatal(err)
	}
	healthy, err := c.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for range 400 {
		resp, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen})
		if err != nil {
			t.Fatalf("RefreshToken(%d) = %v", gen, err)
		}
		want := resp.GetToken().GetGeneration()
		if want != gen+1 {
			t.Fatalf("RefreshToken(%d) generation = %d; want %d", gen, want, gen+1)
		}
		published := time.Now()
		for {
			msg, err := healthy.Recv()
			if err != nil {
				t.Fatalf("healthy Recv() = %v", err)
			}
			if msg.GetToken().GetGeneration() == want {
				break
			}
		}
		worst = max(worst, time.Since(published))
		gen = want
	}
	t.Logf("400 rotations with a stalled watcher: slowest delivery to the healthy one %v", worst)
}

func TestRefreshTokenSingleFlight(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{})
	ctx := timeout(t, 20*time.Second)
	c := e.client()
	gen := e.getValid(ctx, c).GetGeneration()
	e.sb.SetExchangeLatency(50 * time.Millisecond) // let all callers join one attempt
	before := e.sb.Stats().ExchangeCount()

	var wg sync.WaitGroup
	gens := make([]uint64, 50)
	errs := make([]error, 50)
	for i := range 50 {
		wg.Go(func() {
			resp, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen})
			gens[i], errs[i] = resp.GetToken().GetGeneration(), err
		})
	}
	wg.Wait()
	for i := range 50 {
		if errs[i] != nil || gens[i] != gen+1 {
			t.Fatalf("RefreshToken #%d = generation %d, %v; want %d, nil", i, gens[i], errs[i], gen+1)
		}
	}
	if n := e.sb.Stats().ExchangeCount() - before; n != 1 {
		t.Errorf("exchanges for 50 RefreshToken calls = %d; want 1", n)
	}
	// A report about a generation that is no longer current changes nothing.
	resp, err := c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen})
	if err != nil || resp.GetToken().GetGeneration() != gen+1 {
		t.Errorf("RefreshToken(old generation) = %d, %v; want %d, nil", resp.GetToken().GetGeneration(), err, gen+1)
	}
	if n := e.sb.Stats().ExchangeCount() - before; n != 1 {
		t.Errorf("exchanges after a stale RefreshToken = %d; want still 1", n)
	}
}

func TestAuthFailures(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{Keys: testKeys(t)})
	ctx := timeout(t, 20*time.Second)
	c := e.client()
	e.getValid(withKey(ctx, testKey), c)

	tests := []struct {
		name string
		md   []string // authorization values
		want codes.Code
	}{
		{"no key", nil, codes.Unauthenticated},
		{"empty bearer", []string{"Bearer "}, codes.Unauthenticated},
		{"wrong scheme", []string{"Basic " + testKey}, codes.Unauthenticated},
		{"no scheme", []string{testKey}, codes.Unauthenticated},
		{"unknown key", []string{"Bearer not-a-key-0123456789abcdef"}, codes.Unauthenticated},
		{"two values", []string{"Bearer " + testKey, "Bearer " + otherKey}, codes.Unauthenticated},
		{"valid key", []string{"Bearer " + testKey}, codes.OK},
		{"other valid key, lower-case scheme", []string{"bearer " + otherKey}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cctx := ctx
			for _, v := range tt.md {
				cctx = metadata.AppendToOutgoingContext(cctx, "authorization", v)
			}
			_, err := c.GetToken(cctx, &brokerv1.GetTokenRequest{})
			if status.Code(err) != tt.want {
				t.Errorf("GetToken() = %v; want %v", err, tt.want)
			}
			_, err = c.RefreshToken(cctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: 1 << 40})
			if status.Code(err) != tt.want {
				t.Errorf("RefreshToken() = %v; want %v", err, tt.want)
			}
			stream, err := c.WatchToken(cctx, &brokerv1.WatchTokenRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tt.want {
				t.Errorf("WatchToken() = %v; want %v", err, tt.want)
			}
		})
	}

	t.Run("health and reflection need no key", func(t *testing.T) {
		cc := e.conn()
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Errorf("Health.Check() without a key = %v; want nil", err)
		}
		rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err == nil {
			err = rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		}
		var resp *reflectionpb.ServerReflectionResponse
		if err == nil {
			resp, err = rs.Recv()
		}
		if err != nil || len(resp.GetListServicesResponse().GetService()) == 0 {
			t.Errorf("reflection ListServices without a key = %v, %v; want services", resp, err)
		}
		_ = rs.CloseSend()
	})
}

func TestHealth(t *testing.T) {
	sb := startSandbox(t, sandbox.Config{})
	sb.FailExchangesUntilCleared(sandbox.Fault{Status: 500}) // the broker stays PENDING
	e := startBroker(t, sb, Config{})
	ctx := timeout(t, 20*time.Second)
	hc := healthpb.NewHealthClient(e.conn())
	service := brokerv1.TokenBrokerService_ServiceDesc.ServiceName

	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("Health.Watch Recv() = %v", err)
		}
		return resp.GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health before the first token = %v; want NOT_SERVING", got)
	}
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: service}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check(%q) before the first token = %v, %v; want NOT_SERVING", service, resp.GetStatus(), err)
	}
	// The server itself is alive: a liveness probe must not restart it.
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf(`Check("") before the first token = %v, %v; want SERVING`, resp.GetStatus(), err)
	}
	if code := adminStatus(t, e, "/readyz"); code != 503 {
		t.Errorf("/readyz before the first token = %d; want 503", code)
	}

	e.sb.ClearFaults()
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health once VALID = %v; want SERVING", got)
	}
	if code := adminStatus(t, e, "/readyz"); code != 200 {
		t.Errorf("/readyz once VALID = %d; want 200", code)
	}

	// Revoke the credential and make the broker find out.
	e.sb.RevokeGitHubToken(e.sb.GitHubToken())
	c := e.client()
	gen := e.getValid(ctx, c).GetGeneration()
	_, err = c.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{RejectedGeneration: gen})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RefreshToken() with a revoked credential = %v; want FAILED_PRECONDITION", err)
	}
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after REJECTED = %v; want NOT_SERVING", got)
	}
	if _, err := c.GetToken(ctx, &brokerv1.GetTokenRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("GetToken() when REJECTED = %v; want FAILED_PRECONDITION", err)
	}
	if code := adminStatus(t, e, "/readyz"); code != 503 {
		t.Errorf("/readyz after REJECTED = %d; want 503", code)
	}
}

func TestShutdownWithThousandWatchers(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{})
	ctx := timeout(t, 60*time.Second)
	e.getValid(ctx, e.client())
	const conns, perConn = 10, 100
	var streams []grpc.ServerStreamingClient[brokerv1.WatchTokenResponse]
	for range conns {
		c := brokerv1.NewTokenBrokerServiceClient(e.conn())
		for range perConn {
			s, err := c.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
		}
	}
	begin := time.Now()
	if err := e.srv.Close(); err != nil {
		t.Fatalf("Close() = %v; want nil", err)
	}
	// Streams cut by the forced stop after ShutdownTimeout would end with
	// UNAVAILABLE; every one ending with OK below shows that the drain, not
	// the timeout, ended them. The time is logged, not bounded.
	t.Logf("shutdown with %d open watch streams took %v", len(streams), time.Since(begin))
	for i, s := range streams {
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("stream %d after shutdown: Recv() = %v; want io.EOF (ended with OK)", i, err)
		}
	}
}

// TestShutdownHealthWatchNotServing opens grpc.health.v1 Watch streams (the
// server as a whole and the API service) and closes the server: each stream
// must be told NOT_SERVING before it ends (the server cannot stop before its
// streams end), so a load balancer stops routing to it before the connection
// goes, and must then end with OK without holding the shutdown up until its
// timeout.
func TestShutdownHealthWatchNotServing(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{ShutdownTimeout: 20 * time.Second})
	ctx := timeout(t, 60*time.Second)
	e.getValid(ctx, e.client())
	hc := healthpb.NewHealthClient(e.conn())
	services := []string{"", brokerv1.TokenBrokerService_ServiceDesc.ServiceName}
	streams := make([]grpc.ServerStreamingClient[healthpb.HealthCheckResponse], len(services))
	for i, svc := range services {
		s, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		// The API service may report NOT_SERVING first, until the health
		// reporter has seen the VALID token.
		for {
			m, err := s.Recv()
			if err != nil {
				t.Fatalf("Watch(%q): Recv() = %v", svc, err)
			}
			if m.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				break
			}
		}
		streams[i] = s
	}

	closed := make(chan error, 1)
	begin := time.Now()
	go func() { closed <- e.srv.Close() }()
	for i, s := range streams {
		m, err := s.Recv()
		if err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("Watch(%q) after Close: Recv() = %v, %v; want NOT_SERVING", services[i], m.GetStatus(), err)
			continue
		}
		if m, err := s.Recv(); err != io.EOF {
			t.Errorf("Watch(%q): Recv() after NOT_SERVING = %v, %v; want io.EOF (ended with OK)", services[i], m.GetStatus(), err)
		}
	}
	if err := <-closed; err != nil {
		t.Errorf("Close() = %v; want nil", err)
	}
	// A health watcher must not hold GracefulStop until ShutdownTimeout: a
	// forced stop would have ended the streams with UNAVAILABLE, not io.EOF
	// as checked above. The time is logged, not bounded.
	t.Logf("shutdown with %d health watchers took %v", len(streams), time.Since(begin))
}

// TestShutdownHealthWatchUnknownService: a Watch on a service nobody
// registered stays SERVICE_UNKNOWN (shutdown sends it nothing new); it too
// ends with OK at shutdown instead of holding it until the timeout.
func TestShutdownHealthWatchUnknownService(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{ShutdownTimeout: 20 * time.Second})
	ctx := timeout(t, 60*time.Second)
	s, err := healthpb.NewHealthClient(e.conn()).Watch(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Fatalf("Watch(no.such.Service): Recv() = %v, %v; want SERVICE_UNKNOWN", m.GetStatus(), err)
	}
	if err := e.srv.Close(); err != nil {
		t.Errorf("Close() = %v; want nil", err)
	}
	// io.EOF (OK), not the UNAVAILABLE of the forced stop after the 20 s
	// ShutdownTimeout: the stream ended on its own after HealthWatchGrace.
	if m, err := s.Recv(); err != io.EOF {
		t.Errorf("Watch(no.such.Service) after Close: Recv() = %v, %v; want io.EOF (ended with OK)", m.GetStatus(), err)
	}
}

// TestStreamLimits: one connection, and one key over all its connections,
// hold at most so many API streams; a second key is not affected (issue
// 22: 20,000 WatchToken streams on one connection were all served).
func TestStreamLimits(t *testing.T) {
	e := start(t, sandbox.Config{}, Config{Keys: testKeys(t), Streams: broker.StreamLimits{PerConn: 2, PerKey: 3}})
	ctx := timeout(t, 30*time.Second)
	proxy, ci := withKey(ctx, testKey), withKey(ctx, otherKey)
	// open starts a WatchToken stream and returns the code of its first
	// answer.
	open := func(c brokerv1.TokenBrokerServiceClient, ctx context.Context) codes.Code {
		s, err := c.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
		if err != nil {
			return status.Code(err)
		}
		_, err = s.Recv()
		return status.Code(err)
	}
	c1, c2, c3 := e.client(), e.client(), e.client()
	for i, tc := range []struct {
		c    brokerv1.TokenBrokerServiceClient
		ctx  context.Context
		want codes.Code
	}{
		{c1, proxy, codes.OK},
		{c1, proxy, codes.OK},
		{c1, proxy, codes.ResourceExhausted}, // per connection
		{c1, ci, codes.ResourceExhausted},    // per connection, whatever the key
		{c2, proxy, codes.OK},
		{c2, proxy, codes.ResourceExhausted}, // per key
		{c3, ci, codes.OK},                   // another key
	} {
		if got := open(tc.c, tc.ctx); got != tc.want {
			t.Errorf("stream %d: %v; want %v", i, got, tc.want)
		}
	}
	if m := scrape(t, e); !strings.Contains(m, `copilot_broker_streams_refused_total{reason="per_key"} 1`) ||
		!strings.Contains(m, `copilot_broker_streams_refused_total{reason="per_connection"} 2`) ||
		!strings.Contains(m, "copilot_broker_streams 4") {
		var lines []string
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "copilot_broker_streams") {
				lines = append(lines, l)
			}
		}
		t.Errorf("metrics lack the refusals and open streams:\n%s", strings.Join(lines, "\n"))
	}
}
