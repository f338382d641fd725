package deploy

import (
	"debug/elf"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// repoRoot is the Docker build context: the repository root.
const repoRoot = ".."

// buildContext copies the files Docker would send as the build context
// (.dockerignore applied with Docker's own matcher) into a new directory.
func buildContext(t *testing.T) (dir string, files []string) {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	dir = t.TempDir()
	err = filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		excluded, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if excluded {
			// Docker still descends when a later !pattern may re-include; ours has none.
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		files = append(files, rel)
		return copyFile(p, filepath.Join(dir, rel))
	})
	if err != nil {
		t.Fatalf("copying the build context: %v", err)
	}
	return dir, files
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func TestDockerignore(t *testing.T) {
	if _, err := os.Stat(filepath.Join(repoRoot, "go.mod")); err != nil {
		t.Fatalf("the build context needs go.mod: %v", err)
	}
	_, files := buildContext(t)
	for _, want := range []string{"go.mod", "go.sum"} {
		if !slices.Contains(files, want) {
			t.Errorf("build context lacks %s", want)
		}
	}
	allowed := []string{"cmd/", "internal/", "gen/"}
	for _, f := range files {
		if f != "go.mod" && f != "go.sum" && !slices.ContainsFunc(allowed, func(p string) bool { return strings.HasPrefix(f, p) }) {
			t.Errorf("build context holds %s; .dockerignore sends only go.mod, go.sum and %v", f, allowed)
		}
		if strings.HasSuffix(f, ".pem") || strings.HasSuffix(f, ".key") {
			t.Errorf("build context holds key material %s", f)
		}
	}
}

// TestDockerBuildStageReplays runs the Dockerfile's build stage without
// Docker: its ENV and RUN instructions, in order, in a copy of the build
// context filtered by .dockerignore, with /out redirected to a temporary
// directory and this machine's GOOS/GOARCH as the target. It then proves
// every binary a final stage copies was built, and statically linked (a
// dynamically linked one would not start on distroless/static).
func TestDockerBuildStageReplays(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles every binary; skipped with -short")
	}
	for _, b := range binaries {
		if m, _ := filepath.Glob(filepath.Join(repoRoot, "cmd", b, "main.go")); len(m) == 0 {
			t.Skipf("cmd/%s/main.go is not there yet; the replay needs every binary", b)
		}
	}
	df := parseDockerfile(t)
	build, ok := df.stage(buildStage)
	if !ok {
		t.Fatalf("no stage %q", buildStage)
	}
	ctx, _ := buildContext(t)
	out := filepath.Join(t.TempDir(), "out") + "/"
	// The golang image's environment, not this machine's (GOFLAGS, GOTOOLCHAIN...).
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"GOCACHE=" + goEnv(t, "GOCACHE"), "GOMODCACHE=" + goEnv(t, "GOMODCACHE"),
		"GOPROXY=" + goEnv(t, "GOPROXY"), "GOFLAGS=",
		"TARGETOS=" + runtime.GOOS, "TARGETARCH=" + runtime.GOARCH,
	}
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				env = append(env, kv.Key+"="+kv.Value)
			}
		case *instructions.RunCommand:
			script := strings.ReplaceAll(strings.Join(c.CmdLine, " "), "/out/", out)
			cmd := exec.Command("/bin/sh", "-c", script)
			cmd.Dir, cmd.Env = ctx, env
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("RUN %s: %v\n%s", script, err, b)
			}
		}
	}
	for _, b := range binaries {
		if err := checkStatic(filepath.Join(out, b)); err != nil {
			t.Errorf("binary %s: %v", b, err)
		}
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	b, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

// checkStatic fails for a missing file or an ELF that needs a dynamic loader.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("has a program interpreter (dynamically linked)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return errors.New("imports shared libraries " + strings.Join(libs, ", "))
	}
	return nil
}
