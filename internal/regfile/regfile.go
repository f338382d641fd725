// Package regfile opens files the processes re-read on their own (the
// token file, the accounts directory, the model alias file) without ever
// blocking on one: a FIFO, a device or a socket at such a path would stop a
// poller for good, and with it reloads and shutdown.
package regfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ErrNotRegular is wrapped by the errors about a path that is not a
// regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped by [Read]'s error for a file over its bound.
var ErrTooLarge = errors.New("file too large")

// Open opens path for reading without blocking (O_NONBLOCK: opening a FIFO
// with no writer returns at once) and returns it only if it is a regular
// file, checked on the opened file, not on the path, so a swap between
// check and open cannot slip another kind in. Symlinks are followed.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fi.Mode().Type())
	}
	return f, nil
}

// Read returns the content of the regular file at path, at most max bytes.
func Read(path string, max int64) ([]byte, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, max)
}

// ReadAll reads f to its end, at most max bytes.
func ReadAll(f *os.File, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", f.Name(), ErrTooLarge, max)
	}
	return b, nil
}
