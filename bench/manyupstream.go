package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/copilot-broker/copilot-broker/bench/internal/proc"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// Section 6's upstream runs in a child process (`bench __upstream`): its
// TLS listener must complete the proxies' handshakes while this process
// drives up to 10,000 clients, and the two sharing one runtime starved the
// handshakes (issue 28: TLS handshake timeouts at 10,000 streams). The
// child's stamps are wall-clock times, so a chunk's transit is still the
// sandbox's stamp to this process's arrival of the chunk, on one machine's
// clock.

// stampsPath is where the tap answers the stamps of named streams.
const stampsPath = "/_bench/stamps"

// serveStamps answers stampsPath. POST: the body names stream ids, one a
// line; the answer maps those whose stamps the tap has to them as Unix
// nanoseconds, and forgets them. GET: 200 once the TLS listener is up (the
// child's readiness).
func (u *upstream) serveStamps(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		u.mu.Lock()
		ready := u.tlsLn != nil
		u.mu.Unlock()
		if !ready {
			http.Error(w, "TLS listener not up yet", http.StatusServiceUnavailable)
		}
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := map[string][]int64{}
	for id := range strings.SplitSeq(string(body), "\n") {
		if id == "" {
			continue
		}
		if st := u.takeStream(id); st != nil {
			ns := make([]int64, len(st))
			for i, t := range st {
				ns[i] = t.UnixNano()
			}
			out[id] = ns
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// serveUpstream is `bench __upstream`: the sandbox behind the tap on
// BENCH_UPSTREAM_ADDR and, over TLS with a certificate of a new CA written
// into BENCH_PKI_DIR, on BENCH_UPSTREAM_TLS_ADDR, accepting the GitHub
// token GITHUB_TOKEN, until ctx ends.
func serveUpstream(ctx context.Context, getenv func(string) string) error {
	up, err := startUpstreamOn(sandbox.Config{RequestLogSize: -1, TokenLifetime: time.Hour, RefreshIn: 50 * time.Minute,
		GitHubTokens: []secret.Secret{secret.New(getenv("GITHUB_TOKEN"))}}, getenv("BENCH_UPSTREAM_ADDR"))
	if err != nil {
		return err
	}
	defer up.close()
	if err := up.serveTLSOn(getenv("BENCH_PKI_DIR"), getenv("BENCH_UPSTREAM_TLS_ADDR")); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// remoteUpstream is a `bench __upstream` child seen from this process.
type remoteUpstream struct {
	*proc.Process
	URL    string // plain: the exchange, direct's streams, the stamps
	TLSURL string // the proxies' upstream
	CAPath string // the CA of TLSURL's certificate
	gh     secret.Secret
}

func (r *remoteUpstream) exchangeURL() string        { return r.URL }
func (r *remoteUpstream) githubToken() secret.Secret { return r.gh }

// startRemoteUpstream starts a `bench __upstream` child and waits until
// both its listeners are up.
func (b *bench) startRemoteUpstream(name string) (*remoteUpstream, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir := b.dir(name)
	addrs, err := freeAddrs(2)
	if err != nil {
		return nil, err
	}
	r := &remoteUpstream{URL: "http://" + addrs[0], TLSURL: "https://" + addrs[1], CAPath: filepath.Join(dir, "bench-ca.pem"),
		gh: secret.New("gho_" + randomKey())}
	p, err := proc.Start(proc.Spec{Name: name, Path: self, Args: []string{"__upstream"},
		Env: []string{"BENCH_UPSTREAM_ADDR=" + addrs[0], "BENCH_UPSTREAM_TLS_ADDR=" + addrs[1], "BENCH_PKI_DIR=" + dir,
			"GITHUB_TOKEN=" + r.gh.Reveal()},
		LogPath: filepath.Join(dir, "upstream.log")})
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	if err := proc.WaitHTTP(b.ctx, p, r.URL+stampsPath, 20*time.Second); err != nil {
		b.stop(p)
		return nil, fmt.Errorf("%w (log: %s)", err, tail(filepath.Join(dir, "upstream.log")))
	}
	r.Process = p
	return r, nil
}

// copilotToken exchanges the child's GitHub token, as direct needs one.
func (r *remoteUpstream) copilotToken(ctx context.Context) (string, error) {
	return exchangeToken(ctx, r.URL, r.gh)
}

// stamps fetches and forgets the flush stamps of the streams ids, asking
// again for those the tap has not recorded yet (a client may read a
// stream's last event before the tap notes its flush) until timeout.
func (r *remoteUpstream) stamps(ctx context.Context, ids []string, timeout time.Duration) (map[string][]time.Time, error) {
	out := make(map[string][]time.Time, len(ids))
	deadline := time.Now().Add(timeout)
	for {
		got, err := r.fetchStamps(ctx, ids)
		if err != nil {
			return out, err
		}
		var missing []string
		for _, id := range ids {
			ns, ok := got[id]
			if !ok {
				missing = append(missing, id)
				continue
			}
			ts := make([]time.Time, len(ns))
			for i, n := range ns {
				ts[i] = time.Unix(0, n)
			}
			out[id] = ts
		}
		if ids = missing; len(ids) == 0 || time.Now().After(deadline) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling with a deadline
		}
	}
}

func (r *remoteUpstream) fetchStamps(ctx context.Context, ids []string) (map[string][]int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+stampsPath, bytes.NewReader([]byte(strings.Join(ids, "\n"))))
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("stamps: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("stamps: status %d", resp.StatusCode)
	}
	var got map[string][]int64
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return nil, fmt.Errorf("stamps: %w", err)
	}
	return got, nil
}
