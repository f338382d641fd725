package brokerclient

import (
	"errors"
	"io"
)

// receiver is a server stream of the broker API.
type receiver[T any] interface {
	Recv() (T, error)
}

// receive hands each message of stream to apply, first reporting whether
// it is the stream's first, until the stream ends. got reports whether any
// message came (the caller's reconnect policy depends on it); an end with
// io.EOF (the broker closed the stream on age or at shutdown) is no error.
func receive[T any](stream receiver[T], apply func(msg T, first bool)) (got bool, err error) {
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		apply(msg, !got)
		got = true
	}
}
