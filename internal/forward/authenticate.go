package forward

import "net/http"

// Authenticate names the key r presents (Authorization: Bearer or
// X-Api-Key), as every request is checked, or refuses it; "-" when no keys
// are configured. The WebSocket front (internal/forward/wsresponses) checks
// upgrades with it.
func (h *Handler) Authenticate(r *http.Request) (string, bool) {
	ck, err := h.authenticate(r)
	return ck.Name, err == nil
}
