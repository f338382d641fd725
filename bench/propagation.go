package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/load"
	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/forward/brokerclient"
	"github.com/copilot-broker/copilot-broker/internal/forward/keybudget"
	"github.com/copilot-broker/copilot-broker/internal/identity"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
	"google.golang.org/grpc"
)

// Section 11: what the broker pushes to every proxy besides tokens and keys
// (section 9), with the intervals the e2e tests use.
const (
	propFollowers    = 20
	propChanges      = 20                     // per kind (the team's: half additions, half removals)
	propProfilePoll  = 100 * time.Millisecond // e2e/drift_test.go's --upstream-profile-poll
	propAccountsPoll = 300 * time.Millisecond // e2e/team_test.go's --token-file-poll (teamPoll)
	propTimeout      = 10 * time.Second       // one change reaching every follower, else the section fails

	propBudgetKey, propBudgetAccount = "bench-budget", "bench-budget-account" // whose budgets change
)

// propKind is one kind of change and what its propagation measured.
type propKind struct {
	name, what string        // goal name, table row
	goal       time.Duration // p99 target, from the e2e test that used to assert it
	why        string        // how the goal was made, when not plain
	lat        []time.Duration
}

// target is the goal as the report writes it.
func (k *propKind) target() string {
	t := "< " + strconv.FormatFloat(k.goal.Seconds(), 'f', -1, 64) + " s"
	if k.why != "" {
		t += " (" + k.why + ")"
	}
	return t
}

// propFollower is one proxy's followers of the broker, the proxy's own
// code: the budget gate (WatchBudgets), the account set with its token
// clients (WatchAccounts, one WatchToken per account) and the upstream
// profile those clients take from the tokens.
type propFollower struct {
	conn    *grpc.ClientConn
	gate    *keybudget.Gate
	set     *brokerclient.Set
	profile *identity.Holder
}

// propagation is section 11: one broker process (SQLite store, an accounts
// directory, a profile file) and 20 followers in this process, each built
// from the proxy's packages as `proxy serve` builds them, and for each
// kind of change (a key's budget, an account's budget, the upstream
// profile, an account added to or removed from the team) 20 changes: the
// time from the change's answer (the RPC's, or the file's rename) until
// every follower holds it.
func (b *bench) propagation() {
	s := &section{Title: "11. Control-plane propagation: budgets, upstream profile, team accounts"}
	b.rep.Sections = append(b.rep.Sections, s)
	s.Intro = fmt.Sprintf("One broker process (SQLite store under `--state-dir`, `--upstream-profile` read every %s, "+
		"`--accounts-dir` read every %s: the intervals of e2e/drift_test.go and e2e/team_test.go) and %d followers in the "+
		"bench process, each built from the proxy's own packages over its own gRPC connection with a proxy's broker key: "+
		"the budget gate (`keybudget.Gate`, WatchBudgets) and the account set (`brokerclient.Set` with a `*` pool: "+
		"WatchAccounts, one WatchToken client per account, the upstream profile they carry into an `identity.Holder`). "+
		"%d changes of each kind; each is timed from the change's answer (SetBudget's, or the profile or account file's "+
		"rename, or its removal, made at a random point of the broker's read interval) until every follower holds it, polled every 1 ms: the new limit in the gate; the new "+
		"profile revision in the holder; the added account in the set with a usable token, or the removed one gone. "+
		"Percentiles are over all changes × followers; the goal is the p99's, from the e2e test that used to assert it.",
		propProfilePoll, propAccountsPoll, propFollowers, propChanges)
	s.Header = []string{"change", "samples", "p50", "p99", "max", "goal (p99)"}
	if err := b.need("broker"); err != nil {
		s.Err = err
		return
	}
	meter := b.meter()
	kinds, err := b.propagationRun()
	for _, k := range kinds {
		if len(k.lat) == 0 {
			continue
		}
		slices.Sort(k.lat)
		s.row(k.what, fmt.Sprint(len(k.lat)), ms(load.Percentile(k.lat, 50)), ms(load.Percentile(k.lat, 99)),
			ms(k.lat[len(k.lat)-1]), k.target())
	}
	if err != nil {
		s.Err = err
		return
	}
	b.prop = kinds
	s.note("A budget set is recomputed and pushed within SetBudget, before its answer; a profile or an account file "+
		"waits for the broker's next read of it (up to %s and %s), and an added account for its token exchange with the sandbox.",
		propProfilePoll, propAccountsPoll)
	s.note("other processes during this section: %s", b.meter().othersSince(meter))
}

