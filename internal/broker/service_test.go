package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/clock"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func validState(gen uint64) tokens.State {
	return tokens.State{
		Token: secret.New("tid=1;exp=2:sig"), Generation: gen, Epoch: "e1",
		ExpiresAt: t0.Add(30 * time.Minute), RefreshAt: t0.Add(20 * time.Minute),
		APIBaseURL: "https://api.githubcopilot.com", SKU: "monthly_subscriber", Status: tokens.StatusValid,
	}
}

func TestToProto(t *testing.T) {
	got := ToProto(validState(7))
	want := &brokerv1.Token{
		Value: "tid=1;exp=2:sig", Generation: 7, Epoch: "e1",
		ExpiresAt: timestamppb.New(t0.Add(30 * time.Minute)), RefreshAt: timestamppb.New(t0.Add(20 * time.Minute)),
		ApiBaseUrl: "https://api.githubcopilot.com", Sku: "monthly_subscriber", Status: brokerv1.TokenStatus_TOKEN_STATUS_VALID,
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("ToProto(valid) mismatch (-want +got):\n%s", diff)
	}
	// A state without a usable token never carries a value, even if one
	// were left in it.
	st := validState(7)
	st.Status, st.ExpiresAt = tokens.StatusExpired, time.Time{}
	if got := ToProto(st); got.GetValue() != "" || got.GetExpiresAt() != nil {
		t.Errorf("ToProto(expired) = value %q, expires_at %v; want neither", got.GetValue(), got.GetExpiresAt())
	}
}

func TestGetTokenCodes(t *testing.T) {
	tests := []struct {
		name   string
		status tokens.Status
		want   codes.Code
	}{
		{"valid", tokens.StatusValid, codes.OK},
		{"stale", tokens.StatusStale, codes.OK},
		{"expired", tokens.StatusExpired, codes.Unavailable},
		{"rejected", tokens.StatusRejected, codes.FailedPrecondition},
		{"pending past the wait", tokens.StatusPending, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := validState(3)
			st.Status, st.LastError = tt.status, "HTTP 401"
			svc := newTestService(t, newFake(st), func(c *Config) { c.MaxPendingWait = 10 * time.Millisecond })
			resp, err := svc.GetToken(context.Background(), &brokerv1.GetTokenRequest{})
			if status.Code(err) != tt.want {
				t.Fatalf("GetToken() = %v; want %v", err, tt.want)
			}
			if tt.want == codes.OK {
				if resp.GetToken().GetValue() == "" {
					t.Error("GetToken() value is empty; want the token")
				}
				return
			}
			// The error carries the state, without a value, and the cause.
			sts := status.Convert(err)
			if len(sts.Details()) != 1 {
				t.Fatalf("GetToken() error details = %v; want the token state", sts.Details())
			}
			d, ok := sts.Details()[0].(*brokerv1.Token)
			if !ok || d.GetGeneration() != 3 || d.GetValue() != "" || d.GetStatus() != StatusToProto(tt.status) {
				t.Errorf("error detail = %v; want generation 3, status %v, no value", d, tt.status)
			}
			if want := "HTTP 401"; !strings.Contains(sts.Message(), want) {
				t.Errorf("error message %q; want it to include %q", sts.Message(), want)
			}
		})
	}
	svc := newTestService(t, newFake(validState(1)), nil)
	if _, err := svc.GetToken(context.Background(), &brokerv1.GetTokenRequest{Account: "x"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetToken(unknown account) = %v; want NOT_FOUND", err)
	}
}

