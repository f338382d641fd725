package forward

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/copilot-broker/copilot-broker/internal/tokencount"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// CountTokens says how /v1/messages/count_tokens is answered.
type CountTokens uint8

const (
	// CountTokensLocal answers with an estimate computed in the proxy
	// (internal/tokencount): the Copilot API does not serve the path.
	CountTokensLocal CountTokens = iota
	// CountTokensUpstream forwards the request like any other.
	CountTokensUpstream
)

// ParseCountTokens parses --count-tokens: "local" or "upstream".
func ParseCountTokens(s string) (CountTokens, error) {
	switch s {
	case "local", "":
		return CountTokensLocal, nil
	case "upstream":
		return CountTokensUpstream, nil
	}
	return 0, fmt.Errorf("--count-tokens %q: want local or upstream", s)
}

// serveCountTokens answers /v1/messages/count_tokens from the request body
// alone, in Anthropic's shape {"input_tokens": N}. It needs no Copilot
// token, so it answers even while the proxy has none.
func (h *Handler) serveCountTokens(w http.ResponseWriter, r *http.Request, rt *route, key string) {
	held, err := h.bodies.Read(w, r, key)
	if err != nil {
		h.rejectBody(w, rt, key, err)
		return
	}
	defer held.Free()
	if _, err := h.scan(r.Context().Done(), rt.shape, held.Bytes()); err != nil {
		h.reject(w, rt.name, key, rt.dialect, dialect.BadRequest(err.Error()))
		return
	}
	if e, ok := h.chargeMemory(w, held, tokencount.MemoryFactor, "to count"); !ok {
		h.reject(w, rt.name, key, rt.dialect, e)
		return
	}
	n, err := tokencount.Estimate(held.Bytes())
	if err != nil {
		msg := "invalid request body"
		if errors.Is(err, tokencount.ErrInvalid) {
			msg = err.Error()
		}
		h.reject(w, rt.name, key, rt.dialect, dialect.BadRequest(msg))
		return
	}
	b := strconv.AppendInt([]byte(`{"input_tokens":`), int64(n), 10)
	b = append(b, "}\n"...)
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	hd.Set("X-Request-Id", newRequestID())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	h.metrics.requests.WithLabelValues(rt.name, statusLabel(http.StatusOK), key).Inc()
}
