package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
)

// bench is the state of one run: options, temp dir, built binaries, started
// processes (stopped at the end) and the report being written.
type bench struct {
	opts      options
	ctx       context.Context
	tmp       string
	moduleDir string
	log       io.Writer
	rep       *report

	bins     map[string]string // "broker", "proxy" -> path
	buildErr map[string]error
	procs    []*proc.Process
	cleanups []func()
	seq      int // names temp subdirectories

	startLoad   cpuMeter
	steadyCache *steady
	manyCache   *manyStack                    // section 6's upstream process and broker
	fwd         map[int]map[string]fwdSummary // section 1 medians by concurrency, for the goals
	fwdTLS      map[int]map[string]fwdSummary // section 1b (TLS upstream), the same
	many        map[manyKey]manySummary       // section 6 by stream count and path
	sse         map[string][2]time.Duration   // section 2 added delay per chunk p50, p99 by path
	xlate       *xlateSummary                 // section 7, when measured
	ws          *wsSummary                    // section 8, when measured
	fan         map[int]fanoutRun             // section 3 by watcher count
	readRPS     map[string]float64            // section 4 calls/s by variant
	rot         *rotationResult               // section 5
	keys        *keysResult                   // section 9
	usage       *usageResult                  // section 10
	prop        []*propKind                   // section 11
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// phase scales a nominal duration by -scale.
func (b *bench) phase(d time.Duration) time.Duration {
	return time.Duration(float64(d) * b.opts.scale)
}

// dir returns a new subdirectory of the temp dir.
func (b *bench) dir(name string) string {
	b.seq++
	d := filepath.Join(b.tmp, fmt.Sprintf("%02d-%s", b.seq, name))
	_ = os.MkdirAll(d, 0o700)
	return d
}

// onClose registers f to run at the end, in reverse order.
func (b *bench) onClose(f func()) { b.cleanups = append(b.cleanups, f) }

func (b *bench) closeAll() {
	for i := len(b.procs) - 1; i >= 0; i-- {
		if err := b.procs[i].Stop(5 * time.Second); err != nil {
			b.logf("%s: %v", b.procs[i].Name, err)
		}
	}
	b.procs = nil
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// stop ends p now and forgets it.
func (b *bench) stop(p *proc.Process) {
	if p == nil {
		return
	}
	if err := p.Stop(5 * time.Second); err != nil {
		b.logf("%s: %v", p.Name, err)
	}
	for i, q := range b.procs {
		if q == p {
			b.procs = append(b.procs[:i], b.procs[i+1:]...)
			break
		}
	}
}

// build compiles the broker and the proxy; a missing one is noted, and the
// sections that need it say so.
func (b *bench) build() error {
	b.bins, b.buildErr = map[string]string{}, map[string]error{}
	dir := b.dir("bin")
	var errs []string
	for _, name := range []string{"broker", "proxy"} {
		start := time.Now()
		out, err := proc.Build(b.ctx, b.moduleDir, dir, "./cmd/"+name)
		if err != nil {
			b.buildErr[name] = err
			errs = append(errs, err.Error())
			continue
		}
		b.bins[name] = out["./cmd/"+name]
		b.logf("built %s in %v", name, time.Since(start).Round(time.Millisecond))
	}
	b.startLoad = b.meter()
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// need reports why a binary is unavailable, or nil.
func (b *bench) need(names ...string) error {
	for _, n := range names {
		if _, ok := b.bins[n]; !ok {
			if err := b.buildErr[n]; err != nil {
				return fmt.Errorf("cmd/%s does not build yet: %w", n, err)
			}
			return fmt.Errorf("cmd/%s not built", n)
		}
	}
	return nil
}

// describeMachine fills the report's machine section.
func (b *bench) describeMachine() {
	m := &b.rep.Machine
	add := func(k, v string) { *m = append(*m, k+": "+v) }
	add("CPUs (nproc)", strconv.Itoa(runtime.NumCPU()))
	add("CPU model", cpuModel())
	add("memory", memTotal())
	if rel, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		add("kernel", "Linux "+strings.TrimSpace(string(rel)))
	}
	add("Go", runtime.Version()+" (binaries built with `go build -trimpath`, CGO_ENABLED=0, default GOMAXPROCS)")
	if v, err := nginxVersion(b.ctx); err == nil {
		add("nginx", v+" (Debian package)")
	} else {
		add("nginx", "not installed")
	}
	add("load average at start", loadavg())
}

// describeLoadAfter notes how much CPU other processes took during the run.
func (b *bench) describeLoadAfter() {
	b.closeAll() // reaps the children, so their CPU time is counted
	end := b.meter()
	b.rep.Load = append(b.rep.Load,
		"load average at end: "+loadavg(),
		"other processes during the measurements: "+end.othersSince(b.startLoad))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
				return fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	return "unknown"
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ") + " (1, 5, 15 min)"
}

// cpuMeter is a snapshot of the machine's busy CPU time and of this
// process tree's, so the difference is what other processes used.
type cpuMeter struct {
	at          time.Time
	busy, total time.Duration // all CPUs, from /proc/stat
	ours        time.Duration // this process, its live children, reaped children
}

func (b *bench) meter() cpuMeter {
	m := cpuMeter{at: time.Now()}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		var v [10]int64
		for i := 1; i < len(f) && i <= 10; i++ {
			v[i-1], _ = strconv.ParseInt(f[i], 10, 64)
		}
		tick := func(n int64) time.Duration { return time.Duration(n) * time.Second / 100 }
		// user nice system idle iowait irq softirq steal (guest is in user)
		m.busy = tick(v[0] + v[1] + v[2] + v[5] + v[6] + v[7])
		m.total = m.busy + tick(v[3]+v[4])
	}
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	m.ours = rusageCPU(self) + rusageCPU(kids)
	for _, p := range b.procs {
		if c, err := p.CPU(true); err == nil {
			m.ours += c
		}
	}
	return m
}

func rusageCPU(r syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// othersSince describes the CPU that processes outside this run used since
// start, as a share of the machine.
func (m cpuMeter) othersSince(start cpuMeter) string {
	total := m.total - start.total
	if total <= 0 {
		return "unknown"
	}
	others := max((m.busy-start.busy)-(m.ours-start.ours), 0)
	return fmt.Sprintf("%.1f CPU-s of %.1f available (%.0f%% of the machine; ours: %.0f%%)",
		others.Seconds(), total.Seconds(), 100*float64(others)/float64(total),
		100*float64(m.ours-start.ours)/float64(total))
}

// waitTCP waits until addr accepts connections, p exits or timeout passes.
func waitTCP(ctx context.Context, p *proc.Process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok, err := p.Exited(); ok {
			return fmt.Errorf("%s exited while starting: %v", p.Name, err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not listening on %s within %v: %v", p.Name, addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
