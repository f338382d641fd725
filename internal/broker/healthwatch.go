package broker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/clock"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// HealthWatchGrace bounds how long, at shutdown, a health Watch stream is
// given to send its NOT_SERVING before it is ended anyway (a stream on a
// service nobody registered never gets one).
const HealthWatchGrace = time.Second

// HealthServer is grpc.health.v1 from a [health.Server] whose Watch streams
// end at shutdown. health.Server's own Watch runs until the client leaves,
// so one load balancer watching would hold a graceful stop until its
// timeout; here [HealthServer.Shutdown] reports NOT_SERVING, and each Watch
// stream ends with OK right after it has sent that status.
type HealthServer struct {
	*health.Server // statuses, SetServingStatus

	clock    clock.Clock
	auth     *Authenticator // nil: every account's status is public
	draining chan struct{}  // closed by Shutdown
	once     sync.Once
}

// NewHealthServer returns a HealthServer over a new health.Server. clk times
// [HealthWatchGrace] (nil means the real clock).
func NewHealthServer(clk clock.Clock) *HealthServer {
	return &HealthServer{Server: health.NewServer(), clock: clock.OrReal(clk), draining: make(chan struct{})}
}

// Shutdown sets every status to NOT_SERVING for good and ends the Watch
// streams once they have reported it.
func (h *HealthServer) Shutdown() {
	h.Server.Shutdown()
	h.once.Do(func() { close(h.draining) })
}

// AccountsNeedKey makes the per-account services (the API's service name,
// "/" and an account) answer only callers whose broker key, checked by auth,
// may read the account; any other caller gets the answer of a service that
// does not exist, so that an account outside a key cannot be told from no
// account. The API's and the server's own statuses stay public, for load
// balancers and probes. Call it before serving.
func (h *HealthServer) AccountsNeedKey(auth *Authenticator) { h.auth = auth }

// hiddenService is a service name no account can have (account names are
// letters, digits, '.', '_' and '-'): asking for it gets the answer of an
// unknown service.
const hiddenService = "\x00hidden"

// visible returns the service name to answer for: service itself, or
// hiddenService when it names an account the caller may not read.
func (h *HealthServer) visible(ctx context.Context, service string) string {
	account, ok := strings.CutPrefix(service, HealthServices[0]+"/")
	if !ok || h.auth == nil || !h.auth.Enabled() {
		return service
	}
	key, reason := h.auth.check(metadata.ValueFromIncomingContext(ctx, "authorization"))
	if reason != "" || !key.Accounts.Allows(account) {
		return hiddenService
	}
	return service
}

// Check is health.Server's Check for the services the caller may see.
func (h *HealthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return h.Server.Check(ctx, &healthpb.HealthCheckRequest{Service: h.visible(ctx, req.GetService())})
}

// List is health.Server's List without the per-account services of a
// caller that may not see them.
func (h *HealthServer) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	resp, err := h.Server.List(ctx, req)
	if err != nil {
		return nil, err
	}
	for name := range resp.GetStatuses() {
		if h.visible(ctx, name) != name {
			delete(resp.Statuses, name)
		}
	}
	return resp, nil
}

// Watch is health.Server's Watch, for the services the caller may see,
// ended with OK at shutdown.
func (h *HealthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	req = &healthpb.HealthCheckRequest{Service: h.visible(stream.Context(), req.GetService())}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	ws := &drainingWatch{Health_WatchServer: stream, ctx: ctx, sent: make(chan struct{}, 1)}
	ws.last.Store(nothingSent)
	var drained atomic.Bool
	go func() {
		select {
		case <-h.draining:
		case <-ctx.Done():
			return
		}
		grace := h.clock.NewTimer(HealthWatchGrace)
		defer grace.Stop()
		// Shutdown set NOT_SERVING before closing draining: wait until the
		// stream has passed on a status other than SERVING.
		for last := ws.last.Load(); last == nothingSent || last == int32(healthpb.HealthCheckResponse_SERVING); last = ws.last.Load() {
			select {
			case <-ws.sent:
			case <-grace.C():
				drained.Store(true)
				cancel()
				return
			case <-ctx.Done():
				return
			}
		}
		drained.Store(true)
		cancel()
	}()
	err := h.Server.Watch(req, ws)
	if drained.Load() && stream.Context().Err() == nil {
		return nil // ended by the shutdown, not by the client: OK
	}
	return err
}

// nothingSent is drainingWatch.last before the first send.
const nothingSent = -1

// drainingWatch is a Watch stream whose context the shutdown can end and
// which remembers the last status it sent.
type drainingWatch struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	last atomic.Int32  // the last status sent
	sent chan struct{} // signalled after each send
}

func (w *drainingWatch) Context() context.Context { return w.ctx }

func (w *drainingWatch) Send(m *healthpb.HealthCheckResponse) error {
	err := w.Health_WatchServer.Send(m)
	w.last.Store(int32(m.GetStatus()))
	select {
	case w.sent <- struct{}{}:
	default:
	}
	return err
}
