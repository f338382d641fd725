package headers

// Intents are the Openai-Intent values sent per upstream endpoint
// (docs/protocol.md section 4): the reference client's own proxies for
// external agents send messages-proxy on /v1/messages and responses-proxy on
// /responses, its agent mode conversation-agent on /chat/completions, and
// /models is fetched with model-access. GitHub documents none of them, so
// each is configurable.
type Intents struct {
	Chat       string // /chat/completions
	Responses  string // /responses
	Messages   string // /v1/messages (and count_tokens when forwarded)
	Models     string // /models
	Embeddings string // /embeddings
}

// DefaultIntents returns the reference client's values. Embeddings keep the
// value every route had before (conversation-panel): no public client shows
// another.
func DefaultIntents() Intents {
	return Intents{
		Chat:       "conversation-agent",
		Responses:  "responses-proxy",
		Messages:   "messages-proxy",
		Models:     "model-access",
		Embeddings: "conversation-panel",
	}
}

// WithDefaults returns in with its empty fields set from [DefaultIntents].
func (in Intents) WithDefaults() Intents {
	d := DefaultIntents()
	pick := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	pick(&in.Chat, d.Chat)
	pick(&in.Responses, d.Responses)
	pick(&in.Messages, d.Messages)
	pick(&in.Models, d.Models)
	pick(&in.Embeddings, d.Embeddings)
	return in
}

// Of returns the intent for a request to the upstream path target (the
// endpoint the request is sent to, which a translated request picks, not
// the client's path).
func (in Intents) Of(target string) string {
	return in.values()[endpointOf(target)]
}

// endpoint is an upstream endpoint with an intent of its own.
type endpoint uint8

const (
	chat endpoint = iota // and any other path
	responses
	messages
	models
	embeddings
	numEndpoints
)

// endpointOf returns the endpoint of the upstream path target.
func endpointOf(target string) endpoint {
	switch target {
	case "/responses":
		return responses
	case "/v1/messages", "/v1/messages/count_tokens":
		return messages
	case "/models":
		return models
	case "/embeddings":
		return embeddings
	}
	return chat
}

// values returns the intents indexed by endpoint.
func (in Intents) values() [numEndpoints]string {
	return [numEndpoints]string{chat: in.Chat, responses: in.Responses, messages: in.Messages, models: in.Models, embeddings: in.Embeddings}
}
