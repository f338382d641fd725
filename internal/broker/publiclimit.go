package broker

import (
	"context"
	"net"
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

// Reasons a stream is refused, the reason label of
// copilot_broker_public_streams_refused_total and
// copilot_broker_streams_refused_total.
const (
	refusedPerConn = "per_connection"
	refusedTotal   = "total"
	refusedPerKey  = "per_key"
)

// PublicStreamLimiter refuses, with RESOURCE_EXHAUSTED, a public stream
// opened without a valid key once a bound is reached.
type PublicStreamLimiter struct {
	auth    *Authenticator
	limits  PublicStreamLimits
	open    prometheus.Gauge
	refused *prometheus.CounterVec
	counts  streamCounts
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
		auth: auth, limits: limits,
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_broker_public_streams",
			Help: "Open streams on public services (health Watch, reflection) from callers without a broker key.",
		}),
		refused: newRefusedCounter("copilot_broker_public_streams_refused_total",
			"Public streams refused with RESOURCE_EXHAUSTED, by the bound reached (per_connection, total).", refusedPerConn, refusedTotal),
	}
	if m != nil {
		m.reg.MustRegister(l.open, l.refused)
	}
	return l
}

func newRefusedCounter(name, help string, reasons ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"reason"})
	for _, r := range reasons {
		c.WithLabelValues(r)
	}
	return c
}

// StreamInterceptor applies the limits; install it after the
// authenticator's.
func (l *PublicStreamLimiter) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !isPublic(info.FullMethod) || l.keyed(ss) {
			return handler(srv, ss)
		}
		bounds := []streamBound{
			{refusedPerConn, connOf(ss.Context()), l.limits.PerConn},
			{refusedTotal, "", l.limits.Total},
		}
		return l.counts.guard(bounds, l.refused, l.open, func(reason string) error {
			return status.Errorf(codes.ResourceExhausted, "too many open %s streams without a broker key (%s limit); use health Check, or send a broker key", info.FullMethod, reason)
		}, func() error { return handler(srv, ss) })
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

// connOf names a call's connection by its peer address.
func connOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return addrKey(p.Addr)
	}
	return "?"
}

func addrKey(a net.Addr) string { return a.Network() + ":" + a.String() }

// streamBound is one bound a stream counts against: at most limit streams
// in bucket (a connection, a key, or "" for all).
type streamBound struct {
	reason, bucket string
	limit          int
}

// streamCounts counts open streams per bound and bucket.
type streamCounts struct {
	mu   sync.Mutex
	open map[streamBound]int // limit zeroed in the keys
}

// acquire counts a stream against every bound, or returns the reason of
// the first one that is full and counts nothing.
func (c *streamCounts) acquire(bounds []streamBound) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bounds {
		if c.open[streamBound{b.reason, b.bucket, 0}] >= b.limit {
			return b.reason
		}
	}
	if c.open == nil {
		c.open = map[streamBound]int{}
	}
	for _, b := range bounds {
		c.open[streamBound{b.reason, b.bucket, 0}]++
	}
	return ""
}

// guard runs run as one stream counted against bounds, or, when one is
// full, counts the refusal and returns refuse's error.
func (c *streamCounts) guard(bounds []streamBound, refused *prometheus.CounterVec, open prometheus.Gauge, refuse func(reason string) error, run func() error) error {
	if reason := c.acquire(bounds); reason != "" {
		refused.WithLabelValues(reason).Inc()
		return refuse(reason)
	}
	open.Inc()
	defer func() {
		c.release(bounds)
		open.Dec()
	}()
	return run()
}

func (c *streamCounts) release(bounds []streamBound) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bounds {
		k := streamBound{b.reason, b.bucket, 0}
		if c.open[k]--; c.open[k] <= 0 {
			delete(c.open, k)
		}
	}
}
