package translate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/forward/dialect"
)

// Dialect is one of the three wire formats: the proxy's one definition,
// [dialect.Dialect].
type Dialect = dialect.Dialect

// Dialects.
const (
	Messages  = dialect.Messages  // Anthropic Messages, POST /v1/messages
	Chat      = dialect.Chat      // OpenAI Chat Completions, POST /chat/completions
	Responses = dialect.Responses // OpenAI Responses, POST /responses
)

// ErrBadRequest is wrapped by every error about a client's request that
// cannot be read or translated; the proxy answers 400 in the client's
// dialect with the error's message.
var ErrBadRequest = errors.New("bad request")

// ErrUpstream is wrapped by errors about an upstream answer that cannot be
// read; the proxy answers 502.
var ErrUpstream = errors.New("bad upstream answer")

// InputError is a request the translator cannot read or express.
type InputError struct {
	Dialect Dialect
	Field   string // JSON path of the offending field, when known
	Msg     string
}

func (e *InputError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s request: %s: %s", e.Dialect, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s request: %s", e.Dialect, e.Msg)
}

// Unwrap makes errors.Is(err, ErrBadRequest) true.
func (e *InputError) Unwrap() error { return ErrBadRequest }

func badField(d Dialect, field, format string, a ...any) error {
	return &InputError{Dialect: d, Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Info describes a translated request.
type Info struct {
	Model  string
	Stream bool
	// IncludeUsage is true when a Chat client asked for a usage chunk.
	IncludeUsage bool
	// Dropped names the client fields, or values, that the target dialect
	// cannot carry and that were left out (see doc.go), e.g. "stop",
	// "top_k", "tool:web_search", "reasoning history". It holds at most
	// MaxDropped names, then "…" when there were more.
	Dropped []string

	dropped map[string]struct{} // Dropped as a set
	work    work
}

// MaxDropped bounds [Info].Dropped: a body of a million unknown keys is
// reported by its first names, not held twice.
const MaxDropped = 32

const moreDropped = "…"

func (i *Info) drop(what string) {
	if _, ok := i.dropped[what]; ok {
		return
	}
	if len(i.Dropped) >= MaxDropped {
		if i.Dropped[len(i.Dropped)-1] != moreDropped {
			i.Dropped = append(i.Dropped, moreDropped)
		}
		return
	}
	if i.dropped == nil {
		i.dropped = make(map[string]struct{})
	}
	i.dropped[what] = struct{}{}
	i.Dropped = append(i.Dropped, what)
}

// work counts the steps of a translation's loops and checks its context
// every checkEvery of them, so that a large body stops being translated
// soon after the client leaves or the server shuts down.
type work struct {
	ctx   context.Context
	steps int
}

const checkEvery = 1024

// step is called once per element a loop handles.
func (w *work) step() error {
	w.steps++
	if w.steps%checkEvery != 0 || w.ctx == nil {
		return nil
	}
	return w.check()
}

// check returns the context's error, wrapped, if it is done.
func (w *work) check() error {
	if w.ctx == nil || w.ctx.Err() == nil {
		return nil
	}
	return fmt.Errorf("translate: stopped: %w", context.Cause(w.ctx))
}

// String is a one-line summary for a debug log.
func (i Info) String() string {
	if len(i.Dropped) == 0 {
		return "nothing dropped"
	}
	return "dropped " + strings.Join(i.Dropped, ",")
}

// Options tune a request translation.
type Options struct {
	// MaxOutputTokens is the model's output limit; it is the max_tokens the
	// Messages writer sets when the client gave none (Messages requires one).
	// Zero means DefaultMaxTokens.
	MaxOutputTokens int
	// NoReasoning says the target model takes no reasoning parameters
	// (its catalog entry has none): the client's reasoning request is
	// dropped and reported instead of being refused upstream.
	NoReasoning bool
}

// DefaultMaxTokens is the Messages max_tokens when neither the client nor
// Options give one.
const DefaultMaxTokens = 8192

// Request translates a request body from the client's dialect to the
// target's. A request in the same dialect is returned unchanged. Errors about
// the body wrap [ErrBadRequest]; when ctx ends first (the client left, the
// server shuts down) the error wraps its cause instead. Time and memory are
// linear in the body's size.
func Request(ctx context.Context, from, to Dialect, body []byte, opt Options) ([]byte, Info, error) {
	info := Info{work: work{ctx: ctx}}
	if from == to {
		return body, info, nil
	}
	var (
		r   *RequestIR
		err error
	)
	switch from {
	case Messages:
		r, err = readMessagesRequest(body, &info)
	case Chat:
		r, err = readChatRequest(body, &info)
	case Responses:
		r, err = readResponsesRequest(body, &info)
	default:
		return nil, info, fmt.Errorf("translate: unknown dialect %v", from)
	}
	if err == nil {
		err = info.work.check()
	}
	if err != nil {
		return nil, info, err
	}
	info.Model, info.Stream, info.IncludeUsage = r.Model, r.Stream, r.IncludeUsage
	if opt.NoReasoning && r.Reasoning != nil {
		r.Reasoning = nil
		info.drop("reasoning (the model takes none)")
	}
	var out []byte
	switch to {
	case Messages:
		out, err = writeMessagesRequest(r, &info, opt)
	case Chat:
		out, err = writeChatRequest(r, &info)
	case Responses:
		out, err = writeResponsesRequest(r, &info)
	default:
		return nil, info, fmt.Errorf("translate: unknown dialect %v", to)
	}
	if err == nil {
		err = info.work.check()
	}
	if err != nil {
		return nil, info, err
	}
	return out, info, nil
}

// Response translates a complete (non-streamed) answer from the upstream's
// dialect to the client's; now dates an answer whose upstream gave no time.
// Errors wrap [ErrUpstream], or ctx's cause when it ends first.
func Response(ctx context.Context, upstream, client Dialect, body []byte, now time.Time) ([]byte, error) {
	if upstream == client {
		return body, nil
	}
	w := work{ctx: ctx}
	var (
		r   *ResponseIR
		err error
	)
	switch upstream {
	case Messages:
		r, err = readMessagesResponse(body)
	case Chat:
		r, err = readChatResponse(body)
	case Responses:
		r, err = readResponsesResponse(body)
	default:
		return nil, fmt.Errorf("translate: unknown dialect %v", upstream)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s answer: %w", ErrUpstream, upstream, err)
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	if r.Created == 0 {
		r.Created = now.Unix()
	}
	switch client {
	case Messages:
		return writeMessagesResponse(r)
	case Chat:
		return writeChatResponse(r)
	case Responses:
		return writeResponsesResponse(r)
	}
	return nil, fmt.Errorf("translate: unknown dialect %v", client)
}

// MemoryFactor bounds the memory a translation holds at its peak, as a
// multiple of the body's size, the body included: readers decode the body
// into wire types and the IR, writers build the target's wire types and
// bytes, and a body of many small elements (tool results, text blocks)
// costs the most per byte. TestMemoryFactor measures it for every reader and
// writer; the proxy charges its in-flight body budget this much for a
// translated request.
const MemoryFactor = 40
