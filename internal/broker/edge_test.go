package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

const key = "test-key-0123456789abcdef"

// edge is a Service behind the interceptors over bufconn, with the REST
// handler in an httptest server, as the server package wires them.
type edge struct {
	src     *fakeSource
	svc     *Service
	metrics *Metrics
	client  brokerv1.TokenBrokerServiceClient
	gateway brokerv1.TokenBrokerServiceClient // the REST gateway's client
	rest    *httptest.Server
	logs    *testutil.SyncBuffer
}

func newEdge(t *testing.T) *edge {
	t.Helper()
	src := newFake(validState(1))
	return newEdgeWith(t, "proxy:"+key+"\n", map[string]Source{"": src}, src)
}

// newEdgeWith is newEdge with the given key file and accounts; e.src is src.
func newEdgeWith(t *testing.T, keyFile string, accounts map[string]Source, src *fakeSource) *edge {
	t.Helper()
	set, err := keys.Parse(strings.NewReader(keyFile))
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{src: src, metrics: NewMetrics(), logs: &testutil.SyncBuffer{}}
	logger := slog.New(slog.NewTextHandler(e.logs, nil))
	svc := newTestService(t, src, func(c *Config) { c.Metrics = e.metrics; c.Logger = logger; c.Accounts = accounts })
	e.svc = svc
	if err := e.metrics.ObserveService(svc); err != nil {
		t.Fatal(err)
	}
	auth := NewAuthenticator(set, logger, e.metrics)
	srv := grpc.NewServer(
		grpc.ForceServerCodecV2(svc.Codec()),
		grpc.ChainUnaryInterceptor(e.metrics.UnaryInterceptor(), auth.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(e.metrics.StreamInterceptor(), auth.StreamInterceptor()))
	brokerv1.RegisterTokenBrokerServiceServer(srv, svc)
	ln := bufconn.Listen(1 << 16)
	go func() { _ = srv.Serve(ln) }()
	cc, err := grpc.NewClient("passthrough:///edge",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.gateway = brokerv1.NewTokenBrokerServiceClient(cc)
	h, err := NewRESTHandler(context.Background(), cc, auth, e.metrics)
	if err != nil {
		t.Fatal(err)
	}
	e.rest = httptest.NewServer(h)
	e.client = brokerv1.NewTokenBrokerServiceClient(cc)
	t.Cleanup(func() {
		e.rest.Close()
		svc.Drain()
		_ = cc.Close()
		srv.Stop()
	})
	return e
}

func TestAuthNeverLogsKeys(t *testing.T) {
	e := newEdge(t)
	ctx := context.Background()
	bad := "wrong-key-0123456789abcdef"
	e.src.forceRes = validState(1)
	_, err := e.client.GetToken(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bad), &brokerv1.GetTokenRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetToken(wrong key) = %v; want UNAUTHENTICATED", err)
	}
	if _, err := e.client.RefreshToken(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key), &brokerv1.RefreshTokenRequest{RejectedGeneration: 9}); err != nil {
		t.Fatalf("RefreshToken(valid key) = %v", err)
	}
	resp, err := http.Get(e.rest.URL + "/v1/token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	logs := e.logs.String()
	if strings.Contains(logs, bad) || strings.Contains(logs, key) {
		t.Errorf("logs contain a presented key:\n%s", logs)
	}
	if !strings.Contains(logs, "reason=unknown") || !strings.Contains(logs, "reason=missing") || !strings.Contains(logs, "key=proxy") {
		t.Errorf("logs = %s; want the failure reasons and the key's name", logs)
	}
}

func TestMetrics(t *testing.T) {
	e := newEdge(t)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
	if _, err := e.client.GetToken(ctx, &brokerv1.GetTokenRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.GetToken(context.Background(), &brokerv1.GetTokenRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatal(err)
	}
	stream, err := e.client.WatchToken(ctx, &brokerv1.WatchTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.rest.URL+"/v1/token", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := e.rest.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	want := map[string]float64{
		`copilot_broker_grpc_requests_total{code="OK",method="/copilot.broker.v1.TokenBrokerService/GetToken"}`:              2, // one direct, one through the gateway
		`copilot_broker_grpc_requests_total{code="Unauthenticated",method="/copilot.broker.v1.TokenBrokerService/GetToken"}`: 1,
		`copilot_broker_auth_failures_total{reason="missing",transport="grpc"}`:                                              1,
		`copilot_broker_http_requests_total{code="200",route="/v1/token"}`:                                                   1,
		`copilot_broker_watchers{account=""}`:                                                                                1,
		`copilot_broker_token_generation{account=""}`:                                                                        1,
		`copilot_broker_token_status{account="",status="VALID"}`:                                                             1,
		`copilot_broker_token_status{account="",status="PENDING"}`:                                                           0,
		`copilot_broker_token_expiry_timestamp_seconds{account=""}`:                                                          float64(t0.Add(30 * time.Minute).Unix()),
	}
	got := gather(t, e.metrics)
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("metric %s = %v (present %v); want %v", name, g, ok, v)
		}
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(e.metrics.Registry(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); strings.Contains(body, key) || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics contains a key, or lacks the Go collector:\n%s", body)
	}
}

// gather returns every series as `name{label="value",...}` (labels sorted
// by name, as Prometheus stores them) mapped to its value.
func gather(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var labels []string
			for _, lp := range mt.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			name := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case mt.GetCounter() != nil:
				out[name] = mt.GetCounter().GetValue()
			case mt.GetGauge() != nil:
				out[name] = mt.GetGauge().GetValue()
			}
		}
	}
	return out
}

