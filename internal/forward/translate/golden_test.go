package translate

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var dialects = []Dialect{Messages, Chat, Responses}

func dialectByName(t testing.TB, name string) Dialect {
	for _, d := range dialects {
		if d.String() == name {
			return d
		}
	}
	t.Fatalf("unknown dialect %q", name)
	return 0
}

// inputs lists testdata/<dir>/<name>.<dialect>.<ext> files.
func inputs(t *testing.T, dir, ext string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*."+ext))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		if !strings.Contains(f, ".golden") && !strings.Contains(f, "_to_") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no inputs in testdata/%s", dir)
	}
	return out
}

// splitName splits "testdata/dir/name.dialect.ext".
func splitName(t *testing.T, path string) (base string, d Dialect) {
	parts := strings.Split(filepath.Base(path), ".")
	if len(parts) != 3 {
		t.Fatalf("bad input name %s", path)
	}
	return strings.TrimSuffix(path, "."+parts[1]+"."+parts[2]), dialectByName(t, parts[1])
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n got: %s\nwant: %s", path, got, want)
	}
}

func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, b)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

var testNow = time.Unix(1795867920, 0)

func TestRequestGolden(t *testing.T) {
	for _, in := range inputs(t, "requests", "json") {
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
				out, info, err := Request(context.Background(), from, to, body, Options{})
				if err != nil {
					t.Fatalf("Request: %v", err)
				}
				got := indent(t, out)
				got = append(got, "// info: "+info.Model+" stream="+boolString(info.Stream)+" "+info.String()+"\n"...)
				checkGolden(t, base+"."+from.String()+"_to_"+to.String()+".golden", got)
			})
		}
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestResponseGolden(t *testing.T) {
	for _, in := range inputs(t, "answers", "json") {
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
				out, err := Response(context.Background(), from, to, body, testNow)
				if err != nil {
					t.Fatalf("Response: %v", err)
				}
				checkGolden(t, base+"."+from.String()+"_to_"+to.String()+".golden", indent(t, out))
			})
		}
	}
}
