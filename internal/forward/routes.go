package forward

import (
	"net/http"
	"strings"
)

// route is one client path the proxy serves.
type route struct {
	name     string // metrics label: the canonical client path
	upstream string // path under the Copilot API base URL
	method   string
	dialect  dialect
	kind     bodyKind
}

// bodyKind says how a route's request body is inspected.
type bodyKind uint8

const (
	bodyNone      bodyKind = iota // no body (GET)
	bodyOpaque                    // read and forwarded, not inspected
	bodyMessages                  // "messages": OpenAI chat or Anthropic
	bodyResponses                 // "input": OpenAI Responses API
)

var (
	routeChat        = &route{"/v1/chat/completions", "/chat/completions", http.MethodPost, dialectOpenAI, bodyMessages}
	routeModels      = &route{"/v1/models", "/models", http.MethodGet, dialectOpenAI, bodyNone}
	routeModel       = &route{"/v1/models/{id}", "/models", http.MethodGet, dialectOpenAI, bodyNone} // answered from the catalog
	routeEmbeddings  = &route{"/v1/embeddings", "/embeddings", http.MethodPost, dialectOpenAI, bodyOpaque}
	routeResponses   = &route{"/v1/responses", "/responses", http.MethodPost, dialectOpenAI, bodyResponses}
	routeMessages    = &route{"/v1/messages", "/v1/messages", http.MethodPost, dialectAnthropic, bodyMessages}
	routeCountTokens = &route{"/v1/messages/count_tokens", "/v1/messages/count_tokens", http.MethodPost, dialectAnthropic, bodyMessages}
)

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
func dialectOf(path string) dialect {
	if strings.HasPrefix(path, "/v1/messages") || strings.HasPrefix(path, "/messages") {
		return dialectAnthropic
	}
	return dialectOpenAI
}

// cutModelsPrefix returns the {id} of /v1/models/{id} or /models/{id}.
func cutModelsPrefix(path string) (string, bool) {
	if id, ok := strings.CutPrefix(path, "/v1/models/"); ok {
		return id, true
	}
	return strings.CutPrefix(path, "/models/")
}