func TestGetTokenWaitsForFirstToken(t *testing.T) {
	src := newFake(tokens.State{Status: tokens.StatusPending})
	svc := newTestService(t, src, nil)
	done := make(chan error, 1)
	go func() {
		resp, err := svc.GetToken(context.Background(), &brokerv1.GetTokenRequest{})
		if err == nil && resp.GetToken().GetGeneration() != 1 {
			err = errors.New("wrong generation")
		}
		done <- err
	}()
	testutil.Eventually(t, 10*time.Second, "GetToken waiting for the first token", func() bool { return src.subscribers() > 0 })
	src.set(validState(1))
	if err := <-done; err != nil {
		t.Errorf("GetToken() after the first token arrived = %v; want it", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	src.set(tokens.State{Status: tokens.StatusPending})
	if _, err := svc.GetToken(ctx, &brokerv1.GetTokenRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetToken() pending until the deadline = %v; want UNAVAILABLE", err)
	}
}

func TestRefreshToken(t *testing.T) {
	src := newFake(validState(4))
	src.forceRes = validState(5)
	svc := newTestService(t, src, nil)
	resp, err := svc.RefreshToken(context.Background(), &brokerv1.RefreshTokenRequest{RejectedGeneration: 4})
	if err != nil || resp.GetToken().GetGeneration() != 5 {
		t.Fatalf("RefreshToken(4) = %v, %v; want generation 5", resp, err)
	}
	if diff := cmp.Diff([]uint64{4}, src.forced); diff != "" {
		t.Errorf("ForceRefresh calls (-want +got):\n%s", diff)
	}
	tests := []struct {
		name string
		res  tokens.Status
		err  error
		want codes.Code
	}{
		{"rejected after refresh", tokens.StatusRejected, nil, codes.FailedPrecondition},
		{"expired after refresh", tokens.StatusExpired, nil, codes.Unavailable},
		{"caller gave up", tokens.StatusValid, context.DeadlineExceeded, codes.DeadlineExceeded},
		{"manager closed", tokens.StatusValid, tokens.ErrClosed, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := validState(5)
			st.Status = tt.res
			src.forceRes, src.forceErr = st, tt.err
			if _, err := svc.RefreshToken(context.Background(), &brokerv1.RefreshTokenRequest{RejectedGeneration: 5}); status.Code(err) != tt.want {
				t.Errorf("RefreshToken() = %v; want %v", err, tt.want)
			}
		})
	}
}

// fakeStream is a WatchToken server stream; send decides what Send does.
type fakeStream struct {
	grpc.ServerStream
	ctx  context.Context
	send func(*brokerv1.WatchTokenResponse) error
}

func (s *fakeStream) Context() context.Context                  { return s.ctx }
func (s *fakeStream) Send(m *brokerv1.WatchTokenResponse) error { return s.send(m) }
func (s *fakeStream) SetHeader(metadata.MD) error               { return nil }
func (s *fakeStream) SendHeader(metadata.MD) error              { return nil }
func (s *fakeStream) SetTrailer(metadata.MD)                    {}
func (s *fakeStream) SendMsg(any) error                         { return nil }
func (s *fakeStream) RecvMsg(any) error                         { return nil }

var _ brokerv1.TokenBrokerService_WatchTokenServer = (*fakeStream)(nil)

// watch runs WatchToken on a stream that forwards messages to a channel.
func watch(ctx context.Context, svc *Service) (<-chan *brokerv1.Token, <-chan error) {
	msgs := make(chan *brokerv1.Token, 100)
	done := make(chan error, 1)
	st := &fakeStream{ctx: ctx, send: func(m *brokerv1.WatchTokenResponse) error { msgs <- m.GetToken(); return nil }}
	go func() { done <- svc.WatchToken(&brokerv1.WatchTokenRequest{}, st) }()
	return msgs, done
}

func TestWatchTokenEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(*fakeSource, *Service, *clock.Fake, context.CancelFunc)
		want codes.Code
	}{
		{"max age reached", func(_ *fakeSource, _ *Service, c *clock.Fake, _ context.CancelFunc) {
			c.Advance(11 * time.Minute) // 10 min ± 10% at most
		}, codes.OK},
		{"drained at shutdown", func(_ *fakeSource, s *Service, _ *clock.Fake, _ context.CancelFunc) { s.Drain() }, codes.OK},
		{"source closed", func(f *fakeSource, _ *Service, _ *clock.Fake, _ context.CancelFunc) { f.close() }, codes.OK},
		{"client gone", func(_ *fakeSource, _ *Service, _ *clock.Fake, cancel context.CancelFunc) { cancel() }, codes.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFake(validState(1))
			fc := clock.NewFake(t0)
			svc := newTestService(t, src, func(c *Config) { c.Clock, c.MaxStreamAge = fc, 10*time.Minute })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			msgs, done := watch(ctx, svc)
			if m := <-msgs; m.GetGeneration() != 1 {
				t.Fatalf("first message generation = %d; want 1", m.GetGeneration())
			}
			src.set(validState(2))
			if m := <-msgs; m.GetGeneration() != 2 {
				t.Fatalf("second message generation = %d; want 2", m.GetGeneration())
			}
			if err := fc.WaitForTimers(ctx, 1); err != nil {
				t.Fatal(err)
			}
			fc.Advance(8 * time.Minute) // younger than 10 min - 10%: still open
			select {
			case err := <-done:
				t.Fatalf("WatchToken() ended early: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
			tt.end(src, svc, fc, cancel)
			if err := <-done; status.Code(err) != tt.want {
				t.Errorf("WatchToken() = %v; want %v", err, tt.want)
			}
			if n := src.subscribers(); n != 0 {
				t.Errorf("subscribers after the stream ended = %d; want 0", n)
			}
		})
	}
}

