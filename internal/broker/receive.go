package broker

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// received is one message of a client stream, or its end.
type received[T any] struct {
	msg T
	err error
}

// inbox reads a client stream's messages in a goroutine, so that a
// handler can wait for the next one and for the broker's drain at once. The
// goroutine ends with the stream (ctx ends when the handler returns).
type inbox[T any] struct {
	ctx   context.Context
	drain <-chan struct{}
	in    chan received[T]
}

func newInbox[T any](ctx context.Context, drain <-chan struct{}, recv func() (T, error)) *inbox[T] {
	b := &inbox[T]{ctx: ctx, drain: drain, in: make(chan received[T])}
	go func() {
		for {
			msg, err := recv()
			select {
			case b.in <- received[T]{msg, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return b
}

// next returns the stream's next message. ok is false when the client
// ended the stream (err nil), the stream failed, ctx ended, or the broker
// drains (UNAVAILABLE: the proxy reports to another broker or again).
func (b *inbox[T]) next() (msg T, ok bool, err error) {
	var r received[T]
	select {
	case <-b.drain:
		return msg, false, status.Error(codes.Unavailable, "the broker is shutting down; report to another broker or again")
	case <-b.ctx.Done():
		return msg, false, b.ctx.Err()
	case r = <-b.in:
	}
	if errors.Is(r.err, io.EOF) {
		return msg, false, nil
	}
	if r.err != nil {
		return msg, false, r.err
	}
	return r.msg, true, nil
}
