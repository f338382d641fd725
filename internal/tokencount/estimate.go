// Package tokencount estimates the input tokens of an Anthropic Messages
// request without a tokenizer, so the proxy can answer
// /v1/messages/count_tokens itself: the Copilot API does not serve that
// path (docs/protocol.md section 4), and clients such as Claude Code call it
// before a conversation.
//
// # The estimator
//
// Text is split the way the o200k_base tokenizer's pre-tokenizer splits it
// (letter runs with one leading space or punctuation mark, case changes,
// digit groups of up to three, punctuation runs, whitespace runs), and each
// piece is costed by its kind and length: a letter piece of up to 7 ASCII
// letters is one token, longer ones one more per 5 letters; a non-ASCII
// letter costs about 0.7 tokens (CJK scripts hold roughly one token per
// character), a digit group one token, a punctuation run one token per 3
// bytes, a whitespace run one token. Structure adds fixed costs: 3 tokens
// per message, 5 per content block that is not text, the tool-use system
// prompt (346 tokens when tools are given, Anthropic's published figure for
// its Claude 4 models) and 10 per tool besides its name, description and
// schema text, which are costed as text. Images cost Anthropic's published
// (width × height) / 750 tokens after scaling into 1568 px and 1.15
// megapixels, read from the image's own header when it is inline (PNG, JPEG,
// GIF), and the maximum (1,600) when its size is unknown (URLs, other
// formats).
//
// # Its error
//
// The text estimator is measured against the o200k_base BPE tokenizer on the
// corpus in testdata/corpus (real-looking Claude Code, chat and agent
// requests: prose, Go, Python and TypeScript code, JSON tool schemas and
// tool results, shell output, CJK text, base64 images): every request's
// estimate is within 15 % of the tokenizer's count of the same text plus the
// same structural costs, and the mean absolute error is under 7 %
// (TestEstimateAgainstTokenizer checks both bounds; measured when written:
// worst request 9.2 %, mean 4.3 %). Claude's own
// tokenizer is not public; against it the error is larger and unknown, so
// the answer is an estimate: good enough for a client's context-window
// bookkeeping, not for billing.
package tokencount

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/gif"  // image headers for the image cost
	_ "image/jpeg" // image headers for the image cost
	_ "image/png"  // image headers for the image cost
	"math"
	"unicode"
	"unicode/utf8"
)

// Costs of the structure around text.
const (
	perMessage       = 3
	perBlock         = 5
	toolsPrompt      = 346
	perTool          = 10
	maxImageTokens   = 1600
	imageHeaderBytes = 64 << 10 // base64 decoded to read an image's size
)

// ErrInvalid is wrapped by [Estimate] for a body that is not an Anthropic
// Messages request.
var ErrInvalid = errors.New("not a valid messages request")

