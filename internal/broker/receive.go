package broker

import "context"

// received is one message of a client stream, or its end.
type received[T any] struct {
	msg T
	err error
}

// receive reads a stream's messages into a channel, so that a handler can
// wait for one and for a drain at once. The goroutine ends with the stream
// (ctx ends when the handler returns).
func receive[T any](ctx context.Context, recv func() (T, error)) <-chan received[T] {
	in := make(chan received[T])
	go func() {
		for {
			msg, err := recv()
			select {
			case in <- received[T]{msg, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return in
}
