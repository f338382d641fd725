package usagereport

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ledger is a UsageService that stores by id and can lose acknowledgements.
type ledger struct {
	brokerv1.UnimplementedUsageServiceServer
	mu       sync.Mutex
	stored   map[string]int // id → times received
	loseAcks int            // acknowledgements still to lose (the stream fails after storing)
	unimpl   bool
	batches  chan int // when set, gets each batch's size
}

func (l *ledger) ReportUsage(st brokerv1.UsageService_ReportUsageServer) error {
	for {
		req, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if l.batches != nil {
			l.batches <- len(req.GetEvents())
		}
		l.mu.Lock()
		if l.unimpl {
			l.mu.Unlock()
			return status.Error(codes.Unimplemented, "no ledger")
		}
		ack := &brokerv1.ReportUsageResponse{Batch: req.GetBatch()}
		for _, e := range req.GetEvents() {
			if l.stored[e.GetId()]++; l.stored[e.GetId()] == 1 {
				ack.Stored++
			} else {
				ack.Duplicates++
			}
		}
		lose := l.loseAcks > 0
		if lose {
			l.loseAcks--
		}
		l.mu.Unlock()
		if lose {
			return status.Error(codes.Unavailable, "lost the acknowledgement")
		}
		if err := st.Send(ack); err != nil {
			return err
		}
	}
}

func (l *ledger) counts() (unique, received int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.stored {
		unique++
		received += n
	}
	return
}

func serve(t *testing.T, l *ledger) brokerv1.UsageServiceClient {
	t.Helper()
	l.stored = map[string]int{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	brokerv1.RegisterUsageServiceServer(g, l)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return brokerv1.NewUsageServiceClient(cc)
}

func run(t *testing.T, r *Reporter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func ev(i int) Event {
	return Event{ID: fmt.Sprint("ev-", i), Time: time.Unix(1_800_000_000, 0), Key: "u1", Model: "gpt-4o", Status: 200, Input: 3, Output: 2}
}

func TestDeliveredOnceDespiteLostAcks(t *testing.T) {
	l := &ledger{loseAcks: 2}
	r, err := New(Config{Client: serve(t, l), Batch: 10, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		r.Report(ev(i))
	}
	run(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v (buffered %d)", err, r.Buffered())
	}
	unique, received := l.counts()
	if unique != 100 || received != 120 {
		t.Errorf("ledger holds %d events from %d received; want 100 from 120 (two lost acknowledgements of 10 resent)", unique, received)
	}
}

func TestFullBufferDropsOldest(t *testing.T) {
	l := &ledger{}
	reg := prometheus.NewRegistry()
	r, err := New(Config{Client: serve(t, l), Buffer: 5, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		r.Report(ev(i))
	}
	if n := r.Buffered(); n != 5 {
		t.Fatalf("Buffered = %d; want 5", n)
	}
	if d := testutil.ToFloat64(r.metrics.dropped); d != 3 {
		t.Errorf("dropped = %v; want 3", d)
	}
	run(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range 8 {
		if got, want := l.stored[fmt.Sprint("ev-", i)], map[bool]int{true: 1}[i >= 3]; got != want {
			t.Errorf("event %d delivered %d times; want %d", i, got, want)
		}
	}
}

func TestBrokerWithoutLedgerTurnsReportingOff(t *testing.T) {
	l := &ledger{unimpl: true}
	r, err := New(Config{Client: serve(t, l)})
	if err != nil {
		t.Fatal(err)
	}
	r.Report(ev(1))
	run(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil { // emptied by turning off
		t.Fatal(err)
	}
	r.Report(ev(2))
	if n := r.Buffered(); n != 0 {
		t.Errorf("Buffered = %d after the broker said it keeps no ledger; want 0", n)
	}
}

func TestFlushEndsWithItsContext(t *testing.T) {
	r, err := New(Config{Client: brokerv1.NewUsageServiceClient(nil)})
	if err != nil {
		t.Fatal(err)
	}
	r.Report(ev(1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Flush(ctx); err == nil {
		t.Error("Flush with an ended context and an event held = nil; want its error")
	}
}

// TestLingerBatches: events that do not fill a batch wait the linger (on
// the injected clock) and leave together; a full batch and a Flush do not
// wait.
func TestLingerBatches(t *testing.T) {
	for _, tt := range []struct {
		name    string
		events  int
		advance bool // move the clock past the linger
		flush   bool
		want    []int // batch sizes received
	}{
		{"a partial batch waits for the linger", 3, true, false, []int{3}},
		{"a full batch goes at once", 10, false, false, []int{10}},
		{"a full batch and a rest", 13, true, false, []int{10, 3}},
		{"Flush sends a partial batch at once", 3, false, true, []int{3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := &ledger{batches: make(chan int, 10)}
			fc := clock.NewFake(time.Unix(1_800_000_000, 0))
			r, err := New(Config{Client: serve(t, l), Batch: 10, Linger: time.Second, Clock: fc})
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.events {
				r.Report(ev(i))
			}
			run(t, r)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var got []int
			if tt.events >= 10 {
				got = append(got, <-l.batches) // no clock move needed
			}
			if tt.events%10 != 0 {
				if err := fc.WaitForTimers(ctx, 1); err != nil { // the partial batch lingers
					t.Fatal(err)
				}
				select {
				case n := <-l.batches:
					t.Fatalf("a batch of %d left before the linger", n)
				default:
				}
				if tt.advance {
					fc.Advance(time.Second)
				}
			}
			if tt.flush || tt.advance {
				if err := r.Flush(ctx); err != nil {
					t.Fatalf("Flush: %v", err)
				}
			}
			for len(got) < len(tt.want) {
				select {
				case n := <-l.batches:
					got = append(got, n)
				case <-ctx.Done():
					t.Fatalf("batches %v; want %v", got, tt.want)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("batches %v; want %v", got, tt.want)
			}
		})
	}
}
