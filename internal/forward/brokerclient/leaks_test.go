package brokerclient

import (
	"fmt"
	"strings"
	"testing"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The reason a proxy has no token reaches clients in 503s: a gRPC dial
// error's address is not in it.
func TestNoTokenReasonNamesNoBrokerAddress(t *testing.T) {
	c, _ := New(Config{Broker: brokerv1.NewTokenBrokerServiceClient(nil), Clock: clock.NewFake(start)})
	c.setConn(fmt.Errorf("broker WatchToken: %w", status.Error(codes.Unavailable,
		`connection error: desc = "transport: Error while dialing: dial tcp 10.1.2.3:50051: connect: connection refused"`)))
	_, err := c.Token()
	if err == nil || strings.Contains(err.Error(), "10.1.2.3") || !strings.Contains(err.Error(), "unreachable (gRPC Unavailable") {
		t.Errorf("Token() with the broker unreachable = %v; want the gRPC code, no address", err)
	}
}
