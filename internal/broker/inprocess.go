package broker

import (
	"context"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// ChainUnary returns one interceptor that runs ics in order, the first
// outermost, as grpc.ChainUnaryInterceptor does. The server installs the
// result with grpc.UnaryInterceptor and hands the same value to
// [NewGatewayClient], so REST calls pass exactly the interceptors that gRPC
// calls do.
func ChainUnary(ics ...grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return chainFrom(ics, 0, ctx, req, info, handler)
	}
}

func chainFrom(ics []grpc.UnaryServerInterceptor, i int, ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if i == len(ics) {
		return handler(ctx, req)
	}
	return ics[i](ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return chainFrom(ics, i+1, ctx, req, info, handler)
	})
}

// gatewayClient is the client the REST gateway calls. Unary methods run in
// this process: the gateway's outgoing metadata (the Authorization header
// among it) becomes the call's incoming metadata, and the call passes
// through the server's unary interceptor chain (metrics, auth) to the
// service, as if it had crossed the connection. That hop, HTTP/2 framing
// and a protobuf encoding each way, cost about half of the CPU of a REST
// read. WatchToken goes over conn, which streaming needs.
type gatewayClient struct {
	brokerv1.TokenBrokerServiceClient // over conn; WatchToken uses it
	svc                               brokerv1.TokenBrokerServiceServer
	unary                             grpc.UnaryServerInterceptor
}

// NewGatewayClient returns the client for [NewRESTHandlerClient]: unary
// calls go in process through unary (the server's whole unary interceptor
// chain, see [ChainUnary]) to svc, streaming calls over conn to the gRPC
// server serving svc. Call options are ignored by the in-process calls: the
// service sets no header or trailer metadata.
func NewGatewayClient(conn grpc.ClientConnInterface, svc brokerv1.TokenBrokerServiceServer, unary grpc.UnaryServerInterceptor) brokerv1.TokenBrokerServiceClient {
	return &gatewayClient{TokenBrokerServiceClient: brokerv1.NewTokenBrokerServiceClient(conn), svc: svc, unary: unary}
}

func (c *gatewayClient) invoke(ctx context.Context, method string, req any, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewIncomingContext(ctx, md)
	return c.unary(ctx, req, &grpc.UnaryServerInfo{Server: c.svc, FullMethod: method}, h)
}

func (c *gatewayClient) GetToken(ctx context.Context, req *brokerv1.GetTokenRequest, _ ...grpc.CallOption) (*brokerv1.GetTokenResponse, error) {
	resp, err := c.invoke(ctx, brokerv1.TokenBrokerService_GetToken_FullMethodName, req, func(ctx context.Context, req any) (any, error) {
		return c.svc.GetToken(ctx, req.(*brokerv1.GetTokenRequest))
	})
	if err != nil {
		return nil, err
	}
	return resp.(*brokerv1.GetTokenResponse), nil
}

func (c *gatewayClient) RefreshToken(ctx context.Context, req *brokerv1.RefreshTokenRequest, _ ...grpc.CallOption) (*brokerv1.RefreshTokenResponse, error) {
	resp, err := c.invoke(ctx, brokerv1.TokenBrokerService_RefreshToken_FullMethodName, req, func(ctx context.Context, req any) (any, error) {
		return c.svc.RefreshToken(ctx, req.(*brokerv1.RefreshTokenRequest))
	})
	if err != nil {
		return nil, err
	}
	return resp.(*brokerv1.RefreshTokenResponse), nil
}
