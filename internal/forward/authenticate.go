package forward

import "net/http"

// Authenticate names the key r presents (Authorization: Bearer or
// X-Api-Key), as every request is checked; "-" when no keys are configured.
// The WebSocket front (internal/forward/wsresponses) checks upgrades with it.
func (h *Handler) Authenticate(r *http.Request) (string, bool) { return h.authenticate(r) }
