package deploy

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// No Docker engine runs here, so the Dockerfile is checked with BuildKit's own
// parser and its parse-time lint rules (those of `docker build --check`), its
// structure is asserted below, and dockerbuild_test.go replays its build stage.

const (
	dockerfilePath = "../Dockerfile"
	buildStage     = "build"
	nonrootUser    = "65532:65532"
)

// binaries are the images the Dockerfile must offer, one final stage each.
var binaries = []string{"broker", "proxy", "sandbox"}

// dockerfile is the parsed Dockerfile: its stages and their FROM images with
// the global ARG defaults expanded.
type dockerfile struct {
	stages []instructions.Stage
	bases  map[string]string // stage name -> expanded base image
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parsing %s: %v", dockerfilePath, err)
	}
	for _, w := range res.Warnings {
		t.Errorf("%s: parser warning: %s", dockerfilePath, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, _, msg string, loc []parser.Range) {
		t.Errorf("%s:%v: lint %s: %s", dockerfilePath, loc, rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("parsing %s instructions: %v", dockerfilePath, err)
	}
	var env []string
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				env = append(env, kv.Key+"="+*kv.Value)
			}
		}
	}
	// BuildKit supplies these; their values do not matter for the checks.
	env = append(env, "BUILDPLATFORM=linux/amd64", "TARGETPLATFORM=linux/amd64")
	lex := shell.NewLex(res.EscapeToken)
	df := dockerfile{stages: stages, bases: map[string]string{}}
	for _, s := range stages {
		base, _, err := lex.ProcessWord(s.BaseName, shell.EnvsFromSlice(env))
		if err != nil {
			t.Fatalf("stage %s: expanding FROM %s: %v", s.Name, s.BaseName, err)
		}
		df.bases[s.Name] = base
	}
	return df
}

func (df dockerfile) stage(name string) (instructions.Stage, bool) {
	for _, s := range df.stages {
		if s.Name == name {
			return s, true
		}
	}
	return instructions.Stage{}, false
}

func TestDockerfileBuildStage(t *testing.T) {
	df := parseDockerfile(t)
	s, ok := df.stage(buildStage)
	if !ok {
		t.Fatalf("no stage %q", buildStage)
	}
	if base := df.bases[buildStage]; !strings.HasPrefix(base, "golang:1.26") {
		t.Errorf("build stage FROM %s; want golang:1.26 (go.mod's Go)", base)
	}
	var envs []string
	var builds []string
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				envs = append(envs, kv.Key+"="+kv.Value)
			}
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			if strings.Contains(line, "go build") {
				builds = append(builds, line)
			}
		}
	}
	if !slices.Contains(envs, "CGO_ENABLED=0") {
		t.Errorf("build stage ENV %v; want CGO_ENABLED=0 for static binaries", envs)
	}
	if len(builds) != 1 {
		t.Fatalf("build stage has %d RUN go build; want 1", len(builds))
	}
	for _, flag := range []string{"-trimpath", "./cmd/...", "-o /out/"} {
		if !strings.Contains(builds[0], flag) {
			t.Errorf("build RUN %q lacks %q", builds[0], flag)
		}
	}
}

func TestDockerfileFinalStages(t *testing.T) {
	df := parseDockerfile(t)
	for _, s := range df.stages {
		base := df.bases[s.Name]
		if _, isStage := df.stage(base); isStage {
			continue
		}
		if err := checkImageRef(base); err != nil {
			t.Errorf("stage %s: %v", s.Name, err)
		}
	}
	for _, bin := range binaries {
		t.Run(bin, func(t *testing.T) {
			s, ok := df.stage(bin)
			if !ok {
				t.Fatalf("no stage %q", bin)
			}
			if base := df.bases[bin]; !strings.HasPrefix(base, "gcr.io/distroless/static") || !strings.HasSuffix(base, ":nonroot") {
				t.Errorf("stage %s FROM %s; want distroless/static:nonroot", bin, base)
			}
			if got := finalStageSummary(s); got != fmt.Sprintf("copy /out/%s -> /%s; user %s; entrypoint [/%s]", bin, bin, nonrootUser, bin) {
				t.Errorf("stage %s = %q; want it to copy only its binary, run as %s, and exec it", bin, got, nonrootUser)
			}
		})
	}
	if last := df.stages[len(df.stages)-1].Name; last != "broker" {
		t.Errorf("last stage = %s; want broker, what a build without --target makes", last)
	}
}

// finalStageSummary condenses a final stage to what matters: what it copies
// from the build stage, the user it ends with, and its entrypoint.
func finalStageSummary(s instructions.Stage) string {
	var copies []string
	user, entry := "root", "none"
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.CopyCommand:
			copies = append(copies, fmt.Sprintf("%s -> %s", strings.Join(c.SourcePaths, " "), c.DestPath))
			if c.From != buildStage {
				copies = append(copies, "(not from "+buildStage+")")
			}
		case *instructions.AddCommand, *instructions.RunCommand:
			copies = append(copies, "(unexpected "+c.Name()+")")
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entry = fmt.Sprint(c.CmdLine)
			if c.PrependShell {
				entry = "shell form " + entry
			}
		}
	}
	return fmt.Sprintf("copy %s; user %s; entrypoint %s", strings.Join(copies, ", "), user, entry)
}

// TestDockerfileCoversEveryBinary proves each main package under cmd/ has a
// final stage, so a new binary does not silently lack an image. (That each
// stage's binary is built is proven by TestDockerBuildStageReplays.)
func TestDockerfileCoversEveryBinary(t *testing.T) {
	entries, err := os.ReadDir("../cmd")
	if os.IsNotExist(err) {
		t.Skip("no ../cmd yet")
	}
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if e.IsDir() {
			if m, _ := filepath.Glob(path.Join("../cmd", e.Name(), "*.go")); len(m) > 0 {
				got = append(got, e.Name())
			}
		}
	}
	for _, b := range got {
		if !slices.Contains(binaries, b) {
			t.Errorf("cmd/%s has no final stage in the Dockerfile (stages for %v)", b, binaries)
		}
	}
}
