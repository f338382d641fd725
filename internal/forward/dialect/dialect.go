// Package dialect names the three wire formats the proxy's clients speak
// (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses) and renders
// an error in each: the JSON body of an answer, the server-sent event that
// ends a stream. It is the one definition the handler, its routes and
// package translate share; it imports nothing of the proxy.
package dialect

import (
	"fmt"
	"strings"
)

// Dialect is one of the three wire formats. The zero value is none.
type Dialect uint8

// Dialects.
const (
	Messages  Dialect = iota + 1 // Anthropic Messages, POST /v1/messages
	Chat                         // OpenAI Chat Completions, POST /chat/completions
	Responses                    // OpenAI Responses, POST /responses
)

func (d Dialect) String() string {
	switch d {
	case Messages:
		return "messages"
	case Chat:
		return "chat"
	case Responses:
		return "responses"
	}
	return fmt.Sprintf("dialect(%d)", uint8(d))
}

// OfPath is the dialect of the answers to a client path: Messages under
// /v1/messages (or /messages), Chat for every other path (the OpenAI error
// shape, which a Responses client reads too).
func OfPath(path string) Dialect {
	if strings.HasPrefix(path, "/v1/messages") || strings.HasPrefix(path, "/messages") {
		return Messages
	}
	return Chat
}
