package broker

import (
	"context"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// HealthServices are the names whose grpc.health.v1 status follows the
// default account's token: the API's service. The server as a whole ("") is
// SERVING while it runs, whatever the token, so that a liveness probe on it
// never restarts a broker for a token problem (each restart would call GitHub
// again); readiness follows the token, here and on /readyz.
var HealthServices = [...]string{brokerv1.TokenBrokerService_ServiceDesc.ServiceName}

// HealthStatus maps a token state to a health status: SERVING while a token
// can be handed out (VALID or STALE), NOT_SERVING otherwise.
func HealthStatus(s tokens.Status) healthpb.HealthCheckResponse_ServingStatus {
	if s.HasToken() {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// ReportHealth keeps hs in line with src's state until ctx ends or src
// closes. Call hs.Shutdown to report NOT_SERVING for good at shutdown; later
// updates are then ignored by hs.
func ReportHealth(ctx context.Context, hs *health.Server, src Source) {
	updates, cancel := src.Subscribe()
	defer cancel()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		select {
		case st, ok := <-updates:
			if !ok {
				return
			}
			if h := HealthStatus(st.Status); h != last {
				for _, svc := range HealthServices {
					hs.SetServingStatus(svc, h)
				}
				last = h
			}
		case <-ctx.Done():
			return
		}
	}
}
