package broker

import (
	"bytes"
	"context"
	"testing"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/tokens"
	"google.golang.org/protobuf/proto"
)

// The codec sends the shared answer of an account's current state from the
// encoding made once with it, and every other message (an answer of an
// earlier state still held by a slow call, another account's, a request) as
// the proto codec would: the bytes always say what the message says.
func TestCodecSendsCurrentAnswerFromItsEncoding(t *testing.T) {
	def, other := newFake(validState(1)), newFake(validState(5))
	otherState := validState(5)
	otherState.Account = "other"
	other.set(otherState)
	svc := newTestService(t, def, func(c *Config) { c.Accounts = map[string]Source{"": def, "other": other} })
	codec := svc.Codec()
	get := func(account string) *brokerv1.GetTokenResponse {
		t.Helper()
		resp, err := svc.GetToken(context.Background(), &brokerv1.GetTokenRequest{Account: account})
		if err != nil {
			t.Fatalf("GetToken(%q) = %v", account, err)
		}
		return resp
	}
	wire := func(m proto.Message) []byte {
		t.Helper()
		data, err := codec.Marshal(m)
		if err != nil {
			t.Fatalf("codec.Marshal(%v) = %v", m, err)
		}
		defer data.Free()
		b := data.Materialize()
		var back = m.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("codec.Marshal(%v) decodes to %v, %v; want the message", m, back, err)
		}
		return b
	}

	first := get("")
	if a, b := wire(first), wire(first); !bytes.Equal(a, b) {
		t.Errorf("two encodings of one answer differ: %x, %x", a, b)
	}
	if data, _ := codec.Marshal(first); len(data) != 1 || &data[0].ReadOnlyData()[0] != &svc.set.Load().byName[""].last.Load().getWire[0].ReadOnlyData()[0] {
		t.Error("codec.Marshal(current answer) encoded it again; want the encoding made with the state")
	}
	wire(get("other"))

	stale := validState(1)
	stale.Status, stale.LastError = tokens.StatusStale, "HTTP 502"
	def.set(stale)
	second := get("")
	if got := wire(second); bytes.Equal(got, wire(first)) {
		t.Error("the answers before and after VALID -> STALE encode the same")
	}
	wire(first) // an earlier state's answer: encoded from the message, not the cache
	wire(&brokerv1.WatchTokenResponse{Token: second.GetToken()})
	wire(&brokerv1.GetTokenRequest{Account: "other"})

	// WatchToken's shared message goes out from its encoding too.
	c := svc.set.Load().byName[""].last.Load()
	if data, _ := codec.Marshal(c.watch); &data[0].ReadOnlyData()[0] != &c.watchWire[0].ReadOnlyData()[0] {
		t.Error("codec.Marshal(current watch message) encoded it again; want the encoding made with the state")
	}
	wire(c.watch)
}
