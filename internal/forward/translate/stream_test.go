package translate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// translateStream feeds in to a Stream in chunks of size n (0: whole) and
// returns what the client got.
func translateStream(t testing.TB, from, to Dialect, in []byte, n int) []byte {
	t.Helper()
	var out bytes.Buffer
	s, err := NewStream(from, to, &out, StreamOptions{IncludeUsage: true, Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		n = len(in) + 1
	}
	for i := 0; i < len(in); i += n {
		if _, err := s.Write(in[i:min(i+n, len(in))]); err != nil {
			break
		}
	}
	_ = s.Close()
	return out.Bytes()
}

func TestStreamGolden(t *testing.T) {
	for _, in := range inputs(t, "streams", "sse") {
		base, from := splitName(t, in)
		body, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range dialects {
			if to == from {
				continue
			}
			name := filepath.Base(base) + "." + from.String() + "_to_" + to.String()
			t.Run(name, func(t *testing.T) {
				whole := translateStream(t, from, to, body, 0)
				for _, n := range []int{1, 7, 64} {
					if got := translateStream(t, from, to, body, n); !bytes.Equal(got, whole) {
						t.Fatalf("fed in chunks of %d bytes:\n%s\nwhole:\n%s", n, got, whole)
					}
				}
				checkGolden(t, base+"."+from.String()+"_to_"+to.String()+".golden", whole)
			})
		}
	}
}