type request struct {
	System   json.RawMessage `json:"system"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Tools []json.RawMessage `json:"tools"`
}

// block is one content block; only the fields that carry tokens.
type block struct {
	Type     string          `json:"type"`
	Text     string          `json:"text"`
	Thinking string          `json:"thinking"`
	Name     string          `json:"name"`
	Input    json.RawMessage `json:"input"`
	Content  json.RawMessage `json:"content"`
	Source   *struct {
		Type      string          `json:"type"`
		MediaType string          `json:"media_type"`
		Data      json.RawMessage `json:"data"`
	} `json:"source"`
}

// Estimate returns the estimated input tokens of an Anthropic Messages
// request body (system, messages, tools, images).
func Estimate(body []byte) (int, error) { return estimate(body, Text) }

// estimate is Estimate with text costed by textTokens (the test passes a
// real tokenizer, to measure the estimator's error on text alone).
func estimate(body []byte, textTokens func(string) int) (int, error) {
	var r request
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(r.Messages) == 0 {
		return 0, fmt.Errorf("%w: messages: at least one message is required", ErrInvalid)
	}
	c := counter{textTokens: textTokens}
	if len(r.System) > 0 && string(r.System) != "null" {
		c.n += perMessage
		c.content(r.System, 0)
	}
	for _, m := range r.Messages {
		c.n += perMessage
		c.text(m.Role)
		c.content(m.Content, 0)
	}
	if len(r.Tools) > 0 {
		c.n += toolsPrompt
		for _, t := range r.Tools {
			c.n += perTool
			c.tool(t)
		}
	}
	return max(c.n, 1), nil
}

type counter struct {
	n          int
	textTokens func(string) int
}

// maxDepth bounds nested tool_result content.
const maxDepth = 8

// content costs a string or an array of blocks.
func (c *counter) content(raw json.RawMessage, depth int) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			c.text(s)
		}
	case '[':
		var blocks []block
		if json.Unmarshal(raw, &blocks) != nil {
			c.text(string(raw))
			return
		}
		for i := range blocks {
			c.block(&blocks[i], depth)
		}
	default:
		c.text(string(raw))
	}
}

func (c *counter) block(b *block, depth int) {
	switch b.Type {
	case "text":
		c.text(b.Text)
		return
	case "thinking":
		c.text(b.Thinking)
	case "image":
		c.n += imageTokens(b)
	case "tool_use", "server_tool_use":
		c.text(b.Name)
		c.json(b.Input)
	case "tool_result":
		if depth < maxDepth {
			c.content(b.Content, depth+1)
		}
	case "document":
		if b.Source != nil && b.Source.Type == "text" {
			var s string
			_ = json.Unmarshal(b.Source.Data, &s)
			c.text(s)
		} else if b.Source != nil {
			// A PDF's text is unknown without parsing it: about a
			// token per 4 bytes of the decoded file, as for text.
			c.n += len(b.Source.Data) * 3 / 4 / 4
		}
	default:
		c.text(b.Text)
	}
	c.n += perBlock
}

func (c *counter) tool(raw json.RawMessage) {
	var t struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
	}
	if json.Unmarshal(raw, &t) != nil {
		c.text(string(raw))
		return
	}
	c.text(t.Name)
	c.text(t.Description)
	c.json(t.InputSchema)
}

// json costs a JSON value as its compact text.
func (c *counter) json(raw json.RawMessage) {
	if len(raw) == 0 {
		return
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) == nil {
		raw = b.Bytes()
	}
	c.text(string(raw))
}

func (c *counter) text(s string) {
	if s != "" {
		c.n += c.textTokens(s)
	}
}

// imageTokens is Anthropic's (w × h) / 750 after scaling into 1568 px on
// the long side and 1.15 megapixels, or the maximum when the size is unknown.
func imageTokens(b *block) int {
	if b.Source == nil || b.Source.Type != "base64" {
		return maxImageTokens
	}
	var data string
	if json.Unmarshal(b.Source.Data, &data) != nil {
		return maxImageTokens
	}
	if len(data) > imageHeaderBytes {
		data = data[:imageHeaderBytes]
	}
	data = data[:len(data)/4*4]
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		return maxImageTokens
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil || cfg.Width <= 0 || cfg.Height <= 0 {
		return maxImageTokens
	}
	return ImageTokens(cfg.Width, cfg.Height)
}

// ImageTokens is Anthropic's published cost of a w × h image.
func ImageTokens(w, h int) int {
	fw, fh := float64(w), float64(h)
	if long := math.Max(fw, fh); long > 1568 {
		fw, fh = fw*1568/long, fh*1568/long
	}
	if px := fw * fh; px > 1_150_000 {
		s := math.Sqrt(1_150_000 / px)
		fw, fh = fw*s, fh*s
	}
	return min(max(int(math.Ceil(fw*fh/750)), 1), maxImageTokens)
}

// Text estimates the o200k_base tokens of s.
func Text(s string) int {
	var n float64
	for i := 0; i < len(s); {
		kind, size := piece(s[i:])
		n += cost(kind, s[i:i+size])
		i += size
	}
	return int(math.Round(n))
}

type pieceKind uint8

const (
	pieceLetters pieceKind = iota
	pieceDigits
	piecePunct
	pieceSpace
)

// piece returns the kind and byte length of the pre-token at the start of
// s, after o200k_base's pattern: an optional leading non-letter (a space or
// a punctuation mark) glued to a letter run that breaks before an upper-case
// letter following lower-case ones; up to three digits; a punctuation run
// with an optional leading space and trailing newlines; a whitespace run.
func piece(s string) (pieceKind, int) {
	r, n := utf8.DecodeRuneInString(s)
	switch {
	case isLetter(r):
		return pieceLetters, n + letterRun(s[n:], unicode.IsLower(r))
	case unicode.IsDigit(r):
		i, k := n, 1
		for i < len(s) && k < 3 {
			r2, n2 := utf8.DecodeRuneInString(s[i:])
			if !unicode.IsDigit(r2) {
				break
			}
			i += n2
			k++
		}
		return pieceDigits, i
	case r != '\r' && r != '\n' && len(s) > n:
		// A space or punctuation mark directly before letters joins them.
		if r2, _ := utf8.DecodeRuneInString(s[n:]); isLetter(r2) && !unicode.IsDigit(r) {
			_, m := utf8.DecodeRuneInString(s[n:])
			return pieceLetters, n + m + letterRun(s[n+m:], unicode.IsLower(r2))
		}
	}
	if unicode.IsSpace(r) {
		i := n
		for i < len(s) {
			r2, n2 := utf8.DecodeRuneInString(s[i:])
			if !unicode.IsSpace(r2) {
				break
			}
			i += n2
		}
		return pieceSpace, i
	}
	i := n
	if r == ' ' {
		// " {" and the like: the space joins the punctuation.
		r2, n2 := utf8.DecodeRuneInString(s[i:])
		if isLetter(r2) || unicode.IsDigit(r2) || unicode.IsSpace(r2) {
			return pieceSpace, i
		}
		i += n2
	}
	for i < len(s) {
		r2, n2 := utf8.DecodeRuneInString(s[i:])
		if isLetter(r2) || unicode.IsDigit(r2) || unicode.IsSpace(r2) {
			break
		}
		i += n2
	}
	for i < len(s) && (s[i] == '\r' || s[i] == '\n' || s[i] == '/') {
		i++
	}
	return piecePunct, i
}

func isLetter(r rune) bool { return unicode.IsLetter(r) || unicode.Is(unicode.M, r) }

// letterRun returns the byte length of the letters continuing a run; a run
// of lower-case letters ends before an upper-case one (camelCase splits).
func letterRun(s string, lower bool) int {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !isLetter(r) || (lower && unicode.IsUpper(r)) {
			break
		}
		if unicode.IsLower(r) {
			lower = true
		}
		i += n
	}
	return i
}

func cost(kind pieceKind, p string) float64 {
	switch kind {
	case pieceDigits, pieceSpace:
		return 1
	case piecePunct:
		return math.Ceil(float64(len(p)) / 3)
	}
	ascii, other := 0, 0
	for _, r := range p {
		switch {
		case r < utf8.RuneSelf:
			if isLetter(r) {
				ascii++
			}
		case isLetter(r):
			other++
		}
	}
	t := 0.0
	if ascii > 0 {
		t = 1
		if ascii > 7 {
			t += math.Ceil(float64(ascii-7) / 5)
		}
	}
	return t + 0.7*float64(other)
}

// MemoryFactor bounds the memory Estimate holds at its peak, as a multiple
// of the body's size, the body included (TestMemoryFactor measures it); the
// proxy charges its in-flight body budget this much for count_tokens.
const MemoryFactor = 8
