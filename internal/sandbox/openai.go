package sandbox

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
)

// errClientGone ends a stream whose client went away.
var errClientGone = errors.New("client went away")

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type chatRequest struct {
	Model    string        `json:"model"`
	Messages []chatMessage `json:"messages"`
	Stream   bool          `json:"stream"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion string) usage {
	p, c := estimateTokens(prompt), estimateTokens(completion)
	return usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c}
}

type chatChoiceMessage struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type chatChoice struct {
	Index        int               `json:"index"`
	Message      chatChoiceMessage `json:"message"`
	FinishReason string            `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

type chunkChoice struct {
	Index        int               `json:"index"`
	Delta        chatChoiceMessage `json:"delta"`
	FinishReason *string           `json:"finish_reason"`
}

type chatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	Usage   *usage        `json:"usage,omitempty"`
}

func (s *Server) nextID(prefix string) string {
	return prefix + strconv.FormatUint(s.seq.Add(1), 10)
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	var prompt string
	image := false
	for _, m := range req.Messages {
		text, img := contentText(m.Content)
		image = image || img
		if m.Role == "user" {
			prompt = text
		}
	}
	if !checkVision(w, r, image) {
		return
	}
	id, created, text := s.nextID("chatcmpl-sandbox-"), s.clock.Now().Unix(), reply(prompt)
	if !req.Stream {
		writeJSON(w, http.StatusOK, chatCompletion{
			ID: id, Object: "chat.completion", Created: created, Model: req.Model,
			Choices: []chatChoice{{Message: chatChoiceMessage{Role: "assistant", Content: text}, FinishReason: "stop"}},
			Usage:   newUsage(prompt, text),
		})
		return
	}
	n, delay, ok := s.streamShape(w, r)
	if !ok {
		return
	}
	chunks := splitChunks(text, n)
	sse := startSSE(w, r)
	sse.end(func() error {
		chunk := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model,
			Choices: []chunkChoice{{}}}
		for i, part := range chunks {
			if !sse.pace(i, delay) {
				return errClientGone
			}
			chunk.Choices[0].Delta = chatChoiceMessage{Content: part}
			if i == 0 {
				chunk.Choices[0].Delta.Role = "assistant"
			}
			if err := sse.send("", chunk); err != nil {
				return err
			}
		}
		stop, u := "stop", newUsage(prompt, text)
		chunk.Choices[0] = chunkChoice{FinishReason: &stop}
		chunk.Usage = &u
		if err := sse.send("", chunk); err != nil {
			return err
		}
		return sse.send("", []byte("[DONE]"))
	}())
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Object string   `json:"object"`
		Data   []*model `json:"data"`
	}{"list", s.models.list})
}

type embeddingsRequest struct {
	Model      string          `json:"model"`
	Input      json.RawMessage `json:"input"`
	Dimensions int             `json:"dimensions"`
}

type embedding struct {
	Object    string    `json:"object"`
	Index     int       `json:"index"`
	Embedding []float32 `json:"embedding"`
}

// embed returns a deterministic unit vector for text.
func embed(text string, dims int) []float32 {
	sum := sha256.Sum256([]byte(text))
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(sum[:8]), binary.LittleEndian.Uint64(sum[8:16])))
	v := make([]float32, dims)
	var norm float64
	for i := range v {
		x := rng.NormFloat64()
		v[i] = float32(x)
		norm += x * x
	}
	scale := float32(1 / math.Sqrt(norm))
	for i := range v {
		v[i] *= scale
	}
	return v
}

func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingsRequest
	if !decode(w, r, &req) {
		return
	}
	if _, ok := s.resolveModel(w, r, req.Model); !ok {
		return
	}
	var inputs []string
	if json.Unmarshal(req.Input, &inputs) != nil {
		var one string
		if json.Unmarshal(req.Input, &one) != nil {
			writeAPIError(w, r, http.StatusBadRequest, "invalid_request_error", "invalid_request_body", "input: want a string or an array of strings")
			return
		}
		inputs = []string{one}
	}
	dims := req.Dimensions
	if dims <= 0 || dims > 1536 {
		dims = 1536
	}
	data := make([]embedding, len(inputs))
	tokens := 0
	for i, in := range inputs {
		data[i] = embedding{Object: "embedding", Index: i, Embedding: embed(in, dims)}
		tokens += estimateTokens(in)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": req.Model,
		"usage": map[string]int{"prompt_tokens": tokens, "total_tokens": tokens},
	})
}
