package sandbox

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Running is a [Server] listening on a TCP address, for tests, benchmarks and
// the quick start.
type Running struct {
	*Server
	// URL is the base URL, e.g. http://127.0.0.1:40123; GitHub, the Copilot
	// API and the admin API (URL + "/_sandbox/") are all served under it.
	URL string

	srv    *http.Server
	served chan error

	mu       sync.Mutex // guards closing and inflight.Add, so no Add races Wait
	closing  bool
	inflight sync.WaitGroup
}

// Start runs a new Server on a random loopback port. Close it when done.
func Start(cfg Config) (*Running, error) { return Listen(cfg, "127.0.0.1:0") }

// Listen runs a new Server on addr.
func Listen(cfg Config, addr string) (*Running, error) { return Serve(New(cfg), addr) }

// Serve runs s on addr; s's GitHub token can be handed out (written to a
// file, say) before anything connects.
func Serve(s *Server, addr string) (*Running, error) { return ServeTLS(s, addr, nil) }

// ServeTLS runs s on addr over TLS with tc (HTTP/2 offered, as the Copilot
// API does); a nil tc serves plain HTTP like [Serve]. URL then starts with
// https://; a token's endpoints.api follows the scheme unless
// [Config.BaseURL] names another URL.
func ServeTLS(s *Server, addr string, tc *tls.Config) (*Running, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sandbox: listening on %s: %w", addr, err)
	}
	scheme := "http://"
	if tc != nil {
		tc = tc.Clone()
		if tc.MinVersion == 0 {
			tc.MinVersion = tls.VersionTLS12
		}
		scheme = "https://"
	}
	r := &Running{Server: s, URL: scheme + ln.Addr().String(), served: make(chan error, 1)}
	r.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if !r.enter() {
				http.Error(w, "sandbox: shutting down", http.StatusServiceUnavailable)
				return
			}
			defer r.inflight.Done()
			s.ServeHTTP(w, req)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		TLSConfig:         tc,
	}
	go func() {
		if tc != nil {
			r.served <- r.srv.ServeTLS(ln, "", "") // the certificate is in tc
			return
		}
		r.served <- r.srv.Serve(ln)
	}()
	return r, nil
}

// Close stops at once: it closes the listener and every connection (which
// cancels in-flight streams) and waits for handlers to return.
func (r *Running) Close() error {
	err := r.srv.Close()
	r.wait()
	return err
}

// Shutdown stops accepting connections and waits for in-flight requests, up
// to ctx; then it closes what remains.
func (r *Running) Shutdown(ctx context.Context) error {
	err := r.srv.Shutdown(ctx)
	if err != nil {
		_ = r.srv.Close()
	}
	r.wait()
	return err
}

func (r *Running) wait() {
	if err := <-r.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		r.log.Warn("sandbox: serve ended", "error", err)
	}
	r.served <- http.ErrServerClosed // a second Close or Shutdown returns too
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	r.inflight.Wait()
}

// enter counts a handler in, unless the server is closing: a handler whose
// connection raced Close must not Add to the WaitGroup while wait waits.
func (r *Running) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.inflight.Add(1)
	return true
}
