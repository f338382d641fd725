package broker

import (
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Defaults of [StreamLimits].
const (
	DefaultMaxStreamsPerConn = 512
	DefaultMaxStreamsPerKey  = 2048
)

// StreamLimits bound the API's streams (WatchToken, WatchAccounts) that
// callers with a key hold open: each costs a goroutine and buffers (about
// 15 KB) for as long as the caller likes, so one key, even one limited to
// one account, could otherwise exhaust the broker's memory. A proxy holds a
// few streams per account it serves. Zero values take the defaults.
type StreamLimits struct {
	// PerConn bounds streams on one gRPC connection (the REST gateway's
	// shared connection is bounded per key only).
	PerConn int
	// PerKey bounds streams opened with one broker key, over all
	// connections (with authentication off, over all callers).
	PerKey int
}

// StreamLimiter refuses, with RESOURCE_EXHAUSTED, an API stream once its
// connection or its key holds the most allowed.
type StreamLimiter struct {
	limits  StreamLimits
	shared  string // connOf the shared connection, bounded per key only
	open    prometheus.Gauge
	refused *prometheus.CounterVec
	counts  streamCounts
}

// NewStreamLimiter returns a limiter whose metrics are registered with m's
// registry (m may be nil). Calls from the peer address shared (the REST
// gateway's connection, which carries every REST client's streams; nil if
// none) are bounded per key only.
func NewStreamLimiter(limits StreamLimits, shared net.Addr, m *Metrics) *StreamLimiter {
	if limits.PerConn <= 0 {
		limits.PerConn = DefaultMaxStreamsPerConn
	}
	if limits.PerKey <= 0 {
		limits.PerKey = DefaultMaxStreamsPerKey
	}
	l := &StreamLimiter{
		limits: limits,
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "copilot_broker_streams",
			Help: "Open API streams (WatchToken, WatchAccounts), gRPC and REST.",
		}),
		refused: newRefusedCounter("copilot_broker_streams_refused_total",
			"API streams refused with RESOURCE_EXHAUSTED, by the bound reached (per_connection, per_key).", refusedPerConn, refusedPerKey),
	}
	if shared != nil {
		l.shared = addrKey(shared)
	}
	if m != nil {
		m.reg.MustRegister(l.open, l.refused)
	}
	return l
}

// StreamInterceptor applies the limits; install it after the
// authenticator's, whose key it counts by.
func (l *StreamLimiter) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if isPublic(info.FullMethod) {
			return handler(srv, ss)
		}
		bounds := []streamBound{{refusedPerKey, KeyName(ss.Context()), l.limits.PerKey}}
		if conn := connOf(ss.Context()); conn != l.shared {
			bounds = append(bounds, streamBound{refusedPerConn, conn, l.limits.PerConn})
		}
		return l.counts.guard(bounds, l.refused, l.open, func(reason string) error {
			return status.Errorf(codes.ResourceExhausted, "too many open streams (%s limit); close some, or spread them over connections", reason)
		}, func() error { return handler(srv, ss) })
	}
}