func TestWatchTokenAfterDrain(t *testing.T) {
	svc := newTestService(t, newFake(validState(1)), nil)
	svc.Drain()
	svc.Drain() // idempotent
	_, done := watch(context.Background(), svc)
	if err := <-done; err != nil {
		t.Errorf("WatchToken() after Drain = %v; want nil at once", err)
	}
}

func TestStreamAgeJitter(t *testing.T) {
	// The jitter spreads ages over the whole ±10% band: the extremes of the
	// random number map to its ends, not to the mean.
	tests := []struct {
		rand   float64
		jitter float64
		want   time.Duration
	}{
		{0, 0, 27 * time.Minute},
		{0.5, 0, 30 * time.Minute},
		{0.75, 0, 31*time.Minute + 30*time.Second},
		{0.25, 0.2, 27 * time.Minute},
		{0, -1, 30 * time.Minute}, // negative: no jitter
	}
	for _, tt := range tests {
		svc := newTestService(t, newFake(validState(1)), func(c *Config) {
			c.MaxStreamAge = 30 * time.Minute
			c.StreamAgeJitter = tt.jitter
			c.Rand = func() float64 { return tt.rand }
		})
		if got := svc.streamAge(); got.Round(time.Millisecond) != tt.want {
			t.Errorf("streamAge() with rand %v, jitter %v = %v; want %v", tt.rand, tt.jitter, got, tt.want)
		}
	}
}

func TestSlowWatcherDoesNotBlockOthers(t *testing.T) {
	src := newFake(validState(1))
	svc := newTestService(t, src, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The stalled stream's Send blocks until the test ends. stuck has room
	// for the signal: Send may run before the test waits for it.
	stuck := make(chan struct{}, 1)
	stalled := &fakeStream{ctx: ctx, send: func(*brokerv1.WatchTokenResponse) error {
		select {
		case stuck <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}}
	stalledDone := make(chan error, 1)
	go func() { stalledDone <- svc.WatchToken(&brokerv1.WatchTokenRequest{}, stalled) }()
	<-stuck

	msgs, done := watch(ctx, svc)
	<-msgs
	for gen := uint64(2); gen <= 50; gen++ {
		src.set(validState(gen))
		select {
		case m := <-msgs:
			if m.GetGeneration() != gen {
				t.Fatalf("healthy watcher got generation %d; want %d", m.GetGeneration(), gen)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("healthy watcher did not get generation %d while another stream is stalled", gen)
		}
	}
	cancel()
	<-done
	<-stalledDone
}

// The API form of a state is built once and shared until the state changes,
// and a change of any kind (a new generation, or only the status of the same
// one) is seen by the next call.
func TestGetTokenConvertsOncePerState(t *testing.T) {
	src := newFake(validState(1))
	svc := newTestService(t, src, nil)
	get := func() *brokerv1.GetTokenResponse {
		t.Helper()
		resp, err := svc.GetToken(context.Background(), &brokerv1.GetTokenRequest{})
		if err != nil {
			t.Fatalf("GetToken() = %v", err)
		}
		return resp
	}
	first := get()
	if again := get(); again != first {
		t.Error("GetToken() twice on the same state built two responses; want one shared")
	}
	stale := validState(1)
	stale.Status, stale.LastError = tokens.StatusStale, "HTTP 502"
	src.set(stale)
	got := get().GetToken()
	if got.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_STALE || got.GetLastError() != "HTTP 502" {
		t.Errorf("GetToken() after VALID -> STALE = status %v, last error %q; want STALE, HTTP 502", got.GetStatus(), got.GetLastError())
	}
	src.set(validState(2))
	if got := get().GetToken(); got.GetGeneration() != 2 || got.GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID {
		t.Errorf("GetToken() after a rotation = generation %d, %v; want 2, VALID", got.GetGeneration(), got.GetStatus())
	}
	if first.GetToken().GetGeneration() != 1 || first.GetToken().GetStatus() != brokerv1.TokenStatus_TOKEN_STATUS_VALID {
		t.Error("an earlier response changed after the state did; want shared responses immutable")
	}
}