// propGoals are the e2e tests' propagation goals, held here instead.
func (b *bench) propGoals() {
	r := b.rep
	if b.prop == nil {
		r.unmeasured(fmt.Sprintf("Budget, profile and team changes reaching %d proxies, p99", propFollowers),
			"< 1 s (budgets), < 2 s (profile), < the poll + 1 s (team)", "not measured")
		return
	}
	for _, k := range b.prop {
		p99 := load.Percentile(k.lat, 99)
		r.goal(fmt.Sprintf("%s reaching %d proxies, p99", k.name, propFollowers), k.target(), ms(p99), p99 < k.goal)
	}
}

// propagationRun starts the broker and the followers and makes the
// changes; it returns the kinds measured so far with the first error.
func (b *bench) propagationRun() ([]*propKind, error) {
	kinds := []*propKind{
		{name: "Key budget change", what: "a key's monthly premium budget (SetBudget)", goal: time.Second},
		{name: "Account budget change", what: "an account's monthly premium budget (SetBudget)", goal: time.Second},
		{name: "Upstream profile edit", what: "the upstream profile file edited", goal: 2 * time.Second},
		{name: "Team account added", what: "an account file added (watched, token usable)", goal: propAccountsPoll + time.Second, why: "the poll + 1 s"},
		{name: "Team account removed", what: "an account file removed (dropped)", goal: propAccountsPoll + 2*time.Second, why: "the poll + 2 s"},
	}
	keyBudget, acctBudget, profile, added, removed := kinds[0], kinds[1], kinds[2], kinds[3], kinds[4]
	up, err := startUpstream(sandbox.Config{RequestLogSize: -1, TokenLifetime: time.Hour, RefreshIn: 50 * time.Minute})
	if err != nil {
		return kinds, err
	}
	defer up.close()
	dir := b.dir("propagation")
	acctDir, profileFile := filepath.Join(dir, "accounts"), filepath.Join(dir, "upstream-profile.yaml")
	if err := os.MkdirAll(acctDir, 0o700); err != nil {
		return kinds, err
	}
	if err := writeProfile(profileFile, 0); err != nil {
		return kinds, err
	}
	admin, proxyKey := randomKey(), randomKey()
	keysFile := filepath.Join(dir, "broker.keys")
	if err := os.WriteFile(keysFile, []byte("bench-proxy:"+proxyKey+"\nbench-admin:"+admin+":*:admin\n"), 0o600); err != nil {
		return kinds, err
	}
	br, err := b.startBrokerArgs(up, "propagation-broker", "--keys-file", keysFile, "--state-dir", filepath.Join(dir, "state"),
		"--accounts-dir", acctDir, "--token-file-poll", propAccountsPoll.String(),
		"--upstream-profile", profileFile, "--upstream-profile-poll", propProfilePoll.String())
	if err != nil {
		return kinds, err
	}
	defer b.stop(br.Process)
	adminConn, err := brokerclient.Dial(br.GRPCAddr, secret.New(admin), nil)
	if err != nil {
		return kinds, err
	}
	defer adminConn.Close()
	usage := brokerv1.NewUsageServiceClient(adminConn)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	if _, err := brokerv1.NewKeyServiceClient(adminConn).CreateKey(ctx, &brokerv1.CreateKeyRequest{Name: propBudgetKey, Secret: benchSecret(0)}); err != nil {
		return kinds, fmt.Errorf("CreateKey: %w", err)
	}
	for _, req := range []*brokerv1.SetBudgetRequest{{Key: propBudgetKey, MonthlyPremium: 1000}, {Account: propBudgetAccount, MonthlyPremium: 1000}} {
		if _, err := usage.SetBudget(ctx, req); err != nil {
			return kinds, fmt.Errorf("SetBudget: %w", err)
		}
	}

	fs, err := startFollowers(ctx, br.GRPCAddr, proxyKey)
	if err != nil {
		return kinds, err
	}
	defer fs.stop()
	ready := func(i int) bool {
		// The profile comes with the tokens: a client of the set has one.
		f := fs.f[i]
		return f.gate.KeyBudget(propBudgetKey) != nil && f.gate.AccountBudget(propBudgetAccount) != nil &&
			f.profile.Get().Profile.PluginVersion == pluginVersion(0)
	}
	if _, err := untilAll(ctx, propFollowers, time.Now(), time.Minute, ready); err != nil {
		return kinds, fmt.Errorf("followers not started: %w", err)
	}

	if err := propBudgets(ctx, fs, keyBudget, acctBudget, usage); err != nil {
		return kinds, err
	}
	if err := propProfiles(ctx, fs, profile, profileFile); err != nil {
		return kinds, err
	}
	return kinds, propTeam(ctx, fs, added, removed, up, dir, acctDir)
}

