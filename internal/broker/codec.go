package broker

import (
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec returns the gRPC codec for the server that serves s: the standard
// proto codec, except that the GetToken and WatchToken answers of an
// account's current state, which every call shares (see [account.convert]),
// are sent from their wire form, encoded once per state change rather than
// once per call and per watcher. Install it with grpc.ForceServerCodecV2.
func (s *Service) Codec() encoding.CodecV2 {
	return &codec{svc: s, proto: encoding.GetCodecV2(grpcproto.Name)}
}

type codec struct {
	svc   *Service
	proto encoding.CodecV2
}

func (c *codec) Marshal(v any) (mem.BufferSlice, error) {
	if wire := c.svc.wire(v); wire != nil {
		return wire, nil
	}
	return c.proto.Marshal(v)
}

func (c *codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c *codec) Name() string { return c.proto.Name() }

// wire returns the encoding of v when v is the shared answer of its
// account's current state, nil otherwise (another message, or a state that
// changed since: the caller encodes it as usual).
func (s *Service) wire(v any) mem.BufferSlice {
	var tok *brokerv1.Token
	switch m := v.(type) {
	case *brokerv1.GetTokenResponse:
		tok = m.GetToken()
	case *brokerv1.WatchTokenResponse:
		tok = m.GetToken()
	default:
		return nil
	}
	if tok == nil {
		return nil
	}
	a, ok := s.set.Load().byName[tok.GetAccount()]
	if !ok {
		return nil
	}
	c := a.last.Load()
	switch {
	case c == nil:
		return nil
	case v == any(c.get):
		return c.getWire
	case v == any(c.watch):
		return c.watchWire
	}
	return nil
}

// encodeShared returns m's wire form as a buffer slice that any number of
// calls may send at once: its one buffer is a [mem.SliceBuffer], which the
// transport only reads and whose Free does nothing. It returns nil when m
// does not encode (the codec then encodes each call, and fails the same
// way).
func encodeShared(m proto.Message) mem.BufferSlice {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}
}
