// Package usagereport delivers the proxy's usage events to the broker's
// ledger: one [Event] per answered request (who, what, how much; never any
// content), kept in a bounded buffer until the broker acknowledges it.
//
// Delivery: a [Reporter] streams batches over ReportUsage, one batch in
// flight at a time; an acknowledged batch leaves the buffer. When the stream
// breaks (the broker restarts, the network fails) the unacknowledged batch
// stays at the buffer's head and is sent again on the next stream; the
// broker stores events idempotently by id, so a batch stored but not
// acknowledged counts once. A full buffer drops its oldest event (counted,
// logged). [Reporter.Flush] waits for the buffer to empty, for the proxy's
// shutdown.
//
// Batching: a batch leaves when it is full or when its first event has
// waited [Config.Linger] (100 ms by default), not with every event: one
// flushed gRPC message per request cost the proxy 12-15 % of its CPU at
// concurrency 1 (issue 24's bench, section 10). Flush sends at once.
package usagereport

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/backoff"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Defaults of [Config].
const (
	DefaultBuffer = 100_000
	DefaultBatch  = 500
	DefaultLinger = 100 * time.Millisecond
)

// Event is one answered request.
type Event struct {
	// ID is unique (the request id); the broker's idempotency key.
	ID        string
	Time      time.Time
	RequestID string
	Key       string
	Account   string
	Model     string
	// Dialect is the client's API (see DialectOf), Endpoint the upstream
	// path.
	Dialect, Endpoint string
	Status            int
	// Input, Output, Cached are token counts (see package usage); UsageKnown
	// is false when the answer carried none.
	Input, Output, Cached int64
	UsageKnown            bool
	Premium               bool
	PremiumUnits          float64
	Latency, TTFB         time.Duration
}

// DialectOf names the client API of a route (its canonical client path).
func DialectOf(route string) string {
	switch route {
	case "/v1/chat/completions":
		return "openai-chat"
	case "/v1/responses":
		return "openai-responses"
	case "/v1/messages":
		return "anthropic-messages"
	case "/v1/embeddings":
		return "openai-embeddings"
	}
	return route
}

// Config configures a [Reporter].
type Config struct {
	// Client reports to the broker. Required.
	Client brokerv1.UsageServiceClient
	// ProxyID names this proxy in every event.
	ProxyID string
	// Buffer bounds the events held (default [DefaultBuffer]); Batch those
	// sent in one message (default [DefaultBatch], at most the broker's
	// 1,000).
	Buffer, Batch int
	// Linger is how long a batch that is not full waits for more events
	// (default [DefaultLinger]; negative: none, every event goes at once).
	Linger time.Duration
	// Clock times the linger; nil is the real clock.
	Clock clock.Clock
	// MinBackoff and MaxBackoff bound the delay between failed streams
	// (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	// OnDone, when set, gets the ids of events that left the buffer
	// (acknowledged, refused or dropped); called without locks held.
	OnDone func(ids []string)
	// Registerer receives the reporter's series; nil registers nothing.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Reporter buffers events and delivers them. Report is safe for concurrent
// use and never blocks on the broker.
type Reporter struct {
	client   brokerv1.UsageServiceClient
	proxyID  string
	batch    int
	minBack  time.Duration
	maxBack  time.Duration
	linger   time.Duration
	clock    clock.Clock
	log      *slog.Logger
	wake     chan struct{} // capacity 1: events arrived
	hurry    chan struct{} // capacity 1: Flush wants the batch sent now
	onDone   func([]string)
	metrics  metrics
	mu       sync.Mutex
	ring     []Event
	head, n  int
	inflight int           // events at the head sent and not yet acknowledged
	emptied  chan struct{} // closed and replaced whenever the buffer empties
	dropped  int64         // since the last drop log line
	lastDrop time.Time
	off      bool // the broker keeps no ledger: events are not kept
}

// offRetry is how often a reporter whose broker keeps no ledger asks again.
const offRetry = time.Minute

type metrics struct {
	dropped, errors prometheus.Counter
	events          *prometheus.CounterVec
}

// New returns a Reporter; [Reporter.Run] delivers.
func New(cfg Config) (*Reporter, error) {
	if cfg.Client == nil {
		return nil, errors.New("usagereport: a broker client is required")
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	if cfg.Batch <= 0 || cfg.Batch > 1000 {
		cfg.Batch = DefaultBatch
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Linger == 0 {
		cfg.Linger = DefaultLinger
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	r := &Reporter{
		client: cfg.Client, proxyID: cfg.ProxyID, batch: cfg.Batch, minBack: cfg.MinBackoff, maxBack: cfg.MaxBackoff,
		linger: cfg.Linger, clock: cfg.Clock, log: cfg.Logger, onDone: cfg.OnDone,
		wake: make(chan struct{}, 1), hurry: make(chan struct{}, 1), ring: make([]Event, cfg.Buffer), emptied: make(chan struct{}),
		metrics: metrics{
			dropped: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "copilot_proxy_usage_report_dropped_total",
				Help: "Usage events dropped unreported because the buffer (--usage-buffer) was full while the broker was away.",
			}),
			errors: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "copilot_proxy_usage_report_stream_errors_total",
				Help: "Usage report streams to the broker that failed (their unacknowledged events are sent again).",
			}),
			events: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "copilot_proxy_usage_report_events_total",
				Help: "Usage events the broker acknowledged, by result: stored, duplicate (stored before) or rejected.",
			}, []string{"result"}),
		},
	}
	if cfg.Registerer != nil {
		buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "copilot_proxy_usage_report_buffered",
			Help: "Usage events held, not yet acknowledged by the broker.",
		}, func() float64 { return float64(r.Buffered()) })
		for _, c := range []prometheus.Collector{r.metrics.dropped, r.metrics.errors, r.metrics.events, buffered} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// Report queues e; when the buffer is full the oldest event is dropped.