// measure times one change from now until every follower holds it (seen),
// and adds the times to the kind's.
func (k *propKind) measure(ctx context.Context, fs *followers, seen func(*propFollower) bool) error {
	lat, err := untilAll(ctx, len(fs.f), time.Now(), propTimeout, func(i int) bool { return seen(fs.f[i]) })
	k.lat = append(k.lat, lat...)
	if err != nil {
		return fmt.Errorf("%s: %w", k.what, err)
	}
	return nil
}

// propBudgets raises and lowers, in turn, the budget of a key and of an
// account, each change timed until every gate holds it.
func propBudgets(ctx context.Context, fs *followers, keyBudget, acctBudget *propKind, usage brokerv1.UsageServiceClient) error {
	for i := range propChanges {
		limit := 2000 + float64(i)
		if i%2 == 1 {
			limit = 500 + float64(i)
		}
		for _, c := range []struct {
			kind *propKind
			req  *brokerv1.SetBudgetRequest
			held func(*propFollower) *brokerv1.BudgetState
		}{
			{keyBudget, &brokerv1.SetBudgetRequest{Key: propBudgetKey, MonthlyPremium: limit},
				func(f *propFollower) *brokerv1.BudgetState { return f.gate.KeyBudget(propBudgetKey) }},
			{acctBudget, &brokerv1.SetBudgetRequest{Account: propBudgetAccount, MonthlyPremium: limit},
				func(f *propFollower) *brokerv1.BudgetState { return f.gate.AccountBudget(propBudgetAccount) }},
		} {
			if _, err := usage.SetBudget(ctx, c.req); err != nil {
				return fmt.Errorf("SetBudget: %w", err)
			}
			if err := c.kind.measure(ctx, fs, func(f *propFollower) bool { return c.held(f).GetMonthlyPremium() == limit }); err != nil {
				return fmt.Errorf("change %d: %w", i, err)
			}
		}
	}
	return nil
}

// propProfiles edits the profile file, a new plugin version each time.
func propProfiles(ctx context.Context, fs *followers, k *propKind, file string) error {
	for i := 1; i <= propChanges; i++ {
		notInStep(propProfilePoll)
		if err := writeProfile(file, i); err != nil {
			return err
		}
		want := pluginVersion(i)
		if err := k.measure(ctx, fs, func(f *propFollower) bool { return f.profile.Get().Profile.PluginVersion == want }); err != nil {
			return fmt.Errorf("edit %d: %w", i, err)
		}
	}
	return nil
}

