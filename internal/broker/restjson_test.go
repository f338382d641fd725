package broker

import (
	"bytes"
	"net/http/httptest"
	"testing"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// The REST marshaler writes what grpc-gateway's default marshaler writes,
// for every answer in any order: answers of several accounts, and answers
// that differ in one field only, never get another's JSON.
func TestRESTMarshalerMatchesDefault(t *testing.T) {
	state := func(account string, gen uint64, mutate func(*tokens.State)) *brokerv1.GetTokenResponse {
		st := validState(gen)
		st.Account = account
		if mutate != nil {
			mutate(&st)
		}
		return &brokerv1.GetTokenResponse{Token: ToProto(st)}
	}
	answers := []any{
		state("", 1, nil),
		state("", 2, nil),
		state("", 2, func(st *tokens.State) { st.Status, st.LastError = tokens.StatusStale, "HTTP 502" }),
		state("", 2, func(st *tokens.State) { st.Token = secret.New("tid=2;exp=3:sig") }),
		state("alice", 1, nil),
		state("bob", 1, nil),
		&brokerv1.GetTokenResponse{},
		&brokerv1.WatchTokenResponse{Token: ToProto(validState(1))},
		map[string]any{"result": state("", 1, nil)}, // a stream chunk
	}
	// grpc-gateway's own default, as a mux without options picks it.
	_, def := runtime.MarshalerForRequest(runtime.NewServeMux(), httptest.NewRequest("GET", "/v1/token", nil))
	want := make([][]byte, len(answers))
	for i, a := range answers {
		var err error
		if want[i], err = def.Marshal(a); err != nil {
			t.Fatal(err)
		}
	}
	m := newRESTMarshaler()
	if got, want := m.ContentType(answers[0]), def.ContentType(answers[0]); got != want {
		t.Errorf("ContentType() = %q; want %q", got, want)
	}
	for _, order := range [][]int{{0, 0, 1, 2, 3, 1, 0}, {4, 5, 4, 0, 5, 6, 6, 0}, {7, 8, 0, 8, 7}} {
		for _, i := range order {
			got, err := m.Marshal(answers[i])
			if err != nil {
				t.Fatalf("Marshal(answer %d) = %v", i, err)
			}
			if !bytes.Equal(got, want[i]) {
				t.Errorf("Marshal(answer %d) = %s; want %s", i, got, want[i])
			}
		}
	}
	// The cache hits: an equal answer decoded afresh (as the gateway
	// decodes every answer) gets the JSON made for the first.
	first, err := m.Marshal(state("carol", 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Marshal(state("carol", 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	if &first[0] != &again[0] {
		t.Error("an equal GetToken answer was encoded again; want the JSON made for the first reused")
	}
}