func (r *Reporter) Report(e Event) {
	r.mu.Lock()
	if r.off {
		r.mu.Unlock()
		return
	}
	var droppedID string
	if r.n == len(r.ring) {
		droppedID = r.ring[r.head].ID
		r.ring[r.head] = Event{}
		r.head = (r.head + 1) % len(r.ring)
		r.n--
		if r.inflight > 0 {
			r.inflight--
		}
		r.metrics.dropped.Inc()
		r.dropped++
		if now := time.Now(); now.Sub(r.lastDrop) >= 10*time.Second {
			r.log.Warn("usage buffer full: dropping the oldest events until the broker takes them", "dropped", r.dropped, "buffer", len(r.ring))
			r.lastDrop, r.dropped = now, 0
		}
	}
	r.ring[(r.head+r.n)%len(r.ring)] = e
	r.n++
	// The sender wants to know of a batch's first event (it starts the
	// linger) and of a full batch, not of every event between: a wake-up
	// per request would cost the request path a goroutine switch.
	wake := r.n == 1 || r.n == r.batch
	r.mu.Unlock()
	if droppedID != "" && r.onDone != nil {
		r.onDone([]string{droppedID})
	}
	if wake {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Buffered returns the number of events held.
func (r *Reporter) Buffered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Flush waits until every event held has been acknowledged, or ctx ends;
// a batch waiting for more events leaves at once. Run must be running.
func (r *Reporter) Flush(ctx context.Context) error {
	for {
		r.mu.Lock()
		n, emptied := r.n, r.emptied
		r.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case r.hurry <- struct{}{}:
		default:
		}
		select {
		case <-emptied:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// Run delivers until ctx ends, reconnecting with a jittered backoff.
func (r *Reporter) Run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		sent, err := r.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if status.Code(err) == codes.Unimplemented {
			r.setOff(true)
			r.log.Warn("the broker keeps no usage ledger (no state store); usage reporting is off until it does", "retry", offRetry)
			if !backoff.Sleep(ctx, clock.Real{}, offRetry) {
				return
			}
			continue
		}
		r.metrics.errors.Inc()
		if sent {
			failures = 0
		}
		if failures == 0 {
			r.log.Warn("usage report stream to the broker failed; unacknowledged events stay buffered and are sent again",
				"error", err, "buffered", r.Buffered())
		}
		d := backoff.Delay(r.minBack, r.maxBack, failures)
		failures++
		if !backoff.Sleep(ctx, clock.Real{}, d) {
			return
		}
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
// setOff turns keeping events off (dropping those held) or on again.
func (r *Reporter) setOff(off bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.off == off {
		return
	}
	r.off = off
	if off {
		clear(r.ring)
		r.head, r.n, r.inflight = 0, 0, 0
		close(r.emptied)
		r.emptied = make(chan struct{})
	}
}

// stream runs one ReportUsage stream until it fails; sent says whether a
// batch was acknowledged on it.
func (r *Reporter) stream(ctx context.Context) (sent bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer r.resend()
	st, err := r.client.ReportUsage(sctx, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	if r.isOff() {
		// The broker answered before: ask whether it keeps a ledger now
		// with an empty batch.
		if err := st.Send(&brokerv1.ReportUsageRequest{}); err != nil {
			_, err = st.Recv()
			return false, err
		}
		if _, err := st.Recv(); err != nil {
			return false, err
		}
		r.setOff(false)
		r.log.Info("the broker keeps a usage ledger again; usage reporting is on")
	}
	for seq := uint64(1); ; seq++ {
		msg, ok := r.next(ctx, seq)
		if !ok {
			return sent, ctx.Err()
		}
		if err := st.Send(msg); err != nil {
			_, err = st.Recv() // the stream's status says why
			return sent, err
		}
		ack, err := st.Recv()
		if err != nil {
			return sent, err
		}
		r.acked(ack)
		sent = true
	}
}

// next waits for events and takes the next batch (marking it in flight): a
// full one at once, one that is not full once its first event has waited
// the linger, or when Flush asks.
func (r *Reporter) next(ctx context.Context, seq uint64) (*brokerv1.ReportUsageRequest, bool) {
	var linger clock.Timer // armed when the batch's first event is seen
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	due := r.linger < 0
	for {
		r.mu.Lock()
		if r.n >= r.batch || (r.n > 0 && due) {
			k := min(r.n, r.batch)
			msg := &brokerv1.ReportUsageRequest{Batch: seq, Events: make([]*brokerv1.UsageEvent, k)}
			for i := range k {
				msg.Events[i] = r.proto(&r.ring[(r.head+i)%len(r.ring)])
			}
			r.inflight = k
			r.mu.Unlock()
			return msg, true
		}
		n := r.n
		r.mu.Unlock()
		var fire <-chan time.Time
		if n > 0 && !due {
			if linger == nil {
				linger = r.clock.NewTimer(r.linger)
			}
			fire = linger.C()
		}
		select {
		case <-r.wake:
		case <-fire:
			due = true
		case <-r.hurry:
			due = true
		case <-ctx.Done():
			return nil, false
		}
	}
}

// acked removes the acknowledged batch from the head.
func (r *Reporter) acked(ack *brokerv1.ReportUsageResponse) {
	r.metrics.events.WithLabelValues("stored").Add(float64(ack.GetStored()))
	r.metrics.events.WithLabelValues("duplicate").Add(float64(ack.GetDuplicates()))
	if rej := ack.GetRejected(); len(rej) > 0 {
		r.metrics.events.WithLabelValues("rejected").Add(float64(len(rej)))
		r.log.Warn("the broker refused usage events; they are not sent again", "rejected", len(rej),
			"first_id", rej[0].GetId(), "first_reason", rej[0].GetReason())
	}
	r.mu.Lock()
	var ids []string
	if r.onDone != nil {
		ids = make([]string, 0, r.inflight)
	}
	for range r.inflight { // those of the batch not dropped meanwhile
		if r.onDone != nil {
			ids = append(ids, r.ring[r.head].ID)
		}
		r.ring[r.head] = Event{}
		r.head = (r.head + 1) % len(r.ring)
		r.n--
	}
	r.inflight = 0
	if r.n == 0 {
		close(r.emptied)
		r.emptied = make(chan struct{})
	}
	r.mu.Unlock()
	if len(ids) > 0 {
		r.onDone(ids)
	}
}

func (r *Reporter) isOff() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.off
}

// resend puts the batch in flight back to be sent on the next stream.
func (r *Reporter) resend() {
	r.mu.Lock()
	r.inflight = 0
	r.mu.Unlock()
}

func (r *Reporter) proto(e *Event) *brokerv1.UsageEvent {
	return &brokerv1.UsageEvent{
		Id: e.ID, Time: timestamppb.New(e.Time), RequestId: e.RequestID, Key: e.Key, Account: e.Account, Model: e.Model,
		Dialect: e.Dialect, Endpoint: e.Endpoint, Status: int32(e.Status),
		InputTokens: e.Input, OutputTokens: e.Output, CachedTokens: e.Cached, UsageKnown: e.UsageKnown,
		Premium: e.Premium, PremiumUnits: e.PremiumUnits,
		LatencyMicros: e.Latency.Microseconds(), TtfbMicros: e.TTFB.Microseconds(), ProxyId: r.proxyID,
	}
}
