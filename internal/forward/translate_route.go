package forward

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/copilot-broker/copilot-broker/internal/forward/translate"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// Translation, part of the model stage: a request whose model is not served on the client's
// endpoint is translated to one the model has, and its answer back.
//
// The endpoint is chosen by the client's dialect, first the model supports:
//
//	Messages client:  /v1/messages, /chat/completions, /responses
//	Chat client:      /chat/completions, /responses, /v1/messages
//	Responses client: /responses, /chat/completions, /v1/messages
//
// Chat is the common ground of the two OpenAI dialects and carries tools and
// images as well as any; Messages comes last for the OpenAI clients because
// only Claude models are served there and they are usually on
// /chat/completions too. A request whose model has none of the three
// (embeddings models) is refused as before, naming the model's endpoints.
//
// The pass-through path pays one nil check for all this (c.xlate).

// xlate is a translated call: the dialects and the upstream route.
type xlate struct {
	client, upstream translate.Dialect
	target           *route
	info             translate.Info
}

// dialectOfRoute is the translation dialect of a client route; 0 for the
// routes that are never translated.
func dialectOfRoute(rt *route) translate.Dialect {
	switch rt {
	case routeMessages:
		return translate.Messages
	case routeChat:
		return translate.Chat
	case routeResponses:
		return translate.Responses
	}
	return 0
}

func routeOfDialect(d translate.Dialect) *route {
	switch d {
	case translate.Messages:
		return routeMessages
	case translate.Chat:
		return routeChat
	case translate.Responses:
		return routeResponses
	}
	return nil
}

// endpointPreference returns the order in which a client dialect's
// targets are tried; the first is the client's own.
func endpointPreference(client translate.Dialect) [3]translate.Dialect {
	switch client {
	case translate.Messages:
		return [3]translate.Dialect{translate.Messages, translate.Chat, translate.Responses}
	case translate.Responses:
		return [3]translate.Dialect{translate.Responses, translate.Chat, translate.Messages}
	case translate.Chat:
		return [3]translate.Dialect{translate.Chat, translate.Responses, translate.Messages}
	}
	return [3]translate.Dialect{}
}

// pickTarget returns the first dialect in the client's preference order
// whose endpoint is among endpoints.
func pickTarget(client translate.Dialect, endpoints []string) (translate.Dialect, bool) {
	for _, d := range endpointPreference(client) {
		up := routeOfDialect(d).upstream
		for _, e := range endpoints {
			if e == up {
				return d, true
			}
		}
	}
	return 0, false
}

// targetRoute is the route whose upstream endpoint the call goes to: the
// client's, or the translation's target.
func (c *call) targetRoute() *route {
	if c.xlate != nil {
		return c.xlate.target
	}
	return c.route
}

// upstreamPath is the path under the API base URL the call goes to.
func (c *call) upstreamPath() string { return c.targetRoute().upstream }

// translateRequest replaces the refusal of a model that lacks the client's
// endpoint: it picks an endpoint the model has, translates the body there
// and marks the call so that the answer is translated back. It returns
// false when it answered the client itself (400 for a request that cannot
// be translated, or the refusal when no endpoint fits).
func (h *Handler) translateRequest(w http.ResponseWriter, r *http.Request, c *call) bool {
	from := dialectOfRoute(c.route)
	to, ok := pickTarget(from, c.decision.supported())
	if from == 0 || !ok || to == from {
		return h.unsupported(w, c)
	}
	var opt translate.Options
	if m := c.decision.model; m != nil {
		opt.MaxOutputTokens = int(m.Limits.MaxOutputTokens)
	}
	w.Header().Set("X-Request-Id", c.requestID)
	// A translation holds several times the body (translate.MemoryFactor):
	// the budget is charged that before the work starts.
	if e, ok := h.chargeMemory(w, c.body, translate.MemoryFactor, "to translate for this model"); !ok {
		c.status = e.Status // record counts the request
		dialect.Write(w, c.route.dialect, e)
		return false
	}
	out, info, err := translate.Request(r.Context(), from, to, c.body.Bytes(), opt)
	if err != nil && r.Context().Err() != nil {
		c.status = 499 // the client left, or the server's shutdown closed its connection
		return false
	}
	if err != nil {
		msg := err.Error()
		if !errors.Is(err, translate.ErrBadRequest) {
			msg = "translating the request failed: " + msg
		}
		h.metrics.dialects.refused(from)
		e := dialect.BadRequest(msg)
		c.status = e.Status // record counts the request
		dialect.Write(w, c.route.dialect, e)
		return false
	}
	c.body.Set(out)
	c.xlate = &xlate{client: from, upstream: to, target: routeOfDialect(to), info: info}
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("request translated", "request_id", c.requestID, "model", c.decision.resolved,
			"from", from.String(), "to", to.String(), "upstream", c.xlate.target.upstream,
			"stream", info.Stream, "dropped", strings.Join(info.Dropped, ","))
	}
	return true
}

