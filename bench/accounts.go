package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Section 3c: one broker serving many accounts, many watchers on each.
const (
	accountsN          = 50
	watchersPerAccount = 1000
)

// accountsFanout is section 3c: 50 accounts from an accounts directory, 1,000
// WatchToken streams on each; a rotation of one account propagates to its
// watchers while the 49,000 others stay idle.
func (b *bench) accountsFanout() {
	s := &section{Title: "3c. Fan-out across accounts: 50 accounts × 1,000 watchers"}
	b.rep.Sections = append(b.rep.Sections, s)
	rotations := max(b.opts.runs, 3)
	s.Intro = fmt.Sprintf("One broker process with `--accounts-dir` holding %d accounts (sandbox accounts, each its own GitHub token) "+
		"besides the default one, and %d WatchToken streams per account (%d in all) from this process over %d gRPC connections. "+
		"Each rotation forces one account's refresh (RefreshToken naming its current generation; a different account each time) "+
		"and measures, as in section 3, from the sandbox's answer to each of that account's watchers receiving the new "+
		"generation, while the other accounts' streams stay open and idle; %d rotations, medians over them. Memory per "+
		"watcher is the broker's VmRSS and Go heap after every stream has its first message, minus before any was opened, "+
		"divided by all %d streams; it includes the accounts' own cost (managers, quota pollers) only in the before figure.",
		accountsN, watchersPerAccount, accountsN*watchersPerAccount, fanoutConns, rotations, accountsN*watchersPerAccount)
	s.Header = []string{"accounts × watchers", "propagation p50", "p99", "max", "RSS/watcher", "Go heap/watcher", "broker RSS before → after", "subscribe all"}
	if err := b.need("broker"); err != nil {
		s.Err = err
		return
	}
	meter := b.meter()
	up, err := startUpstream(sandbox.Config{RequestLogSize: -1, TokenLifetime: time.Hour, RefreshIn: 50 * time.Minute})
	if err != nil {
		s.Err = err
		return
	}
	defer up.close()
	r, err := b.accountsFanoutOnce(up, rotations)
	if err != nil {
		s.Err = err
		return
	}
	md := func(xs []float64) time.Duration { return time.Duration(load.Median(xs)) }
	s.row(fmt.Sprintf("%d × %d", accountsN, watchersPerAccount), ms(md(r.p50)), ms(md(r.p99)), ms(md(r.max)),
		fmt.Sprintf("%.1f KiB", r.rssPer/1024), fmt.Sprintf("%.1f KiB", r.heapPer/1024),
		fmt.Sprintf("%.1f → %.1f MiB", float64(r.rssBefore)/(1<<20), float64(r.rssAfter)/(1<<20)), ms(r.subscribe))
	for _, n := range []int{1000, 10000} {
		if one, ok := b.fan[n]; ok {
			s.note("single account, %d watchers (section 3, this run): p99 %s, RSS/watcher %.1f KiB, Go heap/watcher %.1f KiB",
				n, ms(md(one.p99)), one.rssPer/1024, one.heapPer/1024)
		}
	}
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

func (b *bench) accountsFanoutOnce(up *upstream, rotations int) (fanoutRun, error) {
	r := fanoutRun{n: accountsN * watchersPerAccount}
	dir := filepath.Join(b.dir("broker-accounts"), "accounts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	names := make([]string, accountsN)
	for i := range names {
		names[i] = fmt.Sprintf("acct%02d", i)
		tok, err := up.AddAccount(sandbox.AccountConfig{Name: names[i]})
		if err != nil {
			return r, err
		}
		if err := writeSecretFile(filepath.Join(dir, names[i]), tok); err != nil {
			return r, err
		}
	}
	br, err := b.startBrokerArgs(up, "broker-accounts", "--min-force-interval", "100ms", "--accounts-dir", dir)
	if err != nil {
		return r, err
	}
	defer b.stop(br.Process)
	conn, client, err := dialBroker(br)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Minute)
	defer cancel()
	gens := make([]uint64, accountsN)
	for i, name := range names {
		cur, err := client.GetToken(ctx, &brokerv1.GetTokenRequest{Account: name})
		if err != nil {
			return r, fmt.Errorf("GetToken(%s): %w", name, err)
		}
		gens[i] = cur.GetToken().GetGeneration()
	}
	metricsURL := "http://" + br.AdminAddr + "/metrics"
	time.Sleep(500 * time.Millisecond) // let the fresh process settle (first quota readings)
	heap0, herr := metric(ctx, metricsURL, "go_memstats_heap_inuse_bytes")
	if r.rssBefore, err = br.RSS(); err != nil {
		return r, err
	}
	start := time.Now()
	accountOf := func(i int) string { return names[i/watchersPerAccount] }
	w, err := b.openAccountWatchers(br, r.n, fanoutConns, accountOf)
	if err != nil {
		return r, err
	}
	defer w.close()
	for a := range names {
		if err := w.waitRange(ctx, a*watchersPerAccount, (a+1)*watchersPerAccount, gens[a], 2*time.Minute); err != nil {
			return r, fmt.Errorf("subscribing: %w", err)
		}
	}
	r.subscribe = time.Since(start)
	time.Sleep(500 * time.Millisecond)
	if r.rssAfter, err = br.RSS(); err != nil {
		return r, err
	}
	r.rssPer = float64(r.rssAfter-r.rssBefore) / float64(r.n)
	if heap1, err := metric(ctx, metricsURL, "go_memstats_heap_inuse_bytes"); err == nil && herr == nil {
		r.heapPer = (heap1 - heap0) / float64(r.n)
	}
	for k := range rotations {
		a := (k * 17) % accountsN
		t := time.Now()
		res, err := client.RefreshToken(ctx, &brokerv1.RefreshTokenRequest{Account: names[a], RejectedGeneration: gens[a]})
		if err != nil {
			return r, fmt.Errorf("RefreshToken(%s): %w", names[a], err)
		}
		next := res.GetToken().GetGeneration()
		if next <= gens[a] {
			return r, fmt.Errorf("RefreshToken(%s, %d) answered generation %d; want a newer one", names[a], gens[a], next)
		}
		gens[a] = next
		lo, hi := a*watchersPerAccount, (a+1)*watchersPerAccount
		if err := w.waitRange(ctx, lo, hi, next, 30*time.Second); err != nil {
			return r, err
		}
		ex := up.exchangesSince(t)
		if len(ex) == 0 {
			return r, errors.New("no exchange stamped for the rotation")
		}
		prop := w.propagationRange(lo, hi, next, ex[len(ex)-1])
		if len(prop) != watchersPerAccount {
			return r, fmt.Errorf("%d of %d watchers of %s recorded generation %d", len(prop), watchersPerAccount, names[a], next)
		}
		r.p50 = append(r.p50, float64(load.Percentile(prop, 50)))
		r.p99 = append(r.p99, float64(load.Percentile(prop, 99)))
		r.max = append(r.max, float64(prop[len(prop)-1]))
		r.spread = append(r.spread, float64(prop[len(prop)-1]-prop[0]))
		time.Sleep(100 * time.Millisecond)
	}
	return r, nil
}

func writeSecretFile(path string, tok secret.Secret) error {
	return os.WriteFile(path, []byte(tok.Reveal()+"\n"), 0o600)
}
