package brokerclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Dial returns a connection to the broker at target ("host:port" or any gRPC
// target). With tlsCfg nil it uses plaintext, for loopback and
// cluster-internal brokers; key, when set, is sent as
// "authorization: Bearer <key>" on every call. gRPC's own reconnection
// backoff is capped at 5 s (its default grows to 2 min), so that a broker
// that comes back is found about as soon as the watch loop retries. extra
// options come last and win.
func Dial(target string, key secret.Secret, tlsCfg *tls.Config, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	bc := backoff.DefaultConfig
	bc.BaseDelay, bc.MaxDelay = 250*time.Millisecond, 5*time.Second
	opts := []grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 5 * time.Second}),
		// Pings find a broker that vanished without closing the connection
		// (the broker permits one every 10 s).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if !key.IsZero() {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{key: key}))
	}
	conn, err := grpc.NewClient(target, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("broker %s: %w", target, err)
	}
	return conn, nil
}

// bearer sends the broker key as gRPC metadata.
type bearer struct{ key secret.Secret }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.key.Reveal()}, nil
}

// RequireTransportSecurity is false so that a plaintext in-cluster broker
// works; the proxy warns when the key would cross a network in the clear.
func (b bearer) RequireTransportSecurity() bool { return false }
