package forward

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/catalog"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
	"github.com/copilot-broker/copilot-broker/internal/forward/headers"
)

// ModelsConfig turns on the model catalog: request model names are resolved
// against each account's /models, bodies are rewritten when the name
// changes, requests for a model that lacks the client's endpoint are
// answered by the proxy, and GET /v1/models is answered from the catalog.
type ModelsConfig struct {
	// Aliases is the operator's alias file; nil: none.
	Aliases *catalog.AliasFile
	// Refresh is the most a catalog ages before it is refetched. Default
	// 10 min.
	Refresh time.Duration
	// FirstWait bounds how long a request waits for an account's first
	// catalog; it is forwarded unchecked when none comes. Default 3 s.
	FirstWait time.Duration
}

// models is the handler's catalog side; nil when the catalog is off.
type models struct {
	store   *catalog.Store
	aliases *catalog.AliasFile
}

func (h *Handler) newModels(cfg *ModelsConfig) error {
	if cfg == nil {
		return nil
	}
	store, err := catalog.NewStore(catalog.StoreConfig{
		Fetch: h.fetchModels, Refresh: cfg.Refresh, FirstWait: cfg.FirstWait,
		Metrics: h.metrics.catalog, Clock: h.clock, Logger: h.log.With("component", "catalog"),
	})
	if err != nil {
		return err
	}
	h.models = &models{store: store, aliases: cfg.Aliases}
	return nil
}

// Close stops the handler's background work (catalog fetches). Requests
// still running are not affected.
func (h *Handler) Close() {
	if h.models != nil {
		h.models.store.Close()
	}
}

// routeDecision is the model stage's answer for one request: the model the
// body names, what it resolved to, and whether that model is served on the
// client's endpoint: passed through when supported, translated to an
// endpoint it has otherwise (translate_route.go), refused when none fits.
type routeDecision struct {
	// resolved is the model sent upstream ("" when the body names none).
	resolved string
	rule     catalog.Rule
	// model is resolved's catalog entry; nil when the model is unknown or
	// no catalog could be had: such requests are forwarded unchecked.
	model *catalog.Model
	// endpoint is the upstream path of the client's route.
	endpoint string
}

// supported returns the upstream paths the model is served on; nil when
// unknown (every endpoint assumed).
func (d *routeDecision) supported() []string {
	if d.model == nil {
		return nil
	}
	return d.model.Endpoints
}

// passThrough reports whether the request goes upstream as the client sent
// it (with the model name resolved).
func (d *routeDecision) passThrough() bool { return d.model == nil || d.model.Serves(d.endpoint) }

// endpointOf returns the upstream endpoint whose support a route needs:
// count_tokens belongs to the Messages API.
func endpointOf(rt *route) string {
	if rt == routeCountTokens {
		return routeMessages.upstream
	}
	return rt.upstream
}

// resolveModel is the model stage: it resolves the body's model against the
// account's catalog, rewrites the name in the body when it changes, and
// decides the route. It returns false when it answered the client itself.
func (h *Handler) resolveModel(w http.ResponseWriter, r *http.Request, c *call) bool {
	d := &c.decision
	d.endpoint = endpointOf(c.route)
	start, end := c.in.ModelStart, c.in.ModelEnd
	if h.models == nil {
		return end == 0 || h.allowModel(w, c, c.body.Bytes()[start:end])
	}
	if end == 0 {
		h.metrics.catalog.Resolved(catalog.RuleNone)
		return true
	}
	cat, err := h.models.store.Get(r.Context(), c.acct.account, catalog.Gen{Generation: c.tok.Generation, Epoch: c.tok.Epoch})
	if cat == nil {
		h.metrics.routes.noCatalog.Inc()
		h.log.Debug("no model catalog; forwarding unchecked", "request_id", c.requestID, "account", c.acct.account, "error", err)
		return h.allowModel(w, c, c.body.Bytes()[start:end])
	}
	res := catalog.Resolve(cat, h.models.aliases.Current(), c.body.Bytes()[start:end])
	h.metrics.catalog.Resolved(res.Rule)
	if res.Rule == catalog.RuleNone {
		return h.allowModel(w, c, c.body.Bytes()[start:end])
	}
	d.resolved, d.rule, d.model = res.ID, res.Rule, res.Model
	if !c.models.All() && !h.allowModel(w, c, []byte(d.resolved)) {
		return false
	}
	if res.Rule == catalog.RuleBuiltin || res.Rule == catalog.RuleAlias {
		c.body.Replace(start, end, res.ID)
	}
	switch {
	case d.model == nil:
		h.metrics.routes.unknown.Inc()
	case d.passThrough():
		h.metrics.routes.pass.Inc()
	default:
		h.metrics.routes.unsupported.Inc()
		return h.translateRequest(w, r, c)
	}
	return true
}

// unsupported answers a request whose model lacks the client's endpoint,
// in the client's dialect, naming the endpoints the model has; the
// handler's record stage counts it. Used when no translation fits.
func (h *Handler) unsupported(w http.ResponseWriter, c *call) bool {
	d := &c.decision
	paths := make([]string, 0, len(d.supported()))
	for _, e := range d.supported() {
		paths = append(paths, clientPath(e))
	}
	msg := fmt.Sprintf("model %q is not served on %s; it supports %s", d.resolved, c.route.name, strings.Join(paths, ", "))
	h.answerError(w, c, c.route.dialect, dialect.Error{Status: http.StatusBadRequest, Message: msg,
		OpenAIType: "invalid_request_error", OpenAICode: "unsupported_api_for_model", AnthropicType: "invalid_request_error"})
	return false
}

// clientPath names an upstream endpoint by the path clients call.
func clientPath(upstream string) string {
	switch upstream {
	case "/chat/completions", "/responses", "/embeddings", "/models":
		return "/v1" + upstream
	}
	return upstream
}

// fetchModels is the catalog's [catalog.Fetcher]: GET /models with the
// account's current token and the headers of any request to /models
// (headers.go: the identity, Openai-Intent model-access by default).
func (h *Handler) fetchModels(ctx context.Context, account string) (*http.Response, error) {
	src := h.defTarget.src
	if h.accounts != nil && (src == nil || account != h.defTarget.account) {
		src = h.accounts.Source(account)
	}
	if src == nil {
		return nil, fmt.Errorf("no token source for account %q", account)
	}
	tok, base, err := h.token(src)
	if err != nil {
		return nil, err
	}
	u := *base
	u.Path += "/models"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header = h.hdrs.Upstream(routeModels.upstream, routeModels.hasBody(), http.Header{"Accept": {"application/json"}}, headers.Facts{RequestID: newRequestID()})
	req.Header.Set("Authorization", "Bearer "+tok.Value.Reveal())
	return h.transport.RoundTrip(req)
}
