package forward

import (
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// KeySet authenticates clients (stage 2). A keys file ([FileKeys]) and the
// key set the broker streams (package clientkeys) both satisfy it.
// Authenticate must be safe for concurrent use and cost the same whatever
// the number of keys: it runs on every request.
type KeySet interface {
	// Authenticate returns the key presented, or a *KeyError that refuses
	// the request. presented may be zero (no key sent).
	Authenticate(presented secret.Secret) (ClientKey, error)
}

// ClientKey is an authenticated client key: its name (for metrics and
// logs) and its policy.
type ClientKey struct {
	Name string
	// Target, when set, is the key's own account or pool (a managed key);
	// nil leaves it to [Config.Targets] and the default account.
	Target *Target
	// Models is the key's model allow list; the zero value allows every
	// model.
	Models keys.Models
}

// KeyError refuses a request at authentication: a status (401 for an
// unknown, disabled or expired key; 503 when the key set itself cannot be
// trusted) and a message for the client, never quoting the key.
type KeyError struct {
	Status  int
	Message string
}

func (e *KeyError) Error() string { return e.Message }

// ErrUnknownKey refuses a missing or unknown key.
var ErrUnknownKey = &KeyError{http.StatusUnauthorized, "missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-Api-Key: <key>'"}

func (e *KeyError) apiError() dialect.Error {
	if e.Status == http.StatusServiceUnavailable {
		return dialect.Error{Status: http.StatusServiceUnavailable, Message: e.Message,
			OpenAIType: "server_error", OpenAICode: "keys_unavailable", AnthropicType: "api_error"}
	}
	return dialect.Unauthorized(e.Message)
}

// FileKeys is the [KeySet] of a keys file: the keys' accounts come from
// [Config.Targets].
func FileKeys(set *keys.Set) KeySet { return fileKeys{set} }

type fileKeys struct{ set *keys.Set }

func (f fileKeys) Authenticate(presented secret.Secret) (ClientKey, error) {
	name, ok := f.set.Lookup(presented)
	if !ok {
		return ClientKey{}, ErrUnknownKey
	}
	return ClientKey{Name: name}, nil
}

// presentedKey returns the key of "Authorization: Bearer" or "X-Api-Key".
func presentedKey(r *http.Request) secret.Secret {
	var presented secret.Secret
	if v := r.Header.Get("Authorization"); v != "" {
		presented, _ = keys.FromBearer(v)
	} else if v := r.Header.Get("X-Api-Key"); v != "" {
		presented = secret.New(v)
	}
	return presented
}

// targetFor returns the target of an authenticated key: a managed key's own
// (resolved once per distinct account list, see dynTargets), else the
// configured one.
func (h *Handler) targetFor(k *ClientKey) *target {
	if k.Target == nil || h.accounts == nil {
		return h.targetOf(k.Name)
	}
	id := targetID(*k.Target)
	if t, ok := h.dynTargets.Load(id); ok {
		return t.(*target)
	}
	var t *target
	switch tg := *k.Target; {
	case tg.All:
		t = &target{all: true}
	case len(tg.Accounts) == 1:
		t = &target{account: tg.Accounts[0], src: h.accounts.Source(tg.Accounts[0])}
	case len(tg.Accounts) > 1:
		t = &target{members: append([]string(nil), tg.Accounts...)}
	default:
		t = h.defTarget
	}
	got, _ := h.dynTargets.LoadOrStore(id, t)
	return got.(*target)
}

func targetID(t Target) string {
	if t.All {
		return "*"
	}
	return strings.Join(t.Accounts, ",")
}

// dynTargets holds the resolved targets of managed keys by account list;
// it grows only with distinct lists (bounded by the keys ever seen), and a
// target never goes stale: account sources are stable handles.
type dynTargets = sync.Map

// allowModel answers 403, in the client's dialect, when the key's allow
// list does not cover model (the resolved id, or the name as sent when it
// could not be resolved).
func (h *Handler) allowModel(w http.ResponseWriter, c *call, model []byte) bool {
	if c.models.All() || c.models.Allows(string(model)) {
		return true
	}
	h.answerError(w, c, c.route.dialect, errModelNotAllowed(string(model), c.models))
	return false
}

func errModelNotAllowed(model string, m keys.Models) dialect.Error {
	msg := "model " + strconv.Quote(model) + " is not allowed for this API key; it may use: " + strings.Join(m.Globs(), ", ")
	return dialect.Error{Status: http.StatusForbidden, Message: msg,
		OpenAIType: "invalid_request_error", OpenAICode: "model_not_allowed", AnthropicType: "permission_error"}
}
