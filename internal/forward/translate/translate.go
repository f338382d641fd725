package translate

import (
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
	// "top_k", "tool:web_search", "reasoning history".
	Dropped []string
}

func (i *Info) drop(what string) {
	for _, d := range i.Dropped {
		if d == what {
			return
		}
	}
	i.Dropped = append(i.Dropped, what)
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
// target's. A request in the same dialect is returned unchanged. Errors wrap
// [ErrBadRequest].
func Request(from, to Dialect, body []byte, opt Options) ([]byte, Info, error) {
	var info Info
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
	return out, info, err
}

// Response translates a complete (non-streamed) answer from the upstream's
// dialect to the client's; now dates an answer whose upstream gave no time.
// Errors wrap [ErrUpstream].
func Response(upstream, client Dialect, body []byte, now time.Time) ([]byte, error) {
	if upstream == client {
		return body, nil
	}
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
