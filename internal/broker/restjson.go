package broker

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonSlots bounds the GetToken answers whose JSON the gateway keeps: one
// slot per account name's hash, so the cache never outgrows this however
// many accounts come and go.
const jsonSlots = 64

// restMarshaler is the gateway's marshaler: grpc-gateway's default (the
// same options), except that the JSON of a GetToken answer is made once per
// token state rather than once per request. The gateway decodes every
// answer afresh from its gRPC connection, so answers are matched by their
// binary encoding, which is deterministic and several times cheaper than
// the JSON encoding: any field that differs, present or future, makes a
// miss and a fresh encoding.
type restMarshaler struct {
	runtime.Marshaler
	seed  maphash.Seed
	slots [jsonSlots]atomic.Pointer[jsonEntry]
}

// jsonEntry is one answer's binary encoding and its JSON; neither is ever
// modified once stored.
type jsonEntry struct {
	wire, json []byte
}

func newRESTMarshaler() *restMarshaler {
	return &restMarshaler{
		// grpc-gateway's default marshaler (runtime's defaultMarshaler).
		Marshaler: &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		}},
		seed: maphash.MakeSeed(),
	}
}

// Marshal returns the JSON of v; for a GetToken answer seen before, the
// bytes made then, which the caller must not modify (the gateway only
// writes them).
func (m *restMarshaler) Marshal(v any) ([]byte, error) {
	resp, ok := v.(*brokerv1.GetTokenResponse)
	if !ok {
		return m.Marshaler.Marshal(v)
	}
	wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(resp)
	if err != nil {
		return m.Marshaler.Marshal(v)
	}
	slot := &m.slots[maphash.String(m.seed, resp.GetToken().GetAccount())%jsonSlots]
	if e := slot.Load(); e != nil && bytes.Equal(e.wire, wire) {
		return e.json, nil
	}
	js, err := m.Marshaler.Marshal(v)
	if err != nil {
		return nil, err
	}
	slot.Store(&jsonEntry{wire: wire, json: js})
	return js, nil
}