// translateHeaders adjusts the outbound headers of a translated call: the
// target's (intent and the like are set per target by the rewrite), no
// Anthropic headers toward the OpenAI endpoints, and no client
// Accept-Encoding, so that the transport decompresses what it translates.
func translateHeaders(hd http.Header, x *xlate) {
	hd.Del("Accept-Encoding")
	if x.upstream != translate.Messages {
		hd.Del("Anthropic-Beta")
		hd.Del("Anthropic-Version")
	}
}

// maxTranslatedAnswer bounds a non-streamed answer the proxy reads whole
// to translate it. A model's longest answer (128k output tokens) is about
// 0.5 MB of JSON; the translation holds up to translate.MemoryFactor times
// this, outside the body budget, so the bound is kept tight.
const maxTranslatedAnswer = 4 << 20

// translateResponse turns the upstream's answer into the client's dialect:
// an error body with the upstream's status (the classified ones are already
// the client's, see classifyError), a JSON answer whole, an event stream
// event by event as it arrives.
func (h *Handler) translateResponse(resp *http.Response, c *call) error {
	x := c.xlate
	ct := resp.Header.Get("Content-Type")
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300 && strings.HasPrefix(ct, "text/event-stream"):
		body, err := newXlateBody(resp.Body, x.upstream, x.client, translate.StreamOptions{
			IncludeUsage: x.info.IncludeUsage, Now: h.clock.Now(),
		}, h.clock, h.keepAlive)
		if err != nil {
			return err
		}
		resp.Body = body
		resp.ContentLength = -1
		resp.Header.Del("Content-Length")
		return nil
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		raw, err := readAll(resp.Body, maxTranslatedAnswer)
		if err != nil {
			return err
		}
		out, err := translate.Response(resp.Request.Context(), x.upstream, x.client, raw, h.clock.Now())
		if err != nil {
			h.log.Warn("upstream answer could not be translated", "request_id", c.requestID, "error", err)
			c.status = http.StatusBadGateway
			resp.StatusCode, resp.Status = http.StatusBadGateway, "502 Bad Gateway"
			out = translate.ErrorBody(x.client, http.StatusBadGateway, "the upstream answer could not be translated: "+err.Error())
		}
		setJSONBody(resp, out)
		return nil
	case errorKind(resp.StatusCode) != "":
		return nil // classifyError has already written it in the client's dialect
	default:
		raw, err := readAll(resp.Body, 1<<20)
		if err != nil {
			return err
		}
		setJSONBody(resp, translate.Error(x.upstream, x.client, resp.StatusCode, raw))
		return nil
	}
}

// readAll reads a body up to limit bytes and closes it.
func readAll(body io.ReadCloser, limit int64) ([]byte, error) {
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errors.New("upstream answer larger than " + strconv.FormatInt(limit, 10) + " bytes")
	}
	return b, nil
}

func setJSONBody(resp *http.Response, b []byte) {
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Del("Content-Encoding")
	resp.TransferEncoding = nil
}

// dialectMetrics count requests by client dialect and upstream endpoint
// (copilot_proxy_dialect_requests_total{client,upstream}); the counters are
// resolved once, so counting costs the pass-through path an array index.
type dialectMetrics struct {
	byRoute [4][4]prometheus.Counter // [client dialect][upstream dialect]
	refusal [4]prometheus.Counter    // requests that could not be translated
}

func newDialectMetrics(reg prometheus.Registerer) *dialectMetrics {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "copilot_proxy_dialect_requests_total",
		Help: "Requests by the client's dialect (messages, chat, responses) and the upstream endpoint they were sent to; upstream differs from the client's own endpoint when the proxy translated, and is \"refused\" when the request could not be translated.",
	}, []string{"client", "upstream"})
	m := &dialectMetrics{}
	for _, from := range []translate.Dialect{translate.Messages, translate.Chat, translate.Responses} {
		for _, to := range []translate.Dialect{translate.Messages, translate.Chat, translate.Responses} {
			m.byRoute[from][to] = v.WithLabelValues(from.String(), routeOfDialect(to).upstream)
		}
		m.refusal[from] = v.WithLabelValues(from.String(), "refused")
	}
	if reg != nil {
		reg.MustRegister(v)
	}
	return m
}

// count counts a forwarded request of a chat route.
func (m *dialectMetrics) count(c *call) {
	from, to := dialectOfRoute(c.route), dialectOfRoute(c.route)
	if c.xlate != nil {
		to = c.xlate.upstream
	}
	if from != 0 {
		m.byRoute[from][to].Inc()
	}
}

func (m *dialectMetrics) refused(from translate.Dialect) {
	if from != 0 {
		m.refusal[from].Inc()
	}
}
