// Package inspect reads what the proxy needs of a JSON request body in one
// walk, without a full decode: the initiator (agent or user) and vision of
// its turns, the top-level "model" string and where it is, the stream flag,
// and the parts that make a conversation's affinity hash. It refuses a body
// that names a routing key twice (see [DuplicateKeyError]), so that no stage
// reads one value and another stage a different one.
package inspect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Shape says where a route's body keeps its turns.
type Shape uint8

// Shapes.
const (
	Opaque    Shape = iota // no turns (embeddings): model and keys only
	Messages               // "messages": OpenAI Chat or Anthropic Messages
	Responses              // "input": the Responses API, a list or a string
)

// Result is what a body's scan found. The zero Result, with Agent set, is
// what a body that is not JSON of the expected shape gets.
type Result struct {
	// Agent is true unless the last turn is a genuine user message; Copilot
	// bills a premium request only for X-Initiator: user, so anything unsure
	// counts as agent.
	Agent bool
	// Vision is true when any turn carries an image.
	Vision bool
	// Compaction is true when the last turn's text holds the instruction of
	// Claude Code's history compaction request (found in the same pass).
	Compaction bool
	// Stream is true when the top-level "stream" is true.
	Stream bool
	// ModelStart and ModelEnd locate the top-level "model" string:
	// body[ModelStart:ModelEnd] is its raw content without the quotes.
	// ModelEnd is 0 when the body names no model as a string.
	ModelStart, ModelEnd int
	// parts are the conversation's opening (see Affinity), in body order.
	parts  [maxParts]part
	nparts int
	turns  int
}

// DuplicateKeyError is returned for a body whose top level names one of the
// routing keys ("model", "messages", "input", "stream") more than once, in
// any case or escaping: encoding/json would take the last, other readers
// the first, so the proxy refuses it rather than route it one way and count
// it another.
type DuplicateKeyError struct{ Key string }

func (e *DuplicateKeyError) Error() string {
	return fmt.Sprintf("the request body names %q more than once (keys match case-insensitively); send it once", e.Key)
}

// routingKeys are the keys a body may name once.
var routingKeys = [...]string{"model", "messages", "input", "stream"}

// Scan scans body, shaped as shape, once. It gives up with the agent
// default once done is closed (the client went away). The only error is a
// [*DuplicateKeyError]; a body that is not JSON is forwarded as it is (the
// upstream answers it) with the agent default.
func Scan(done <-chan struct{}, shape Shape, body []byte) (Result, error) {
	r, _, err := scan(done, shape, body)
	return r, err
}

// scan is Scan that also returns the walker's step count, the work done.
func scan(done <-chan struct{}, shape Shape, body []byte) (Result, int, error) {
	w := jsonWalker{data: body, done: done}
	r := Result{Agent: true}
	err := r.walk(&w, shape)
	var dup *DuplicateKeyError
	if errors.As(err, &dup) {
		return Result{Agent: true}, w.steps, err
	}
	if err != nil {
		return Result{Agent: true}, w.steps, nil
	}
	if shape == Opaque {
		r.Agent = true
	}
	return r, w.steps, nil
}

// walk walks the top-level object. Any other JSON value has no turns;
// encoding/json would report a type error, which the scan tolerates.
func (r *Result) walk(w *jsonWalker, shape Shape) error {
	if w.next() != '{' {
		_, err := w.value()
		return errors.Join(err, w.end())
	}
	if err := w.enter('{'); err != nil {
		return err
	}
	field := ""
	switch shape {
	case Messages:
		field = "messages"
	case Responses:
		field = "input"
	}
	var seen [len(routingKeys)]bool
	for first := true; ; first = false {
		ok, err := w.more('}', first)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		ks := w.pos
		k, err := w.key()
		if err != nil {
			return err
		}
		for i, name := range routingKeys {
			if keyIs(k, name) {
				if seen[i] {
					return &DuplicateKeyError{Key: name}
				}
				seen[i] = true
			}
		}
		switch {
		case keyIs(k, "model"):
			r.ModelStart, r.ModelEnd, err = w.stringValue()
		case keyIs(k, "stream"):
			var v []byte
			v, err = w.value()
			r.Stream = string(v) == "true"
		case field != "" && keyIs(k, field):
			var t turns
			t, err = inspectTurns(w, shape == Responses, r)
			r.Agent, r.Vision, r.Compaction = t.agent, t.vision, t.compaction
		case field != "" && (keyIs(k, "system") || keyIs(k, "instructions")):
			w.next()
			vs := w.pos
			err = w.skipValue()
			r.addPart(span{ks + 1, ks + 1 + len(k)}, span{vs, w.pos})
			r.turns-- // instructions are no turn
		default:
			err = w.skipValue()
		}
		if err != nil {
			return err
		}
	}
	return w.end()
}

// Model returns the model string for labels (usage metrics): "" when the
// body names none, or names it with escapes.
func (r *Result) Model(body []byte) string {
	if r.ModelEnd == 0 {
		return ""
	}
	raw := body[r.ModelStart:r.ModelEnd]
	if bytes.IndexByte(raw, '\\') >= 0 {
		return ""
	}
	return string(raw)
}

// keyIs reports whether the raw object key k names field the way
// encoding/json matches struct fields: case-insensitively, after unescaping.
func keyIs(k []byte, field string) bool {
	if bytes.IndexByte(k, '\\') < 0 {
		return bytes.EqualFold(k, []byte(field))
	}
	var s string
	q := make([]byte, 0, len(k)+2)
	q = append(append(append(q, '"'), k...), '"')
	return json.Unmarshal(q, &s) == nil && bytes.EqualFold([]byte(s), []byte(field))
}
