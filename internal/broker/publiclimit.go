package broker

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Defaults of [PublicStreamLimits].
const (
	DefaultMaxPublicStreams        = 256
	DefaultMaxPublicStreamsPerConn = 8
)

// PublicStreamLimits bound the streams (health Watch, reflection) that
// callers without a valid broker key may hold open: each costs goroutines
// and memory for as long as the caller likes. Unary calls (health Check)
// are not limited. Zero values take the defaults.
type PublicStreamLimits struct {
	// Total bounds such streams over all connections.
	Total int
	// PerConn bounds them on one connection.
	PerConn int
}

// Reasons a public stream is refused, the reason label of
// copilot_broker_public_streams_refused_total.
const (
	refusedPerConn = "per_connection"
	refusedTotal   = "total"
)

// PublicStreamLimiter refuses, with RESOURCE_EXHAUSTED, a public stream
// opened without a valid key once a bound is reached.
type PublicStreamLimiter struct {
	auth    *Authenticator
	limits  PublicStreamLimits
	open    prometheus.Gauge
	refused *prometheus.CounterVec

	mu     sync.Mutex
	total  int
	byConn map[string]int
}

// NewPublicStreamLimiter returns a limiter that lets callers with a key
// auth accepts through unbounded. Its metrics are registered with m's
// registry (m may be nil).
func NewPublicStreamLimiter(auth *Authenticator, limits PublicStreamLimits, m *Metrics) *PublicStreamLimiter {
	if limits.Total <= 0 {
		limits.Total = DefaultMaxPublicStreams
	}
	if limits.PerConn <= 0 {
		limits.PerConn = DefaultMaxPublicStreamsPerConn
	}
	l := &PublicStreamLimiter{
		auth: auth, limits: limits, byConn: map[string]int{},
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_broker_public_streams",
			Help: "Open streams on public services (health Watch, reflection) from callers without a broker key.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "copilot_broker_public_streams_refused_total",
			Help: "Public streams refused with RESOURCE_EXHAUSTED, by the bound reached (per_connection, total).",
		}, []string{"reason"}),
	}
	l.refused.WithLabelValues(refusedPerConn)
	l.refused.WithLabelValues(refusedTotal)
	if m != nil {
		m.reg.MustRegister(l.open, l.refused)
	}
	return l
}

// StreamInterceptor applies the limits; install it after the
// authenticator's.
func (l *PublicStreamLimiter) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !isPublic(info.FullMethod) || l.keyed(ss) {
			return handler(srv, ss)
		}
		conn := "?"
		if p, ok := peer.FromContext(ss.Context()); ok && p.Addr != nil {
			conn = p.Addr.String()
		}
		if reason := l.acquire(conn); reason != "" {
			l.refused.WithLabelValues(reason).Inc()
			return status.Errorf(codes.ResourceExhausted, "too many open %s streams without a broker key (%s limit); use health Check, or send a broker key", info.FullMethod, reason)
		}
		defer l.release(conn)
		return handler(srv, ss)
	}
}

// keyed reports whether the stream carries a key the authenticator accepts.
func (l *PublicStreamLimiter) keyed(ss grpc.ServerStream) bool {
	if l.auth == nil || !l.auth.Enabled() {
		return false
	}
	_, reason := l.auth.check(metadata.ValueFromIncomingContext(ss.Context(), "authorization"))
	return reason == ""
}

func (l *PublicStreamLimiter) acquire(conn string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.byConn[conn] >= l.limits.PerConn:
		return refusedPerConn
	case l.total >= l.limits.Total:
		return refusedTotal
	}
	l.byConn[conn]++
	l.total++
	l.open.Set(float64(l.total))
	return ""
}

func (l *PublicStreamLimiter) release(conn string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byConn[conn]--; l.byConn[conn] <= 0 {
		delete(l.byConn, conn)
	}
	l.total--
	l.open.Set(float64(l.total))
}
