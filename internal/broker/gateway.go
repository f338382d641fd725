package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/apidoc"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// REST routes, also the values of the route label of the HTTP metrics.
const (
	RouteGetToken      = "/v1/token"
	RouteWatchToken    = "/v1/token:watch"
	RouteRefreshToken  = "/v1/token:refresh"
	RouteListAccounts  = "/v1/accounts"
	RouteWatchAccounts = "/v1/accounts:watch"
	RouteKeys          = "/v1/keys"
	RouteWatchKeys     = "/v1/keys:watch"
	RouteKey           = "/v1/keys/{name}"
	RouteProxies       = "/v1/proxies"
	RouteBudgets       = "/v1/budgets"
	RouteOpenAPI       = "/openapi.json"
	routeOther         = "other"
)

// NewRESTHandler returns the REST API: grpc-gateway routes calling the gRPC
// server through conn (one client connection, so streaming works and the
// server's interceptors apply), behind auth's HTTP middleware, and the
// OpenAPI document at [RouteOpenAPI], which needs no key. Every request is
// counted by metrics. ctx bounds the gateway's registrations.
func NewRESTHandler(ctx context.Context, conn *grpc.ClientConn, auth *Authenticator, metrics *Metrics) (http.Handler, error) {
	gw := runtime.NewServeMux(
		// Forward no HTTP header as metadata: the gateway passes
		// Authorization on by itself, and nothing else is needed. This also
		// keeps a Grpc-Metadata-Authorization header from smuggling a
		// second credential.
		runtime.WithIncomingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newRESTMarshaler()),
	)
	if err := brokerv1.RegisterTokenBrokerServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("broker: registering gateway: %w", err)
	}
	if err := brokerv1.RegisterKeyServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("broker: registering gateway: %w", err)
	}
	if err := brokerv1.RegisterProxyServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("broker: registering gateway: %w", err)
	}
	// ListBudgets only: the usage service's other methods have no HTTP rule
	// (QueryUsage is served beside the gateway, below).
	if err := brokerv1.RegisterUsageServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("broker: registering gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+RouteOpenAPI, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(apidoc.OpenAPI)
	})
	mux.Handle("GET "+RouteUsage, limitBody(auth.HTTPMiddleware(usageREST(conn))))
	mux.Handle("/", limitBody(auth.HTTPMiddleware(gw)))
	return metrics.HTTPMiddleware(restRoute, mux), nil
}

// MaxRESTBodyBytes bounds a REST request body: the API's requests are a few
// fields, and the gateway reads a body whole before it looks at it.
const MaxRESTBodyBytes = 64 << 10

// limitBody answers 413 for a body announced over [MaxRESTBodyBytes] and
// makes a longer unannounced one fail when it is read (the gateway then
// answers 400). The connection is closed after the 413 by the server's
// body guard (ops.GuardBody closes after any answer that comes before the
// body was read), not here.
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxRESTBodyBytes {
			writeJSONError(w, http.StatusRequestEntityTooLarge, codes.InvalidArgument,
				fmt.Sprintf("request body over %d bytes", MaxRESTBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxRESTBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// restRoute names a request's route for metrics without echoing arbitrary
// paths into label values.
func restRoute(r *http.Request) string {
	switch p := r.URL.Path; p {
	case RouteGetToken, RouteWatchToken, RouteRefreshToken, RouteListAccounts, RouteWatchAccounts, RouteOpenAPI, RouteKeys, RouteWatchKeys, RouteUsage, RouteProxies, RouteBudgets:
		return p
	}
	if strings.HasPrefix(r.URL.Path, RouteKeys+"/") {
		return RouteKey // never the name itself: bounded label values
	}
	return routeOther
}

// writeJSONError writes an error in the gateway's own shape
// ({"code", "message", "details"}), so REST clients parse one format.
func writeJSONError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	body, _ := json.Marshal(struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
		Details []any      `json:"details"`
	}{code, msg, []any{}})
	_, _ = w.Write(body)
}
