package broker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/grpc"
)

// A nil *Metrics is valid and records nothing: every method works on it and
// passes calls through.
func TestNilMetricsRecordsNothing(t *testing.T) {
	var m *Metrics
	if m.Registry() != nil {
		t.Error("Registry() of a nil Metrics is not nil")
	}
	if err := m.ObserveService(nil); err != nil {
		t.Errorf("ObserveService() = %v", err)
	}
	exchanged := false
	ex := m.InstrumentExchange("", func(context.Context, secret.Secret) (*tokens.CopilotToken, error) {
		exchanged = true
		return nil, nil
	})
	if _, _ = ex(t.Context(), secret.New("x")); !exchanged {
		t.Error("InstrumentExchange did not call the exchange")
	}
	m.ForgetAccount("")
	m.accountWatcherAdded()
	m.accountWatcherRemoved()
	m.authFailed("grpc", reasonMissing)

	resp, err := m.UnaryInterceptor()(t.Context(), "req", &grpc.UnaryServerInfo{FullMethod: "/m"},
		func(_ context.Context, req any) (any, error) { return req.(string) + "-handled", nil })
	if resp != "req-handled" || err != nil {
		t.Errorf("UnaryInterceptor = %v, %v; want the handler's answer", resp, err)
	}
	streamed := false
	if err := m.StreamInterceptor()(nil, nil, &grpc.StreamServerInfo{FullMethod: "/s"},
		func(any, grpc.ServerStream) error { streamed = true; return nil }); err != nil || !streamed {
		t.Errorf("StreamInterceptor = %v, handler called %v", err, streamed)
	}
	h := m.HTTPMiddleware(restRoute, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", RouteGetToken, nil))
	if rec.Code != http.StatusTeapot {
		t.Errorf("HTTPMiddleware status = %d; want the handler's 418", rec.Code)
	}
}
