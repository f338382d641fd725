package forward

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/catalog"
	"github.com/copilot-broker/copilot-broker/internal/keys"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// serveModels answers GET /v1/models and GET /v1/models/{id} from the
// account's catalog: OpenAI's list shape with the upstream's entries as
// they came, or Anthropic's when the request carries anthropic-version.
// Aliases of the alias file that take effect are listed under their own
// ids. It returns false when the request is to be forwarded instead: the
// list while no catalog can be had (the upstream answers it, as before the
// catalog).
func (h *Handler) serveModels(w http.ResponseWriter, r *http.Request, c *call) bool {
	anthropic := r.Header.Get("Anthropic-Version") != ""
	d := c.route.dialect
	if anthropic {
		d = dialect.Messages
	}
	one := c.route == routeModel
	if h.models == nil {
		if one {
			h.answerError(w, c, d, dialect.NotFound("no route for "+r.URL.Path+"; list the models with GET /v1/models"))
		}
		return one
	}
	cat, err := h.models.store.Get(r.Context(), c.acct.account, catalog.Gen{Generation: c.tok.Generation, Epoch: c.tok.Epoch})
	if cat == nil {
		if one {
			h.answerError(w, c, d, dialect.Unavailable("the model catalog is not available: "+err.Error()))
		}
		return one
	}
	entries := allowedEntries(listEntries(cat, h.models.aliases.Current()), c.models)
	var body []byte
	switch {
	case one:
		id, _ := cutModelsPrefix(r.URL.Path)
		e, ok := findEntry(cat, h.models.aliases.Current(), id)
		if !ok {
			h.answerError(w, c, d, dialect.NotFound("model "+strconv.Quote(id)+" not found; GET /v1/models lists them"))
			return true
		}
		if !c.models.Allows(e.id) {
			h.answerError(w, c, d, errModelNotAllowed(e.id, c.models))
			return true
		}
		if anthropic {
			body, _ = json.Marshal(e.anthropic())
		} else {
			body = e.openai()
		}
	case anthropic:
		page, aerr := anthropicPage(entries, r)
		if aerr != nil {
			h.answerError(w, c, d, *aerr)
			return true
		}
		body, _ = json.Marshal(page)
	default:
		var b bytes.Buffer
		b.WriteString(`{"object":"list","data":[`)
		for i, e := range entries {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(e.openai())
		}
		b.WriteString(`]}`)
		body = b.Bytes()
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(body)+1))
	hd.Set("X-Request-Id", c.requestID)
	c.status = http.StatusOK
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body, '\n'))
	return true
}

// answerError writes an error the handler's done records.
func (h *Handler) answerError(w http.ResponseWriter, c *call, d dialect.Dialect, e dialect.Error) {
	c.status = e.Status
	w.Header().Set("X-Request-Id", c.requestID)
	dialect.Write(w, d, e)
}

// allowedEntries keeps the entries a key's allow list covers.
func allowedEntries(all []entry, m keys.Models) []entry {
	if m.All() {
		return all
	}
	out := all[:0:0]
	for _, e := range all {
		if m.Allows(e.id) {
			out = append(out, e)
		}
	}
	return out
}

// entry is one listed model: a catalog model under its own id or an alias.
type entry struct {
	id    string
	model *catalog.Model
}

// listEntries returns the catalog's models, then the aliases that resolve
// to one of them (an alias shadowed by a catalog id or a built-in rule is
// not in effect, so not listed).
func listEntries(cat *catalog.Catalog, aliases *catalog.Aliases) []entry {
	out := make([]entry, 0, cat.Len()+aliases.Len())
	for _, m := range cat.Models {
		out = append(out, entry{m.ID, m})
	}
	for _, a := range aliases.List() {
		if res := catalog.ResolveString(cat, aliases, a.From); res.Rule == catalog.RuleAlias && res.Model != nil {
			out = append(out, entry{a.From, res.Model})
		}
	}
	return out
}

// findEntry resolves id as a request's model would be.
func findEntry(cat *catalog.Catalog, aliases *catalog.Aliases, id string) (entry, bool) {
	res := catalog.ResolveString(cat, aliases, id)
	if res.Model == nil {
		return entry{}, false
	}
	return entry{id, res.Model}, true
}

// openai returns the upstream's entry, its id replaced when listed under
// another name.
func (e entry) openai() []byte {
	if e.id == e.model.ID {
		return e.model.Raw
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(e.model.Raw, &fields) != nil {
		return e.model.Raw
	}
	fields["id"], _ = json.Marshal(e.id)
	b, _ := json.Marshal(fields)
	return b
}

// anthropicModel is a model in the Anthropic Models API's shape. The
// Copilot API tells no release date: created_at is when this proxy first
// saw the model. The token limits are the catalog's, when it has them.
type anthropicModel struct {
	Type           string `json:"type"`
	ID             string `json:"id"`
	DisplayName    string `json:"display_name"`
	CreatedAt      string `json:"created_at"`
	MaxInputTokens int64  `json:"max_input_tokens,omitempty"`
	MaxTokens      int64  `json:"max_tokens,omitempty"`
}

func (e entry) anthropic() anthropicModel {
	lim := e.model.Limits
	in := lim.MaxPromptTokens
	if in == 0 {
		in = lim.MaxContextWindowTokens
	}
	return anthropicModel{Type: "model", ID: e.id, DisplayName: e.model.Name,
		CreatedAt: e.model.FirstSeen.UTC().Format(time.RFC3339), MaxInputTokens: in, MaxTokens: lim.MaxOutputTokens}
}

type anthropicList struct {
	Data    []anthropicModel `json:"data"`
	HasMore bool             `json:"has_more"`
	FirstID *string          `json:"first_id"`
	LastID  *string          `json:"last_id"`
}

// anthropicPage applies the Anthropic list's paging: limit (1-1000,
// default 20), after_id, before_id.
func anthropicPage(entries []entry, r *http.Request) (*anthropicList, *dialect.Error) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			e := dialect.BadRequest("limit: want an integer from 1 to 1000")
			return nil, &e
		}
		limit = n
	}
	index := func(id string) int {
		for i, e := range entries {
			if e.id == id {
				return i
			}
		}
		return -1
	}
	page := entries
	more := false
	switch after, before := q.Get("after_id"), q.Get("before_id"); {
	case after != "":
		i := index(after)
		if i < 0 {
			e := dialect.BadRequest("after_id: no model " + strconv.Quote(after))
			return nil, &e
		}
		page = entries[i+1:]
		more = len(page) > limit
		page = page[:min(limit, len(page))]
	case before != "":
		i := index(before)
		if i < 0 {
			e := dialect.BadRequest("before_id: no model " + strconv.Quote(before))
			return nil, &e
		}
		page = entries[:i]
		more = len(page) > limit
		page = page[max(0, len(page)-limit):]
	default:
		more = len(page) > limit
		page = page[:min(limit, len(page))]
	}
	out := &anthropicList{Data: make([]anthropicModel, 0, len(page)), HasMore: more}
	for _, e := range page {
		out.Data = append(out.Data, e.anthropic())
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	return out, nil
}
