package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// usageResult is what section 10 measured, for the goals.
type usageResult struct {
	cpuOn, cpuOff time.Duration      // proxy CPU per request at concurrency 32, medians
	ratio         float64            // median of the runs' on/off ratios; 0: not measured
	intake        map[string]float64 // engine → events/s
	queryDaily    map[string]time.Duration
	queryEvents   map[string]time.Duration
	skipped       map[string]string // engine → why its store benchmarks did not run
}

// usageConc is the concurrency of section 10's CPU comparison.
const usageConc = 32

// usage is section 10: the usage ledger. (a) Two proxies of the same build
// on one broker with a SQLite ledger, one reporting usage (the default) and
// one with --usage-buffer -1, under the same load, interleaved: proxy CPU
// per request. (b) The store's own benchmarks (internal/store,
// usage_bench_test.go) on SQLite and PostgreSQL: intake of batches of 500
// and a month of 1,000,000 events grouped by key and model.
func (b *bench) usageLedger() {
	s := &section{Title: "10. Usage ledger: reporting cost, intake and queries"}
	b.rep.Sections = append(b.rep.Sections, s)
	res := &usageResult{}
	res.init()
	b.usage = res
	d := b.phase(2 * time.Second)
	s.Intro = fmt.Sprintf("(a) One broker with a ledger (SQLite, `--state-dir`; the proxies' key is a managed key, so every event is "+
		"stored) and two proxies of the same build: *reporting* (default `--usage-buffer`: one usage event per request, "+
		"batched to the broker over `ReportUsage`) and *off* (`--usage-buffer -1`). Section 1's request at concurrency %d; "+
		"each run %v warm-up and %v measured per proxy, the two interleaved (order alternating); %d runs. CPU per request: "+
		"the proxy's utime+stime over the measured phase divided by the requests it answered; the ratio is the median of "+
		"the runs' ratios. (b) `go test ./internal/store -run '^$' -bench 'Usage(Intake|QueryMonth)' -benchtime 2s` in a "+
		"child process: intake of batches of 500 events (one transaction each, as the broker stores a proxy's batch), and "+
		"a month of 1,000,000 events (50 keys, 10 models, loaded first in batches of 1,000) grouped by key and model, "+
		"from the daily sums (a range of whole days, what `broker usage --from DATE` asks) and from the events (a range "+
		"with times).", usageConc, b.phase(300*time.Millisecond), d, b.opts.runs)
	s.Header = []string{"measure", "figure"}
	meter := b.meter()
	if err := b.usageCPU(s, res, d); err != nil {
		s.note("(a) not measured: %s", oneLine(err.Error()))
	}
	b.usageStore(s, res)
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// usageCPU is part (a).
func (b *bench) usageCPU(s *section, res *usageResult, d time.Duration) error {
	if err := b.need("broker", "proxy"); err != nil {
		return err
	}
	up, err := startUpstream(sandbox.Config{RequestLogSize: -1, TokenLifetime: time.Hour, RefreshIn: 50 * time.Minute})
	if err != nil {
		return err
	}
	defer up.close()
	dir := b.dir("usage-broker")
	proxyKey, admin := randomKey(), randomKey()
	keysFile := filepath.Join(dir, "broker.keys")
	if err := os.WriteFile(keysFile, []byte("bench:"+proxyKey+"\nbench-admin:"+admin+":*:admin\n"), 0o600); err != nil {
		return err
	}
	// The later --keys-file wins over the one startBrokerArgs writes.
	br, err := b.startBrokerArgs(up, "usage-broker", "--keys-file", keysFile, "--state-dir", filepath.Join(dir, "state"))
	if err != nil {
		return err
	}
	defer b.stop(br.Process)
	br.Key = proxyKey
	// The proxies' client key is named "bench" (writeKeys): manage it, so
	// the broker stores the events rather than refusing them.
	conn, err := grpc.NewClient("passthrough:///"+br.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(admin)))
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := brokerv1.NewKeyServiceClient(conn).CreateKey(b.ctx, &brokerv1.CreateKeyRequest{Name: "bench", Secret: randomKey()}); err != nil {
		return fmt.Errorf("creating the managed key: %w", err)
	}
	on, err := b.startProxyArgs(b.bins["proxy"], br, "proxy-reporting", "--copilot-api-url", up.URL, "--proxy-id", "bench-reporting")
	if err != nil {
		return err
	}
	defer b.stop(on.Process)
	off, err := b.startProxyArgs(b.bins["proxy"], br, "proxy-off", "--copilot-api-url", up.URL, "--usage-buffer", "-1")
	if err != nil {
		return err
	}
	defer b.stop(off.Process)
	ts := []*target{new(steady).targetFor("reporting", on, 2*usageConc), new(steady).targetFor("off", off, 2*usageConc)}
	defer ts[0].close()
	defer ts[1].close()
	stored0, _ := metric(b.ctx, "http://"+br.AdminAddr+"/metrics", `copilot_broker_usage_events_total{result="stored"}`)
	var cpuOn, cpuOff, ratios []float64
	requests := 0
	for run := range b.opts.runs {
		var r [2]fwdRun
		for i := range ts {
			j := (i + run) % 2
			if r[j], err = b.measureForward(ts[j], usageConc, d); err != nil {
				return err
			}
			if r[j].errs > 0 {
				s.note("%s, run %d: %d failed requests (%v)", ts[j].name, run+1, r[j].errs, r[j].firstErr)
			}
		}
		requests += r[0].requests
		cpuOn, cpuOff = append(cpuOn, float64(r[0].cpuPerReq)), append(cpuOff, float64(r[1].cpuPerReq))
		if r[1].cpuPerReq > 0 {
			ratios = append(ratios, float64(r[0].cpuPerReq)/float64(r[1].cpuPerReq))
		}
	}
	res.cpuOn, res.cpuOff = time.Duration(load.Median(cpuOn)), time.Duration(load.Median(cpuOff))
	if len(ratios) > 0 {
		res.ratio = load.Median(ratios)
	}
	s.row(fmt.Sprintf("proxy CPU per request, reporting usage (concurrency %d)", usageConc), us(res.cpuOn))
	s.row(fmt.Sprintf("proxy CPU per request, reporting off (concurrency %d)", usageConc), us(res.cpuOff))
	s.row("reporting / off (median of the runs' ratios)", fmt.Sprintf("%.3f (%+.1f %%)", res.ratio, 100*(res.ratio-1)))
	each := make([]string, len(ratios))
	for i, x := range ratios {
		each[i] = fmt.Sprintf("%.3f", x)
	}
	s.note("Each run's ratio, reporting / off: %s (the spread is the machine's noise; the pair of a run shares it).", strings.Join(each, ", "))
	// Every answered request of the reporting proxy (warm-ups included)
	// reaches the ledger; wait a moment for the last batch.
	deadline := time.Now().Add(10 * time.Second)
	var stored float64
	for {
		stored, _ = metric(b.ctx, "http://"+br.AdminAddr+"/metrics", `copilot_broker_usage_events_total{result="stored"}`)
		if stored-stored0 >= float64(requests) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.note("The reporting proxy's events stored by the broker during (a): %.0f (its measured phases answered %d requests; "+
		"warm-ups add to the events).", stored-stored0, requests)
	return nil
}

// storeBench matches a result line of `go test -bench`.
var storeBench = regexp.MustCompile(`^BenchmarkUsage(Intake|QueryMonth)/(sqlite|postgres)(/(daily|events))?(-\d+)?\s+\d+\s+(.*)$`)

// usageStore is part (b): the store's benchmarks in a child `go test`.
func (b *bench) usageStore(s *section, res *usageResult) {
	start := time.Now()
	cmd := exec.CommandContext(b.ctx, "go", "test", "./internal/store", "-run", "^$", "-count", "1", "-timeout", "20m",
		"-bench", "^BenchmarkUsage(Intake|QueryMonth)$", "-benchtime", "2s")
	cmd.Dir = b.moduleDir
	out, err := cmd.CombinedOutput()
	b.logf("store benchmarks took %v", time.Since(start).Round(time.Second))
	skips := res.parse(out)
	for _, e := range []string{"sqlite", "postgres"} {
		name := map[string]string{"sqlite": "SQLite", "postgres": "PostgreSQL"}[e]
		_, ok := res.intake[e]
		if !ok {
			why := "no result (see the notes)"
			if e == "postgres" && len(skips) > 0 {
				why = skips[0]
			}
			res.skipped[e] = why
			s.row(name+": intake and month query", "not measured: "+why)
			continue
		}
		s.row(name+": intake, batches of 500", fmt.Sprintf("%.0f events/s", res.intake[e]))
		if q, ok := res.queryDaily[e]; ok {
			s.row(name+": a month of 1,000,000 events by key and model, from the daily sums", ms(q))
		}
		if q, ok := res.queryEvents[e]; ok {
			s.row(name+": the same from the events (a range with times)", ms(q))
		}
	}
	if err != nil {
		s.note("`go test ./internal/store` failed: %v: %s", err, oneLine(tailString(string(out), 600)))
	}
	s.note("The store benchmarks ran in %v (most of it loading the month of events, once per engine). PostgreSQL is "+
		"internal/testutil/pgtest's server (Debian's binaries, `fsync=off`, `synchronous_commit=off`: a test server); "+
		"SQLite is the broker's own configuration (WAL, `synchronous(FULL)`).", time.Since(start).Round(time.Second))
}

// parse reads the result lines of `go test -bench` output into u, and
// returns pgtest's lines saying PostgreSQL was skipped.
func (u *usageResult) parse(out []byte) (skips []string) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "PostgreSQL tests skipped"); i >= 0 {
			skips = append(skips, line[i:])
		}
		m := storeBench.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		bench, engine, query, fields := m[1], m[2], m[4], strings.Fields(m[6])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			switch unit := fields[i+1]; {
			case bench == "Intake" && unit == "events/s":
				u.intake[engine] = v
			case bench == "QueryMonth" && unit == "ns/op" && query == "daily":
				u.queryDaily[engine] = time.Duration(v)
			case bench == "QueryMonth" && unit == "ns/op" && query == "events":
				u.queryEvents[engine] = time.Duration(v)
			}
		}
	}
	return skips
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// usageGoals are issue 24's targets.
func (b *bench) usageGoals() {
	r, u := b.rep, b.usage
	if u == nil || u.ratio == 0 {
		r.unmeasured("Usage reporting: proxy CPU per request vs reporting off", "within 3 %", "not measured")
	} else {
		r.goal("Usage reporting: proxy CPU per request vs reporting off, concurrency 32", "within 3 %",
			fmt.Sprintf("%+.1f %% (%s vs %s)", 100*(u.ratio-1), us(u.cpuOn), us(u.cpuOff)), u.ratio <= 1.03)
	}
	for _, e := range []string{"sqlite", "postgres"} {
		name := map[string]string{"sqlite": "SQLite", "postgres": "PostgreSQL"}[e]
		v, ok := u.intakeOf(e)
		if !ok {
			r.unmeasured("Ledger intake on "+name+" (batches of 500)", "≥ 20,000 events/s", u.whySkipped(e))
		} else {
			r.goal("Ledger intake on "+name+" (batches of 500)", "≥ 20,000 events/s", fmt.Sprintf("%.0f events/s", v), v >= 20000)
		}
		if q, ok := u.dailyOf(e); ok {
			r.goal("Month of 1,000,000 events by key and model on "+name, "< 200 ms", ms(q), q < 200*time.Millisecond)
		} else {
			r.unmeasured("Month of 1,000,000 events by key and model on "+name, "< 200 ms", u.whySkipped(e))
		}
	}
}

func (u *usageResult) init() {
	u.intake, u.queryDaily, u.queryEvents, u.skipped = map[string]float64{}, map[string]time.Duration{}, map[string]time.Duration{}, map[string]string{}
}

func (u *usageResult) intakeOf(e string) (float64, bool) {
	if u == nil {
		return 0, false
	}
	v, ok := u.intake[e]
	return v, ok
}

func (u *usageResult) dailyOf(e string) (time.Duration, bool) {
	if u == nil {
		return 0, false
	}
	v, ok := u.queryDaily[e]
	return v, ok
}

func (u *usageResult) whySkipped(e string) string {
	if u == nil {
		return "not measured"
	}
	if why := u.skipped[e]; why != "" {
		return why
	}
	return "not measured"
}
