package forward

import (
	"net/http"
	"strings"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
	"github.com/copilot-broker/copilot-broker/internal/forward/inspect"
)

// route is one client path the proxy serves.
type route struct {
	name     string // metrics label: the canonical client path
	upstream string // path under the Copilot API base URL
	method   string
	dialect  dialect.Dialect // of its answers, errors included
	shape    inspect.Shape   // how its body is scanned (a GET has none)
}

var (
	routeChat        = &route{"/v1/chat/completions", "/chat/completions", http.MethodPost, dialect.Chat, inspect.Messages}
	routeModels      = &route{"/v1/models", "/models", http.MethodGet, dialect.Chat, inspect.Opaque}
	routeModel       = &route{"/v1/models/{id}", "/models", http.MethodGet, dialect.Chat, inspect.Opaque} // answered from the catalog
	routeEmbeddings  = &route{"/v1/embeddings", "/embeddings", http.MethodPost, dialect.Chat, inspect.Opaque}
	routeResponses   = &route{"/v1/responses", "/responses", http.MethodPost, dialect.Responses, inspect.Responses}
	routeMessages    = &route{"/v1/messages", "/v1/messages", http.MethodPost, dialect.Messages, inspect.Messages}
	routeCountTokens = &route{"/v1/messages/count_tokens", "/v1/messages/count_tokens", http.MethodPost, dialect.Messages, inspect.Messages}
)

// hasBody says whether the route's requests carry a body upstream.
func (rt *route) hasBody() bool { return rt.method != http.MethodGet }

// lookupRoute maps a client path to its route. A switch keeps the hot path
// free of maps and patterns; both the /v1 and the unprefixed forms are
// accepted.
func lookupRoute(path string) *route {
	switch path {
	case "/v1/chat/completions", "/chat/completions":
		return routeChat
	case "/v1/models", "/models":
		return routeModels
	case "/v1/embeddings", "/embeddings":
		return routeEmbeddings
	case "/v1/responses", "/responses":
		return routeResponses
	case "/v1/messages", "/messages":
		return routeMessages
	case "/v1/messages/count_tokens", "/messages/count_tokens":
		return routeCountTokens
	}
	if id, ok := cutModelsPrefix(path); ok && id != "" {
		return routeModel
	}
	return nil
}

// dialectOf picks the error dialect of a path that matched no route.
func dialectOf(path string) dialect.Dialect { return dialect.OfPath(path) }

// cutModelsPrefix returns the {id} of /v1/models/{id} or /models/{id}.
func cutModelsPrefix(path string) (string, bool) {
	if id, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		return id, true
	}
	return strings.CutPrefix(path, "/models/")
}