func TestInstrumentExchange(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "success"},
		{fmt.Errorf("x: %w", tokens.ErrCredentialRejected), "rejected"},
		{&tokens.NoAccessError{Status: 403}, "no_access"},
		{&tokens.RateLimitedError{Status: 429}, "rate_limited"},
		{&tokens.TransientError{Status: 502}, "error"},
		{errors.New("dial"), "error"},
	}
	m := NewMetrics()
	for _, tt := range tests {
		f := m.InstrumentExchange("acct", func(context.Context, secret.Secret) (*tokens.CopilotToken, error) { return nil, tt.err })
		_, _ = f(context.Background(), secret.New("gho_x"))
		name := fmt.Sprintf(`copilot_broker_token_refreshes_total{account="acct",result=%q}`, tt.want)
		if got := gather(t, m)[name]; got < 1 {
			t.Errorf("InstrumentExchange(%v): %s = %v; want >= 1", tt.err, name, got)
		}
	}
	n := 0
	for name := range gather(t, m) {
		if strings.HasPrefix(name, "copilot_broker_token_refreshes_total{") {
			n++
		}
	}
	if n != 5 {
		t.Errorf("refresh result series = %d; want 5", n)
	}
}

func TestReportHealth(t *testing.T) {
	src := newFake(tokens.State{Status: tokens.StatusPending})
	hs := health.NewServer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ReportHealth(ctx, hs, src); close(done) }()
	check := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: HealthServices[0]})
			if err == nil && resp.GetStatus() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("health = %v, %v; want %v", resp.GetStatus(), err, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	steps := []struct {
		status tokens.Status
		want   healthpb.HealthCheckResponse_ServingStatus
	}{
		{tokens.StatusPending, healthpb.HealthCheckResponse_NOT_SERVING},
		{tokens.StatusValid, healthpb.HealthCheckResponse_SERVING},
		{tokens.StatusStale, healthpb.HealthCheckResponse_SERVING},
		{tokens.StatusExpired, healthpb.HealthCheckResponse_NOT_SERVING},
		{tokens.StatusValid, healthpb.HealthCheckResponse_SERVING},
		{tokens.StatusRejected, healthpb.HealthCheckResponse_NOT_SERVING},
	}
	for _, s := range steps {
		src.set(tokens.State{Status: s.status})
		check(s.want)
	}
	cancel()
	<-done
}

