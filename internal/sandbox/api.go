package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds request bodies; larger ones get 413.
const maxBody = 8 << 20

type apiErrorBody struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Param   string `json:"param,omitempty"`
}

type apiError struct {
	// Type is "error" on the Anthropic paths, so the body reads as both the
	// OpenAI and the Anthropic error shape.
	Type  string       `json:"type,omitempty"`
	Error apiErrorBody `json:"error"`
}

// writeAPIError answers an error in the OpenAI shape
// {"error":{"message","type","code"}}.
func writeAPIError(w http.ResponseWriter, r *http.Request, status int, typ, code, msg string) {
	e := apiError{Error: apiErrorBody{Message: msg, Type: typ, Code: code}}
	if strings.HasPrefix(r.URL.Path, pathMessages) {
		e.Type = "error"
	}
	writeJSON(w, status, e)
}

func writeAPIFault(w http.ResponseWriter, r *http.Request, f Fault) {
	setRetryAfter(w, f)
	typ, code, msg := "api_error", "", http.StatusText(f.Status)
	switch f.Status {
	case http.StatusUnauthorized:
		typ, code, msg = "authentication_error", "unauthorized", "unauthorized: token expired"
	case http.StatusForbidden:
		typ, code, msg = "permission_error", "forbidden", "Forbidden: access to this model is not allowed"
	case http.StatusTooManyRequests:
		typ, code, msg = "rate_limit_error", "rate_limited", "Sorry, you have been rate-limited. Please wait a moment before trying again."
	}
	writeAPIError(w, r, f.Status, typ, code, msg)
}

// api wraps a Copilot API handler with what every call goes through: latency,
// injected faults, the Copilot token, the required headers and billing.
func (s *Server) api(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !sleep(r, time.Duration(s.apiLatency.Load())) {
			return
		}
		if f, ok := s.takeAPIFault(); ok {
			writeAPIFault(w, r, f)
			return
		}
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			tok = ""
		}
		if err := s.verifyToken(tok, s.clock.Now()); err != nil {
			writeAPIError(w, r, http.StatusUnauthorized, "authentication_error", "unauthorized", "unauthorized: "+err.Error())
			return
		}
		acct := s.tokenAccount(tok)
		if acct == nil {
			writeAPIError(w, r, http.StatusUnauthorized, "authentication_error", "unauthorized", "unauthorized: account removed")
			return
		}
		if f, ok := s.takeAccountAPIFault(acct); ok {
			writeAPIFault(w, r, f)
			return
		}
		for _, name := range [...]string{"Copilot-Integration-Id", "Editor-Version"} {
			if r.Header.Get(name) == "" {
				writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "missing_header",
					"missing required header: "+name)
				return
			}
		}
		if !s.checkClient(w, r) || !s.checkRetired(w, r) || !s.checkBetas(w, r) {
			return
		}
		if !s.usageHeaders(w, r, acct) {
			return
		}
		premium := r.Method == http.MethodPost && r.Header.Get("X-Initiator") == "user" && r.URL.Path != pathEmbeddings &&
			!strings.HasSuffix(r.URL.Path, "/count_tokens")
		if acct.quotaRefuses(premium, r) {
			writeQuotaExceeded(w, r)
			return
		}
		if premium {
			acct.premiumUsed.Add(1)
			if rec, ok := w.(*recorder); ok {
				rec.premium = true
			}
		}
		s.setQuotaHeaders(w, acct)
		h(w, withAccount(r, acct))
	}
}

// decode reads a JSON body into v, answering 400 (or 413) itself on failure.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(v)
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeAPIError(w, r, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "request body too large")
	case errors.Is(err, io.EOF):
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", "empty request body")
	default:
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", "invalid JSON body: "+err.Error())
	}
	return false
}

// resolveModel finds id and checks that it is enabled and served on the
// request's path, answering 400 itself otherwise.
func (s *Server) resolveModel(w http.ResponseWriter, r *http.Request, id string) (*model, bool) {
	m := s.models.byID[id]
	switch {
	case id == "":
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "missing_required_parameter", "model is required")
	case m == nil || !m.enabled():
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "model_not_supported", "The requested model is not supported.")
	case !m.serves(r.URL.Path):
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "unsupported_api_for_model",
			fmt.Sprintf("model %q is not accessible via the %s endpoint", id, r.URL.Path))
	default:
		return m, true
	}
	return nil, false
}

// checkVision answers 400 when a body carrying images lacks the header the
// Copilot API requires for them.
func checkVision(w http.ResponseWriter, r *http.Request, image bool) bool {
	if image && r.Header.Get("Copilot-Vision-Request") != "true" {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "missing_vision_header",
			"missing required Copilot-Vision-Request header for vision requests")
		return false
	}
	return true
}

// reply is the sandbox's answer to a prompt: it echoes the start of it.
func reply(prompt string) string {
	prompt = strings.Join(strings.Fields(prompt), " ")
	if len(prompt) > 200 {
		cut := 200
		for cut > 0 && prompt[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		prompt = prompt[:cut] + "..."
	}
	if prompt == "" {
		return "Sandbox reply."
	}
	return "Sandbox reply to: " + prompt
}

// estimateTokens approximates a token count as a quarter of the bytes.
func estimateTokens(s string) int { return max((len(s)+3)/4, 1) }

// streamShape returns the chunk count and delay of a stream: the config's,
// overridden by the X-Sandbox-Chunks and X-Sandbox-Chunk-Delay-Ms headers.
func (s *Server) streamShape(w http.ResponseWriter, r *http.Request) (int, time.Duration, bool) {
	n, delay := s.cfg.Chunks, s.cfg.ChunkDelay
	if v := r.Header.Get("X-Sandbox-Chunks"); v != "" {
		x, err := strconv.Atoi(v)
		if err != nil || x < 1 || x > 10000 {
			writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_sandbox_header", "X-Sandbox-Chunks: want 1..10000")
			return 0, 0, false
		}
		n = x
	}
	if v := r.Header.Get("X-Sandbox-Chunk-Delay-Ms"); v != "" {
		x, err := strconv.Atoi(v)
		if err != nil || x < 0 || x > 60000 {
			writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_sandbox_header", "X-Sandbox-Chunk-Delay-Ms: want 0..60000")
			return 0, 0, false
		}
		delay = time.Duration(x) * time.Millisecond
	}
	return n, delay, true
}

// splitChunks splits text into n non-empty pieces at word boundaries whose
// concatenation is the text (padded with filler words when it has fewer than n).
func splitChunks(text string, n int) []string {
	words := strings.Fields(text)
	for len(words) < n {
		words = append(words, "more")
	}
	out := make([]string, n)
	for i := range n {
		part := strings.Join(words[i*len(words)/n:(i+1)*len(words)/n], " ")
		if i > 0 {
			part = " " + part
		}
		out[i] = part
	}
	return out
}
