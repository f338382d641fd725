// Command bench measures the proxy and the broker against the sandbox
// upstream, beside direct calls and nginx as references, and writes a
// Markdown report (docs/benchmarks.md through `make bench`).
//
//	go run ./bench -out docs/benchmarks.md
//
// It builds cmd/broker and cmd/proxy into a temporary directory, runs them as
// child processes on free loopback ports (so their CPU time and memory can be
// read from /proc), runs the sandbox in this process behind a tap that stamps
// what leaves it, and starts nginx from Debian's package with a generated
// configuration. The whole run is bounded by -timeout (default 25 min; the
// usage section loads a month of 1,000,000 events into each store engine,
// section 6 holds up to 10,000 streams).
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command's flags.
type options struct {
	out            string
	runs           int
	scale          float64 // multiplies every phase duration
	only           []string
	keep           bool
	profile        string
	altProxy       string // NAME=PATH,... proxy binaries measured beside the built one
	altBroker      string // NAME=PATH,... broker binaries measured beside the built one
	streams        []int  // section 6's concurrent stream counts
	manyChunks     int    // section 6's chunks per stream (0: by the count)
	profileStreams int    // section 6's profiled proxies' streams
	timeout        time.Duration
}

var allSections = []string{"forward", "forward-tls", "stream", "many-streams", "fanout", "accounts", "reads", "rotation", "translate", "websocket", "keys", "usage", "propagation"}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	var only string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.out, "out", "", "write the Markdown report to this file (default: stdout)")
	fs.IntVar(&o.runs, "runs", 5, "repetitions of each measurement; figures are medians over them")
	fs.Float64Var(&o.scale, "scale", 1, "multiply every phase duration (0.2 for a quick look)")
	fs.StringVar(&only, "only", strings.Join(allSections, ","), "comma-separated sections to run")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (logs, nginx config)")
	fs.StringVar(&o.altProxy, "compare-proxy", "", "also measure other proxy binaries (e.g. locally patched builds) in sections 1, 1b, 2 and 6: NAME=PATH[,NAME=PATH...], shown as proxy-NAME (proxy-h2-NAME with an HTTP/2 upstream)")
	fs.StringVar(&o.altBroker, "compare-broker", "", "also measure other broker binaries (e.g. builds of older commits) in section 4: NAME=PATH[,NAME=PATH...], shown as [NAME]")
	fs.StringVar(&o.profile, "profile", "", "also take CPU and allocation profiles of the proxy and of the broker's gRPC GetToken and REST GET /v1/token paths into this directory (with many-streams: heap, goroutine and CPU profiles of a proxy holding -profile-streams streams, for each upstream protocol and client kind)")
	streams := fs.String("streams", joinInts(defaultManyCounts), "section 6 (many-streams): comma-separated concurrent stream counts")
	fs.IntVar(&o.profileStreams, "profile-streams", 2000, "with -profile and many-streams: how many streams the profiled proxies hold")
	fs.IntVar(&o.manyChunks, "many-chunks", 0, "section 6: chunks per stream, 1 s apart (default 20 plus 1 per 1,000 streams); more when opening the streams takes longer than that on a loaded machine")
	fs.DurationVar(&o.timeout, "timeout", 25*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, f := range strings.Split(*streams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-streams: %q is not a positive count", f)
		}
		o.streams = append(o.streams, n)
	}
	if o.runs < 1 || o.scale <= 0 {
		return o, errors.New("-runs must be >= 1 and -scale > 0")
	}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !slices.Contains(allSections, s) {
			return o, fmt.Errorf("-only: unknown section %q (have %s)", s, strings.Join(allSections, ", "))
		}
		o.only = append(o.only, s)
	}
	return o, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 1 && args[0] == "__floor" {
		return serveFloor(ctx, getenv)
	}
	if len(args) == 1 && args[0] == "__upstream" {
		return serveUpstream(ctx, getenv)
	}
	if len(args) == 2 && args[0] == "__profiled" {
		return serveProfiled(ctx, args[1], getenv)
	}
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	moduleDir, err := findModule()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintf(stderr, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	b := &bench{fwd: map[int]map[string]fwdSummary{}, fwdTLS: map[int]map[string]fwdSummary{}, many: map[manyKey]manySummary{}, sse: map[string][2]time.Duration{}, fan: map[int]fanoutRun{}, readRPS: map[string]float64{},
		opts: o, ctx: ctx, tmp: tmp, moduleDir: moduleDir, log: stderr,
		rep: &report{Command: "`make bench` (`go run ./bench -out docs/benchmarks.md`, code in bench/)", Started: time.Now()},
	}
	if len(o.only) != len(allSections) || o.runs != 5 || o.scale != 1 {
		b.rep.Command = "`go run ./bench " + strings.Join(args, " ") + "` (code in bench/)"
	}
	defer b.closeAll()
	b.describeMachine()
	if err := b.build(); err != nil {
		b.rep.Notes = append(b.rep.Notes, "build: "+oneLine(err.Error()))
	}
	for _, name := range o.only {
		if ctx.Err() != nil {
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("%s: skipped, the run's time bound was reached", name))
			continue
		}
		start := time.Now()
		b.logf("== %s", name)
		sections[name](b)
		b.logf("== %s took %v", name, time.Since(start).Round(100*time.Millisecond))
	}
	if o.profile != "" {
		if err := b.profile(o.profile); err != nil {
			b.logf("profile: %v", err)
		}
	}
	b.goals()
	b.rep.Findings = findings
	b.describeLoadAfter()
	b.rep.Took = time.Since(b.rep.Started)

	w := stdout
	if o.out != "" {
		path := o.out
		if !filepath.IsAbs(path) {
			path = filepath.Join(moduleDir, path)
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	return b.rep.write(w)
}

// findings are the profiling findings written by hand after studying the
// profiles; the report carries them below the measured sections.
//
//go:embed findings.md
var findings string

var sections = map[string]func(*bench){
	"forward":      (*bench).forward,
	"forward-tls":  (*bench).forwardTLS,
	"stream":       (*bench).stream,
	"many-streams": (*bench).manyStreams,
	"fanout":       (*bench).fanout,
	"accounts":     (*bench).accountsFanout,
	"reads":        (*bench).reads,
	"rotation":     (*bench).rotation,
	"translate":    (*bench).translated,
	"keys":         (*bench).managedKeys,
	"websocket":    (*bench).websockets,
	"usage":        (*bench).usageLedger,
	"propagation":  (*bench).propagation,
}

// findModule returns the directory of the enclosing go.mod.
func findModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
