package broker

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/keys"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// publicMethodPrefixes are the gRPC services that need no key: health checks
// come from load balancers and kubelets, and reflection describes only the
// API's shape.
var publicMethodPrefixes = [...]string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Reasons an authentication fails, as logged and counted.
const (
	reasonMissing   = "missing"   // no Authorization
	reasonMalformed = "malformed" // not "Bearer <key>", or more than one
	reasonUnknown   = "unknown"   // a key that is not in the keys file
)

type keyCtxKey struct{}

// KeyName returns the name of the broker key that authenticated the call
// carried by ctx, or "" when none did (no keys configured, or a public
// method).
func KeyName(ctx context.Context) string {
	if k, ok := ctx.Value(keyCtxKey{}).(*keys.Key); ok {
		return k.Name
	}
	return ""
}

// MayRead reports whether the call carried by ctx may read account: every
// account when no key authenticated it (authentication disabled) or its key
// names no accounts or '*'; else exactly the accounts its key lists.
func MayRead(ctx context.Context, account string) bool {
	k, ok := ctx.Value(keyCtxKey{}).(*keys.Key)
	return !ok || k.Accounts.Allows(account)
}

// Authenticator checks the broker key of every call: "authorization: Bearer
// <key>" in gRPC metadata or the Authorization HTTP header. The comparison is
// constant-time ([keys.Set.Lookup]); logs and metrics name the key, never
// show it. With no keys it lets every call through: the server refuses to
// listen beyond loopback in that case unless told otherwise.
type Authenticator struct {
	keys    *keys.Set
	byName  map[string]*keys.Key // the keys of the set, so a call's context holds a pointer (no copy per call)
	log     *slog.Logger
	metrics *Metrics
	warn    sync.Map // transport/reason → *failureLog
}

// NewAuthenticator returns an Authenticator for set; a nil or empty set
// disables authentication. A nil logger discards; nil metrics count nothing.
func NewAuthenticator(set *keys.Set, logger *slog.Logger, metrics *Metrics) *Authenticator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if set.Len() == 0 {
		set = nil
	}
	byName := map[string]*keys.Key{}
	for _, k := range set.Keys() {
		byName[k.Name] = &k
	}
	return &Authenticator{keys: set, byName: byName, log: logger, metrics: metrics}
}

// Enabled reports whether calls must present a key.
func (a *Authenticator) Enabled() bool { return a.keys != nil }

// check returns the key for the presented Authorization values, or the
// reason they fail.
func (a *Authenticator) check(values []string) (key *keys.Key, reason string) {
	switch len(values) {
	case 0:
		return nil, reasonMissing
	case 1:
	default:
		return nil, reasonMalformed
	}
	presented, ok := keys.FromBearer(values[0])
	if !ok {
		return nil, reasonMalformed
	}
	k, ok := a.keys.LookupKey(presented)
	if !ok {
		return nil, reasonUnknown
	}
	return a.byName[k.Name], ""
}

func (a *Authenticator) failed(transport, reason, method, remote string) {
	a.metrics.authFailed(transport, reason)
	fl, _ := a.warn.LoadOrStore(transport+"/"+reason, new(failureLog))
	if suppressed, ok := fl.(*failureLog).allow(time.Now()); ok {
		a.log.Warn("authentication failed", "transport", transport, "reason", reason, "method", method, "remote", remote,
			"suppressed_since_last", suppressed)
	}
}

// authWarnEvery is the least time between two "authentication failed"
// warnings of one transport and reason; the ones in between are only counted (the metric counts all),
// so a flood of bad keys cannot flood the log.
const authWarnEvery = time.Second

// failureLog lets one warning through per authWarnEvery and counts the
// others.
type failureLog struct {
	last       atomic.Int64 // unix nanoseconds of the last warning
	suppressed atomic.Int64
}

// allow reports whether to log now, and how many were suppressed since the
// last warning.
func (f *failureLog) allow(now time.Time) (int64, bool) {
	last := f.last.Load()
	if last != 0 && now.UnixNano()-last < int64(authWarnEvery) || !f.last.CompareAndSwap(last, now.UnixNano()) {
		f.suppressed.Add(1)
		return 0, false
	}
	return f.suppressed.Swap(0), true
}

func isPublic(fullMethod string) bool {
	for _, p := range publicMethodPrefixes {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

// authorize returns ctx carrying the key, or an UNAUTHENTICATED error.
func (a *Authenticator) authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	if a.keys == nil || isPublic(fullMethod) {
		return ctx, nil
	}
	// ValueFromIncomingContext copies only this key, not the whole map.
	key, reason := a.check(metadata.ValueFromIncomingContext(ctx, "authorization"))
	if reason != "" {
		remote := ""
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			remote = p.Addr.String()
		}
		a.failed("grpc", reason, fullMethod, remote)
		return nil, status.Error(codes.Unauthenticated, unauthenticatedMessage(reason))
	}
	return context.WithValue(ctx, keyCtxKey{}, key), nil
}

func unauthenticatedMessage(reason string) string {
	switch reason {
	case reasonMissing:
		return "missing broker key: send \"authorization: Bearer <key>\""
	case reasonMalformed:
		return "malformed authorization: send exactly one \"Bearer <key>\""
	default:
		return "invalid broker key"
	}
}

// UnaryInterceptor authenticates unary calls.
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := a.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor authenticates streaming calls.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := a.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		if ctx == ss.Context() {
			return handler(srv, ss)
		}
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	}
}

// contextStream replaces a stream's context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }

// HTTPMiddleware rejects REST calls without a valid key with 401 before they
// reach the gateway, in the gateway's JSON error shape. The gateway forwards
// the same Authorization header, which the gRPC interceptors check again.
func (a *Authenticator) HTTPMiddleware(next http.Handler) http.Handler {
	if a.keys == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, reason := a.check(r.Header.Values("Authorization")); reason != "" {
			a.failed("http", reason, r.Method+" "+r.URL.Path, r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="copilot-broker"`)
			writeJSONError(w, http.StatusUnauthorized, codes.Unauthenticated, unauthenticatedMessage(reason))
			return
		}
		next.ServeHTTP(w, r)
	})
}
