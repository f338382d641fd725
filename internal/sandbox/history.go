package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
)

// maxHistory bounds the stored responses that previous_response_id can name.
const maxHistory = 1024

// historyState keeps, per stored response, its whole conversation (input
// items then output items), so that a request naming it in
// previous_response_id continues it as the API does.
type historyState struct {
	mu    sync.Mutex
	byID  map[string][]json.RawMessage
	order []string // oldest first; bounded by maxHistory
}

// withHistory prepends the conversation of req's previous_response_id to its
// input, answering 400 itself when that response is unknown.
func (s *Server) withHistory(w http.ResponseWriter, r *http.Request, req *responsesRequest) bool {
	if req.PreviousResponseID == "" {
		return true
	}
	s.history.mu.Lock()
	prev, ok := s.history.byID[req.PreviousResponseID]
	s.history.mu.Unlock()
	if !ok {
		writeAPIErrorParam(w, r, http.StatusBadRequest, "invalid_request_error", "previous_response_not_found",
			fmt.Sprintf("Previous response with id '%s' not found.", req.PreviousResponseID), "previous_response_id")
		return false
	}
	cur, err := inputItems(req.Input)
	if err != nil {
		writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_value", err.Error())
		return false
	}
	all := append(append(make([]json.RawMessage, 0, len(prev)+len(cur)), prev...), cur...)
	req.Input, _ = json.Marshal(all)
	return true
}

// remember stores the conversation of a stored response.
func (s *Server) remember(id string, input json.RawMessage, output []responseItem) {
	items, err := inputItems(input)
	if err != nil {
		return
	}
	for _, it := range output {
		raw, err := json.Marshal(it)
		if err != nil {
			return
		}
		items = append(items, raw)
	}
	h := &s.history
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byID == nil {
		h.byID = map[string][]json.RawMessage{}
	}
	if len(h.order) >= maxHistory {
		delete(h.byID, h.order[0])
		h.order = h.order[1:]
	}
	h.byID[id] = items
	h.order = append(h.order, id)
}

// inputItems returns a Responses input as its items (a string is one user
// message).
func inputItems(input json.RawMessage) ([]json.RawMessage, error) {
	if len(input) == 0 {
		return nil, nil
	}
	if input[0] == '"' {
		var text string
		if err := json.Unmarshal(input, &text); err != nil {
			return nil, err
		}
		msg, _ := json.Marshal(map[string]string{"role": "user", "content": text})
		return []json.RawMessage{msg}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(input, &items); err != nil {
		return nil, fmt.Errorf("input: want a string or an array of input items")
	}
	return items, nil
}

// writeAPIErrorParam is writeAPIError naming the parameter at fault.
func writeAPIErrorParam(w http.ResponseWriter, r *http.Request, status int, typ, code, msg, param string) {
	writeJSON(w, status, apiError{Error: apiErrorBody{Message: msg, Type: typ, Code: code, Param: param}})
}
