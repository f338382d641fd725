package server

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/broker"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// watchCode opens a health Watch on hc and returns the code of its first
// answer: OK when a status arrived (the stream stays open until ctx ends).
func watchCode(ctx context.Context, hc healthpb.HealthClient) codes.Code {
	s, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	return status.Code(err)
}

// A flood of health Watch streams without a key is refused past the bounds
// (per connection, then in total) and counted; keyed callers and health
// Check are not limited; goroutines stay bounded.
func TestPublicStreamsBounded(t *testing.T) {
	const perConn, total = 5, 20
	e := start(t, sandbox.Config{}, Config{Keys: testKeys(t), PublicStreams: broker.PublicStreamLimits{Total: total, PerConn: perConn}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Per connection.
	hc := healthpb.NewHealthClient(e.conn())
	for i := range perConn {
		if c := watchCode(ctx, hc); c != codes.OK {
			t.Fatalf("Watch %d on one connection = %v; want OK", i+1, c)
		}
	}
	if c := watchCode(ctx, hc); c != codes.ResourceExhausted {
		t.Errorf("Watch %d on one connection = %v; want RESOURCE_EXHAUSTED", perConn+1, c)
	}
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("Check() on the full connection = %v; want it served", err)
	}

	// A flood over many connections: total streams bounded, goroutines too.
	before := runtime.NumGoroutine()
	const conns, each = 40, 50
	var ok, refused int
	for range conns {
		hc := healthpb.NewHealthClient(e.conn())
		for range each {
			switch c := watchCode(ctx, hc); c {
			case codes.OK:
				ok++
			case codes.ResourceExhausted:
				refused++
			default:
				t.Fatalf("Watch in the flood = %v", c)
			}
		}
	}
	grown := runtime.NumGoroutine() - before
	if ok != total-perConn || refused != conns*each-ok {
		t.Errorf("flood of %d Watch streams: %d open, %d refused; want %d open (the total bound), the rest refused", conns*each, ok, refused, total-perConn)
	}
	// Each open stream costs a few goroutines on both sides, each
	// connection a few more; a refused stream none once it has ended.
	if limit := 10*total + 10*conns; grown > limit {
		t.Errorf("goroutines grew by %d for %d Watch attempts; want at most %d", grown, conns*each, limit)
	}
	t.Logf("%d Watch streams without a key: %d open, %d refused; goroutines +%d", conns*each, ok, refused, grown)

	// A caller with the key is not limited.
	keyed := healthpb.NewHealthClient(e.conn())
	for i := range 2 * perConn {
		if c := watchCode(withKey(ctx, testKey), keyed); c != codes.OK {
			t.Fatalf("keyed Watch %d = %v; want OK", i+1, c)
		}
	}

	page := scrapeText(t, e)
	for _, want := range []string{
		`copilot_broker_public_streams ` + strconv.Itoa(total),
		`copilot_broker_public_streams_refused_total{reason="per_connection"}`,
		`copilot_broker_public_streams_refused_total{reason="total"}`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// scrapeText returns the broker's /metrics page.
func scrapeText(t *testing.T, e *env) string {
	t.Helper()
	resp, err := httpClient(t).Get("http://" + e.srv.Addrs().Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	return string(b)
}
