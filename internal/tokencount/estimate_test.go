package tokencount

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

// The bounds documented in the package comment.
const (
	maxRequestError = 0.15
	maxMeanError    = 0.07
)

// reference returns the o200k_base tokenizer, with its BPE ranks embedded
// (no download: the offline loader ships them).
func reference(t *testing.T) func(string) int {
	t.Helper()
	tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader())
	enc, err := tiktoken.GetEncoding("o200k_base")
	if err != nil {
		t.Fatal(err)
	}
	return func(s string) int { return len(enc.EncodeOrdinary(s)) }
}

// TestEstimateAgainstTokenizer measures the estimator on the corpus against
// the o200k_base tokenizer costing the same text with the same structural
// costs, and checks the error bounds the package comment documents.
func TestEstimateAgainstTokenizer(t *testing.T) {
	ref := reference(t)
	files, err := filepath.Glob("testdata/corpus/*.json")
	if err != nil || len(files) < 8 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	var sum float64
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Estimate(body)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want, err := estimate(body, ref)
		if err != nil {
			t.Fatal(err)
		}
		e := float64(got-want) / float64(want)
		sum += math.Abs(e)
		t.Logf("%-28s estimate %6d  o200k %6d  error %+6.1f%%", filepath.Base(f), got, want, e*100)
		if math.Abs(e) > maxRequestError {
			t.Errorf("%s: estimate %d, tokenizer %d: error %.1f%% beyond the documented %.0f%%", f, got, want, e*100, maxRequestError*100)
		}
	}
	if mean := sum / float64(len(files)); mean > maxMeanError {
		t.Errorf("mean absolute error %.1f%%, beyond the documented %.0f%%", mean*100, maxMeanError*100)
	} else {
		t.Logf("mean absolute error %.1f%%", mean*100)
	}
}

func TestTextAgainstTokenizerPieces(t *testing.T) {
	ref := reference(t)
	for _, s := range []string{
		"The quick brown fox jumps over the lazy dog.",
		"func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {",
		`{"type":"object","properties":{"command":{"type":"string"}}}`,
		"分布式系统中的一致性模型",
	} {
		got, want := Text(s), ref(s)
		if e := math.Abs(float64(got-want)) / float64(want); e > 0.35 {
			t.Errorf("Text(%q) = %d; tokenizer %d", s, got, want)
		}
	}
}

func TestEstimateShapes(t *testing.T) {
	img := func(w, h int) string {
		var b bytes.Buffer
		if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(b.Bytes())
	}
	msg := func(content string) string {
		return `{"model":"m","messages":[{"role":"user","content":` + content + `}]}`
	}
	base, err := Estimate([]byte(msg(`"hi"`)))
	if err != nil || base < 1 || base > 10 {
		t.Fatalf("hi = %d, %v", base, err)
	}
	tests := []struct {
		name     string
		body     string
		min, max int
	}{
		{"image 200x200", msg(`[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + img(200, 200) + `"}}]`), 54, 70},
		{"image scaled", msg(`[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + img(4000, 3000) + `"}}]`), 1500, 1620},
		{"image url", msg(`[{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}]`), 1600, 1615},
		{"tools add the tool prompt", `{"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"Read","description":"Reads a file","input_schema":{"type":"object"}}]}`, base + toolsPrompt, base + toolsPrompt + 30},
		{"system string", `{"system":"You are terse.","messages":[{"role":"user","content":"hi"}]}`, base + 4, base + 12},
		{"system role message", `{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"hi"}]}`, base + 4, base + 12},
	}
	for _, tt := range tests {
		got, err := Estimate([]byte(tt.body))
		if err != nil || got < tt.min || got > tt.max {
			t.Errorf("%s: Estimate = %d, %v; want %d..%d", tt.name, got, err, tt.min, tt.max)
		}
	}
	for _, bad := range []string{``, `[]`, `{"messages":[]}`, `{"messages":"x"}`, `{`} {
		if _, err := Estimate([]byte(bad)); err == nil {
			t.Errorf("Estimate(%q) succeeded", bad)
		}
	}
}

func TestImageTokens(t *testing.T) {
	for _, tt := range []struct{ w, h, want int }{
		{200, 200, 54}, {1000, 1000, 1334}, {1092, 1092, 1534}, {8000, 100, 41}, {1, 1, 1},
	} {
		if got := ImageTokens(tt.w, tt.h); got != tt.want {
			t.Errorf("ImageTokens(%d, %d) = %d; want %d", tt.w, tt.h, got, tt.want)
		}
	}
}

func FuzzEstimate(f *testing.F) {
	files, _ := filepath.Glob("testdata/corpus/*.json")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil && len(b) < 4000 {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"tool_result","content":[{"type":"tool_result","content":"x"}]}]}]}`))
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","data":"iVBORw0KGgo="}}]}],"tools":[1,"x",{}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		n, err := Estimate(body)
		if err != nil {
			return
		}
		if n < 1 {
			t.Fatalf("Estimate = %d for a valid body", n)
		}
		var probe struct{ Messages []json.RawMessage }
		if json.Unmarshal(body, &probe) != nil || len(probe.Messages) == 0 {
			t.Fatalf("Estimate accepted %q", body)
		}
		// Text costs at most one token per byte.
		if tx := Text(string(body)); tx > len(body) {
			t.Fatalf("Text costs %d tokens for %d bytes", tx, len(body))
		}
	})
}