// The gateway's client connection passes the server's interceptors: a call
// without a key is refused and counted, one with a key reaches the service
// under the key's name, and streaming works.
func TestGatewayClientAppliesInterceptors(t *testing.T) {
	e := newEdge(t)
	e.src.forceRes = validState(2)
	ctx := context.Background()
	if _, err := e.gateway.GetToken(ctx, &brokerv1.GetTokenRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gateway GetToken() without a key = %v; want UNAUTHENTICATED", err)
	}
	if _, err := e.gateway.RefreshToken(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer wrong-key-0123456789abcdef"),
		&brokerv1.RefreshTokenRequest{RejectedGeneration: 1}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gateway RefreshToken() with a wrong key = %v; want UNAUTHENTICATED", err)
	}
	withKey := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	resp, err := e.gateway.GetToken(withKey, &brokerv1.GetTokenRequest{})
	if err != nil || resp.GetToken().GetGeneration() != 1 {
		t.Errorf("gateway GetToken() with a key = %v, %v; want generation 1", resp, err)
	}
	ref, err := e.gateway.RefreshToken(withKey, &brokerv1.RefreshTokenRequest{RejectedGeneration: 1})
	if err != nil || ref.GetToken().GetGeneration() != 2 {
		t.Errorf("gateway RefreshToken() with a key = %v, %v; want generation 2", ref, err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "refresh requested") || !strings.Contains(logs, "key=proxy") {
		t.Errorf("logs = %s; want the refresh logged under the key's name", logs)
	}
	stream, err := e.gateway.WatchToken(withKey, &brokerv1.WatchTokenRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		t.Errorf("WatchToken() through the gateway client = %v; want a first message", err)
	}
	got := gather(t, e.metrics)
	for name, want := range map[string]float64{
		`copilot_broker_grpc_requests_total{code="Unauthenticated",method="/copilot.broker.v1.TokenBrokerService/GetToken"}`:     1,
		`copilot_broker_grpc_requests_total{code="Unauthenticated",method="/copilot.broker.v1.TokenBrokerService/RefreshToken"}`: 1,
		`copilot_broker_grpc_requests_total{code="OK",method="/copilot.broker.v1.TokenBrokerService/GetToken"}`:                  1,
		`copilot_broker_auth_failures_total{reason="missing",transport="grpc"}`:                                                  1,
		`copilot_broker_auth_failures_total{reason="unknown",transport="grpc"}`:                                                  1,
		`copilot_broker_watchers{account=""}`: 1,
	} {
		if got[name] != want {
			t.Errorf("metric %s = %v; want %v", name, got[name], want)
		}
	}
}

// GET /v1/token answers from a cached encoding while the state holds and
// follows every change, even one of the status alone.
func TestRESTGetTokenFollowsState(t *testing.T) {
	e := newEdge(t)
	get := func() string {
		t.Helper()
		req, _ := http.NewRequest("GET", e.rest.URL+"/v1/token", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := e.rest.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /v1/token = %d %s; want 200", resp.StatusCode, b)
		}
		return string(b)
	}
	first := get()
	if again := get(); again != first {
		t.Errorf("GET /v1/token twice on one state = %s then %s; want the same", first, again)
	}
	if !strings.Contains(first, `"generation":"1"`) || !strings.Contains(first, `"status":"TOKEN_STATUS_VALID"`) {
		t.Errorf("GET /v1/token = %s; want generation 1, VALID", first)
	}
	stale := validState(1)
	stale.Status, stale.LastError = tokens.StatusStale, "HTTP 502"
	e.src.set(stale)
	if got := get(); !strings.Contains(got, `"status":"TOKEN_STATUS_STALE"`) || !strings.Contains(got, `"lastError":"HTTP 502"`) {
		t.Errorf("GET /v1/token after VALID -> STALE = %s; want STALE with its last error", got)
	}
	e.src.set(validState(2))
	if got := get(); !strings.Contains(got, `"generation":"2"`) {
		t.Errorf("GET /v1/token after a rotation = %s; want generation 2", got)
	}
}
