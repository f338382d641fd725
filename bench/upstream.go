package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// A benchmark stream names itself in its body's "user" field as
// "bench:ID:CHUNKS:DELAYMS", a field every forwarder passes through
// untouched (a proxy may drop unknown headers). The tap reads it and sets the
// sandbox's per-request X-Sandbox-Chunks and X-Sandbox-Chunk-Delay-Ms itself.
var streamTag = []byte(`"user":"bench:`)

// upstream is the sandbox, in this process, behind a tap that notes when each
// SSE event leaves it and when each token exchange is answered. Stamps and
// client-side arrival times are taken from one monotonic clock, so the delay
// a forwarder adds to each event is measured exactly instead of inferred.
type upstream struct {
	*sandbox.Server
	URL string
	srv *http.Server
	ln  net.Listener

	// TLSURL serves the same sandbox over TLS (HTTP/2 and HTTP/1.1 offered
	// by ALPN) once serveTLS has run; its CA is pki.CAPath.
	TLSURL string
	pki    *testPKI
	tlsSrv *http.Server
	tlsLn  net.Listener

	mu        sync.Mutex
	streams   map[string][]time.Time // stream id -> stamp of each flush (the first is the headers)
	exchanges []time.Time            // end of each successful exchange answer
}

func startUpstream(cfg sandbox.Config) (*upstream, error) {
	return startUpstreamOn(cfg, "127.0.0.1:0")
}

// startUpstreamOn is startUpstream listening on addr.
func startUpstreamOn(cfg sandbox.Config, addr string) (*upstream, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &upstream{Server: sandbox.New(cfg), URL: "http://" + ln.Addr().String(), ln: ln, streams: map[string][]time.Time{}}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

// serveTLS adds the TLS listener, with a new test CA written into dir.
func (u *upstream) serveTLS(dir string) error { return u.serveTLSOn(dir, "127.0.0.1:0") }

// serveTLSOn is serveTLS listening on addr.
func (u *upstream) serveTLSOn(dir, addr string) error {
	pki, err := newTestPKI(dir)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("upstream TLS: %w", err)
	}
	u.mu.Lock() // section 6's child answers stampsPath meanwhile
	u.pki, u.tlsLn, u.TLSURL = pki, ln, "https://"+ln.Addr().String()
	u.mu.Unlock()
	u.tlsSrv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pki.Server}, MinVersion: tls.VersionTLS12}}
	go func() { _ = u.tlsSrv.ServeTLS(ln, "", "") }()
	return nil
}

func (u *upstream) close() {
	_ = u.srv.Close()
	if u.tlsSrv != nil {
		_ = u.tlsSrv.Close()
	}
}

// benchStream returns the stream id a request's body names, after setting the
// sandbox's chunk headers it asks for; "" for any other request.
func benchStream(r *http.Request) string {
	if r.Method != http.MethodPost || r.Body == nil {
		return ""
	}
	// The tag is near the start; the rest passes on unread.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
	i := bytes.Index(body, streamTag)
	if err != nil || i < 0 {
		return ""
	}
	rest := body[i+len(streamTag):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return ""
	}
	parts := strings.Split(string(rest[:end]), ":")
	if len(parts) != 3 {
		return ""
	}
	r.Header.Set("X-Sandbox-Chunks", parts[1])
	r.Header.Set("X-Sandbox-Chunk-Delay-Ms", parts[2])
	return parts[0]
}

// streamBodyFor returns a streaming chat completion body tagged for the tap.
func streamBodyFor(id string, chunks int, delay time.Duration) []byte {
	return fmt.Appendf(nil, `{"model":"gpt-4.1","stream":true,"user":"bench:%s:%d:%d","messages":[{"role":"user","content":"Stream a short answer."}]}`,
		id, chunks, delay/time.Millisecond)
}

// ServeHTTP serves the sandbox, stamping what the benchmarks time.
func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == stampsPath {
		u.serveStamps(w, r)
		return
	}
	if id := benchStream(r); id != "" {
		sw := &stampWriter{ResponseWriter: w}
		u.Server.ServeHTTP(sw, r)
		u.mu.Lock()
		u.streams[id] = sw.stamps
		u.mu.Unlock()
		return
	}
	if strings.HasSuffix(r.URL.Path, "/copilot_internal/v2/token") {
		rec := &statusWriter{ResponseWriter: w}
		u.Server.ServeHTTP(rec, r)
		if rec.status == 0 || rec.status == http.StatusOK {
			now := time.Now()
			u.mu.Lock()
			u.exchanges = append(u.exchanges, now)
			u.mu.Unlock()
		}
		return
	}
	u.Server.ServeHTTP(w, r)
}

// exchangeURL and githubToken are what a broker needs of a sandbox.
func (u *upstream) exchangeURL() string        { return u.URL }
func (u *upstream) githubToken() secret.Secret { return u.GitHubToken() }

// takeStream returns and forgets the flush stamps of stream id.
func (u *upstream) takeStream(id string) []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.streams[id]
	delete(u.streams, id)
	return s
}

// waitStream returns the flush stamps of stream id once the tap has them
// (the client may read the last event before the tap records its flush),
// polling every poll until timeout; nil if they never come.
func (u *upstream) waitStream(id string, timeout, poll time.Duration) []time.Time {
	for deadline := time.Now().Add(timeout); ; {
		if stamps := u.takeStream(id); stamps != nil || time.Now().After(deadline) {
			return stamps
		}
		time.Sleep(poll)
	}
}

// exchangesSince returns the stamps of exchanges answered after t.
func (u *upstream) exchangesSince(t time.Time) []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []time.Time
	for _, e := range u.exchanges {
		if e.After(t) {
			out = append(out, e)
		}
	}
	return out
}

// copilotToken exchanges the sandbox's GitHub token for a Copilot token, as
// the direct and nginx baselines need one.
func (u *upstream) copilotToken(ctx context.Context) (string, error) {
	return exchangeToken(ctx, u.URL, u.GitHubToken())
}

// exchangeToken exchanges GitHub token gh at the sandbox at url for a
// Copilot token.
func exchangeToken(ctx context.Context, url string, gh secret.Secret) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/copilot_internal/v2/token", nil)
	req.Header.Set("Authorization", "token "+gh.Reveal())
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("exchange: %w", err)
	}
	defer resp.Body.Close()
	var ans struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("exchange: status %d: %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.Token == "" {
		return "", errors.Join(errors.New("exchange: no token in answer"), err)
	}
	return ans.Token, nil
}

// stampWriter notes the time of every flush, taken before the bytes are
// written to the connection, so a measured transit is never negative.
type stampWriter struct {
	http.ResponseWriter
	stamps []time.Time
}

func (s *stampWriter) Flush() {
	s.stamps = append(s.stamps, time.Now())
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *stampWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