// propTeam adds an account to the team (a new sandbox account's file in
// acctDir), then removes it, propChanges/2 times.
func propTeam(ctx context.Context, fs *followers, added, removed *propKind, up *upstream, dir, acctDir string) error {
	for i := range propChanges / 2 {
		name := fmt.Sprintf("join%02d", i)
		tok, err := up.AddAccount(sandbox.AccountConfig{Name: name})
		if err != nil {
			return err
		}
		tmp := filepath.Join(dir, name+".tmp") // outside the directory the broker reads
		if err := writeSecretFile(tmp, tok); err != nil {
			return err
		}
		notInStep(propAccountsPoll)
		if err := os.Rename(tmp, filepath.Join(acctDir, name)); err != nil {
			return err
		}
		if err := added.measure(ctx, fs, func(f *propFollower) bool {
			_, err := f.set.Source(name).Token()
			return err == nil && slices.Contains(f.set.Names(), name)
		}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		notInStep(propAccountsPoll)
		if err := os.Remove(filepath.Join(acctDir, name)); err != nil {
			return err
		}
		if err := removed.measure(ctx, fs, func(f *propFollower) bool { return !slices.Contains(f.set.Names(), name) }); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// followers are the section's proxies' followers, running until stop.
type followers struct {
	f      []*propFollower
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startFollowers starts propFollowers followers of the broker at addr,
// each on its own connection with the proxy's broker key, configured as
// `proxy serve` configures them (internal/forward/server).
func startFollowers(ctx context.Context, addr, key string) (*followers, error) {
	ctx, cancel := context.WithCancel(ctx)
	fs := &followers{cancel: cancel}
	for i := range propFollowers {
		conn, err := brokerclient.Dial(addr, secret.New(key), nil)
		if err != nil {
			fs.stop()
			return nil, err
		}
		f := &propFollower{conn: conn, profile: identity.NewHolder(identity.DefaultProfile(), "")}
		fs.f = append(fs.f, f)
		f.gate = keybudget.New(keybudget.Config{Client: brokerv1.NewUsageServiceClient(conn), ProxyID: fmt.Sprintf("bench-follower-%02d", i)})
		f.set, err = brokerclient.NewSet(brokerclient.SetConfig{
			Client: brokerclient.Config{Broker: brokerv1.NewTokenBrokerServiceClient(conn), Profile: f.profile},
			All:    true,
		})
		if err != nil {
			fs.stop()
			return nil, err
		}
		fs.wg.Go(func() { f.gate.Run(ctx) })
		fs.wg.Go(func() { _ = f.set.Run(ctx) })
	}
	return fs, nil
}

func (fs *followers) stop() {
	fs.cancel()
	fs.wg.Wait()
	for _, f := range fs.f {
		_ = f.conn.Close()
	}
}

// notInStep waits a random part of poll before a file change: a change
// made as soon as the last one was seen, just after one of the broker's
// reads, would always wait for the whole interval.
func notInStep(poll time.Duration) { time.Sleep(rand.N(poll)) }

// pluginVersion is the editor plugin version of the i-th profile.
func pluginVersion(i int) string { return fmt.Sprintf("copilot-chat/9.%d.0", i) }

// writeProfile replaces the profile file with the i-th profile (a rename,
// as an operator's editor does).
func writeProfile(path string, i int) error {
	tmp := path + ".tmp"
	content := fmt.Sprintf("editor_version: vscode/1.141.0\neditor_plugin_version: %s\nuser_agent: GitHubCopilotChat/9.%d.0\n", pluginVersion(i), i)
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// untilAll polls seen for each of n followers from t0, every millisecond,
// until every one has seen the change, and returns the time from t0 at
// which each saw it (in that order); an error past timeout, with the times
// of those that did.
func untilAll(ctx context.Context, n int, t0 time.Time, timeout time.Duration, seen func(i int) bool) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	done := make([]bool, n)
	for deadline := t0.Add(timeout); ; time.Sleep(time.Millisecond) { // the poll's resolution
		for i := range done {
			if !done[i] && seen(i) {
				done[i] = true
				lat = append(lat, time.Since(t0))
			}
		}
		if len(lat) == n {
			return lat, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return lat, fmt.Errorf("%d of %d followers had not seen it after %s", n-len(lat), n, timeout)
		}
	}
}
