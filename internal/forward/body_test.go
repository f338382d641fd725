package forward

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// chunkReader hands out its data a few bytes at a time, like a chunked body,
// and counts what was read.
type chunkReader struct {
	left, read int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.left, 1000)
	c.left -= n
	c.read += n
	return n, nil
}

func TestReadBody(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		hint      int64
		limit     int64
		wantErr   error
		wantReadN int // at most this much read from the client
	}{
		{"small, length known", 100, 100, 1000, nil, 100},
		{"exactly the limit, length known", 1000, 1000, 1000, nil, 1000},
		{"exactly the limit, chunked", 1000, -1, 1000, nil, 1000},
		{"too large by length", 5000, 5000, 1000, errBodyTooLarge, 0},
		{"too large, chunked", 1 << 20, -1, 1000, errBodyTooLarge, 1001},
		{"large, chunked", 100 << 10, -1, 1 << 20, nil, 100 << 10},
	}
	pool := newBodyPool()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &chunkReader{left: tt.size}
			b, err := readBody(pool, src, tt.hint, tt.limit, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("readBody(%d bytes, hint %d, limit %d) error = %v; want %v", tt.size, tt.hint, tt.limit, err, tt.wantErr)
			}
			if src.read > tt.wantReadN {
				t.Errorf("readBody read %d bytes from the client; want at most %d", src.read, tt.wantReadN)
			}
			if err != nil {
				return
			}
			defer b.release()
			if len(b.buf) != tt.size {
				t.Errorf("readBody kept %d bytes; want %d", len(b.buf), tt.size)
			}
		})
	}
}

// TestBodyReaderAfterClose: a transport still writing a body after the
// handler returned must not read a buffer recycled for another request.
func TestBodyReaderAfterClose(t *testing.T) {
	pool := newBodyPool()
	b, err := readBody(pool, strings.NewReader("first request's body"), -1, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := b.reader()
	p := make([]byte, 5)
	if n, err := r.Read(p); n != 5 || err != nil || string(p) != "first" {
		t.Fatalf("Read = %d %q %v; want 5 \"first\" nil", n, p[:n], err)
	}
	r.Close()
	r.Close() // idempotent: one reference dropped, not two
	if got := b.refs.Load(); got != 1 {
		t.Fatalf("references after closing the reader twice = %d; want 1 (the handler's)", got)
	}
	b.release()
	if n, err := r.Read(p); n != 0 || !errors.Is(err, errBodyClosed) {
		t.Errorf("Read after Close = %d, %v; want 0, errBodyClosed", n, err)
	}
}

// TestBodyReaderCloseWhileReading runs Read and Close concurrently under
// -race: the buffer is released only when no Read is using it.
func TestBodyReaderCloseWhileReading(t *testing.T) {
	pool := newBodyPool()
	for range 100 {
		b, err := readBody(pool, strings.NewReader(strings.Repeat("x", 4096)), -1, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := b.reader()
		b.release()
		var wg sync.WaitGroup
		wg.Go(func() {
			p := make([]byte, 16)
			for {
				if _, err := r.Read(p); err != nil {
					return
				}
			}
		})
		r.Close()
		// Reuse the buffer at once, as another request would.
		b2, err := readBody(pool, strings.NewReader(strings.Repeat("y", 4096)), -1, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		b2.release()
	}
}

// TestBodyBuffersReturnToPool: once a request is done its body buffer goes
// back to the pool, so that the next request reuses it instead of allocating
// (the reverse proxy never closes the outbound body itself: the handler must).
func TestBodyBuffersReturnToPool(t *testing.T) {
	e := newEnv(t, nil, nil)
	var (
		mu   sync.Mutex
		made []*bodyBuf
	)
	e.handler.bodies = &sync.Pool{New: func() any {
		b := &bodyBuf{buf: make([]byte, 0, 16<<10)}
		mu.Lock()
		made = append(made, b)
		mu.Unlock()
		return b
	}}
	// A small body of known length has a buffer of its own, never pooled.
	for i := range 5 {
		resp, body := e.do(t, "POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("small request %d = %d %s; want 200", i, resp.StatusCode, body)
		}
	}
	mu.Lock()
	if len(made) != 0 {
		t.Errorf("%d pooled buffers made for small bodies; want none", len(made))
	}
	mu.Unlock()
	const requests = 20
	large := `{"model":"gpt-4.1","messages":[{"role":"user","content":"` + strings.Repeat("x", 2*smallBody) + `"}]}`
	for i := range requests {
		resp, body := e.do(t, "POST", "/v1/chat/completions", large, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d = %d %s; want 200", i, resp.StatusCode, body)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		held := 0
		for _, b := range made {
			if b.refs.Load() != 0 {
				held++
			}
		}
		n := len(made)
		mu.Unlock()
		if held == 0 {
			// The race detector drops a share of pool puts, so allow some
			// misses; without release every request would allocate.
			if n > requests/2 {
				t.Errorf("%d buffers allocated for %d sequential requests; want reuse", n, requests)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d body buffers still referenced after every request finished; want all released", held, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
