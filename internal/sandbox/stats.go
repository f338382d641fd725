package sandbox

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Request is what the sandbox saw of one request, kept for tests of the proxy
// to assert on what the upstream received.
type Request struct {
	Time      time.Time     `json:"time"`
	Method    string        `json:"method"`
	Path      string        `json:"path"`
	Header    http.Header   `json:"header"`
	Status    int           `json:"status"`
	Duration  time.Duration `json:"duration_ns"`
	Streamed  bool          `json:"streamed"`  // the answer was a stream
	Cancelled bool          `json:"cancelled"` // the client went away before the end
}

// Stats are the sandbox's counters since start or the last reset.
type Stats struct {
	// Exchanges counts token exchanges by HTTP status.
	Exchanges map[int]int `json:"exchanges"`
	// API counts Copilot API calls by path, then HTTP status.
	API map[string]map[int]int `json:"api"`
	// GitHub counts other GitHub calls (device flow, user) by path, then status.
	GitHub map[string]map[int]int `json:"github"`
	// StreamsCompleted and StreamsCancelled count streamed answers that ended
	// normally and those the client abandoned.
	StreamsCompleted int `json:"streams_completed"`
	StreamsCancelled int `json:"streams_cancelled"`
	// PremiumRequests counts billed requests (X-Initiator: user).
	PremiumRequests int `json:"premium_requests"`
	// Usage counts completions and the tokens reported in them by
	// "account/model" (usagecount.go).
	Usage map[string]UsageCount `json:"usage,omitempty"`
}

// ExchangeCount returns the number of exchanges, of every status.
func (st Stats) ExchangeCount() int {
	n := 0
	for _, c := range st.Exchanges {
		n += c
	}
	return n
}

// recorder captures the status of an answer and whether it was a stream.
type recorder struct {
	http.ResponseWriter
	status    int
	streamed  bool
	cancelled bool
	premium   bool
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets [http.ResponseController] reach the connection to flush.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// markStream notes on w's recorder that the answer is a stream and how it
// ended.
func markStream(w http.ResponseWriter, cancelled bool) {
	if rec, ok := w.(*recorder); ok {
		rec.streamed, rec.cancelled = true, cancelled
	}
}

type statsState struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every record
	log     []Request     // ring buffer
	next    int
	full    bool
	stats   Stats
}

func (s *statsState) init(size int) {
	s.changed = make(chan struct{})
	if size > 0 {
		s.log = make([]Request, size)
	}
	s.stats = newStats()
}

func newStats() Stats {
	return Stats{Exchanges: map[int]int{}, API: map[string]map[int]int{}, GitHub: map[string]map[int]int{}}
}

func isExchange(path string) bool { return strings.HasSuffix(path, "/copilot_internal/v2/token") }

func isGitHub(path string) bool {
	return strings.HasPrefix(path, "/login/") || strings.HasSuffix(path, "/copilot_internal/user")
}

func (s *statsState) record(r *http.Request, rec *recorder, d time.Duration) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	path := r.URL.Path
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case isExchange(path):
		s.stats.Exchanges[status]++
	case isGitHub(path):
		count(s.stats.GitHub, path, status)
	default:
		count(s.stats.API, path, status)
	}
	if rec.streamed {
		if rec.cancelled {
			s.stats.StreamsCancelled++
		} else {
			s.stats.StreamsCompleted++
		}
	}
	if rec.premium {
		s.stats.PremiumRequests++
	}
	if len(s.log) > 0 {
		e := &s.log[s.next]
		// Reuse the slot's header map: the log stays bounded and cheap.
		h := e.Header
		clear(h)
		if h == nil {
			h = make(http.Header, len(r.Header))
		}
		for k, v := range r.Header {
			h[k] = append(h[k][:0:0], v...)
		}
		*e = Request{Time: time.Now(), Method: r.Method, Path: path, Header: h, Status: status,
			Duration: d, Streamed: rec.streamed, Cancelled: rec.cancelled}
		s.next++
		if s.next == len(s.log) {
			s.next, s.full = 0, true
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func count(m map[string]map[int]int, path string, status int) {
	byStatus := m[path]
	if byStatus == nil {
		byStatus = map[int]int{}
		m[path] = byStatus
	}
	byStatus[status]++
}

// Requests returns the most recent requests to GitHub and Copilot API paths,
// oldest first (admin calls are not recorded). Each is a deep copy.
func (s *Server) Requests() []Request {
	st := &s.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []Request
	if st.full {
		out = append(out, st.log[st.next:]...)
	}
	out = append(out, st.log[:st.next]...)
	for i := range out {
		out[i].Header = out[i].Header.Clone()
	}
	return out
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	st := &s.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.snapshotLocked()
}

func (s *statsState) snapshotLocked() Stats {
	out := s.stats
	out.Exchanges = make(map[int]int, len(s.stats.Exchanges))
	for k, v := range s.stats.Exchanges {
		out.Exchanges[k] = v
	}
	out.API = copyNested(s.stats.API)
	out.GitHub = copyNested(s.stats.GitHub)
	out.Usage = copyUsage(s.stats.Usage)
	return out
}

func copyNested(m map[string]map[int]int) map[string]map[int]int {
	out := make(map[string]map[int]int, len(m))
	for path, byStatus := range m {
		c := make(map[int]int, len(byStatus))
		for k, v := range byStatus {
			c[k] = v
		}
		out[path] = c
	}
	return out
}

// ResetStats zeroes the counters and empties the request log.
func (s *Server) ResetStats() {
	st := &s.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stats = newStats()
	clear(st.log)
	st.next, st.full = 0, false
}

// Wait blocks until cond holds for the counters or ctx ends. Requests are
// counted after their answer is complete, so a test can wait for the sandbox
// to have seen a stream cancelled, say, without sleeping.
func (s *Server) Wait(ctx context.Context, cond func(Stats) bool) error {
	st := &s.stats
	for {
		st.mu.Lock()
		snap, changed := st.snapshotLocked(), st.changed
		st.mu.Unlock()
		if cond(snap) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
