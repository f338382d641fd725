package sandbox

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
)

// Retirement is what the sandbox refuses as GitHub does when it retires an
// editor release or an API version (docs/protocol.md section 8): every
// value listed gets 466 on the Copilot API and on the token exchange, until
// [Server.Unretire]. The header each value is compared with is named by the
// field.
type Retirement struct {
	EditorVersions       []string `json:"editor_versions,omitempty"`        // Editor-Version
	EditorPluginVersions []string `json:"editor_plugin_versions,omitempty"` // Editor-Plugin-Version
	UserAgents           []string `json:"user_agents,omitempty"`            // User-Agent
	APIVersions          []string `json:"api_versions,omitempty"`           // X-GitHub-Api-Version of API calls
	ExchangeAPIVersions  []string `json:"exchange_api_versions,omitempty"`  // X-GitHub-Api-Version of the exchange
}

// retired is the sandbox's retirement list; the fast path is one atomic
// load when nothing is retired.
type retired struct {
	any atomic.Bool
	mu  sync.Mutex
	r   Retirement
}

// Retire adds r's values to the retired ones, at run time.
func (s *Server) Retire(r Retirement) {
	s.retired.mu.Lock()
	defer s.retired.mu.Unlock()
	t := &s.retired.r
	t.EditorVersions = append(t.EditorVersions, r.EditorVersions...)
	t.EditorPluginVersions = append(t.EditorPluginVersions, r.EditorPluginVersions...)
	t.UserAgents = append(t.UserAgents, r.UserAgents...)
	t.APIVersions = append(t.APIVersions, r.APIVersions...)
	t.ExchangeAPIVersions = append(t.ExchangeAPIVersions, r.ExchangeAPIVersions...)
	s.retired.any.Store(true)
	s.log.Info("sandbox: versions retired", "retired", fmt.Sprintf("%+v", *t))
}

// Unretire serves every version again.
func (s *Server) Unretire() {
	s.retired.mu.Lock()
	defer s.retired.mu.Unlock()
	s.retired.r = Retirement{}
	s.retired.any.Store(false)
}

// refusal returns the message of a 466 for a request with header h, "" when
// nothing it carries is retired.
func (s *Server) refusal(h http.Header, exchange bool) string {
	if !s.retired.any.Load() {
		return ""
	}
	s.retired.mu.Lock()
	defer s.retired.mu.Unlock()
	t := s.retired.r
	checks := []struct {
		header string
		list   []string
		msg    string
	}{
		{"Editor-Version", t.EditorVersions, "client not supported: %s is retired; please update"},
		{"Editor-Plugin-Version", t.EditorPluginVersions, "client not supported: %s is retired; please update"},
		{"User-Agent", t.UserAgents, "client not supported: %s is retired; please update"},
	}
	if exchange {
		checks = append(checks, struct {
			header string
			list   []string
			msg    string
		}{"X-Github-Api-Version", t.ExchangeAPIVersions, "API version no longer supported: %s"})
	} else {
		checks = append(checks, struct {
			header string
			list   []string
			msg    string
		}{"X-Github-Api-Version", t.APIVersions, "API version no longer supported: %s"})
	}
	for _, c := range checks {
		if v := h.Get(c.header); v != "" && slices.Contains(c.list, v) {
			return fmt.Sprintf(c.msg, v)
		}
	}
	return ""
}

// checkRetired answers a Copilot API call carrying a retired value with the
// API's 466.
func (s *Server) checkRetired(w http.ResponseWriter, r *http.Request) bool {
	msg := s.refusal(r.Header, false)
	if msg == "" {
		return true
	}
	writeAPIError(w, r, 466, "invalid_request_error", "client_not_supported", msg)
	return false
}

// checkRetiredExchange answers a token exchange carrying a retired value
// with GitHub's 466 body.
func (s *Server) checkRetiredExchange(w http.ResponseWriter, r *http.Request) bool {
	msg := s.refusal(r.Header, true)
	if msg == "" {
		return true
	}
	writeJSON(w, 466, map[string]string{"message": msg, "documentation_url": "https://docs.github.com/copilot"})
	return false
}

// adminRetireRoutes: POST /_sandbox/retire with a [Retirement] body adds to
// the retired values; DELETE /_sandbox/retire serves every version again;
// GET shows the list.
func (s *Server) adminRetireRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /_sandbox/retire", func(w http.ResponseWriter, r *http.Request) {
		var req Retirement
		if !adminDecode(w, r, &req) {
			return
		}
		if len(req.EditorVersions)+len(req.EditorPluginVersions)+len(req.UserAgents)+len(req.APIVersions)+len(req.ExchangeAPIVersions) == 0 {
			adminError(w, http.StatusBadRequest, errors.New("name at least one value to retire"))
			return
		}
		s.Retire(req)
		adminOK(w)
	})
	m.HandleFunc("DELETE /_sandbox/retire", func(w http.ResponseWriter, r *http.Request) {
		s.Unretire()
		adminOK(w)
	})
	m.HandleFunc("GET /_sandbox/retire", func(w http.ResponseWriter, r *http.Request) {
		s.retired.mu.Lock()
		t := s.retired.r
		s.retired.mu.Unlock()
		writeJSON(w, http.StatusOK, t)
	})
}
