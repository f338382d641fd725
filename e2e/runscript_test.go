package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/testutil"
)

// TestRunScript runs scripts/run.sh (make run) as a new user would and checks
// its promises: it prints a base URL, an API key and curl commands that work;
// Ctrl-C or SIGTERM stops every process it started; a process failing to
// start, or a port already taken, ends it with a clear message and nothing
// left running.
func TestRunScript(t *testing.T) {
	t.Parallel()

	t.Run("interrupt", func(t *testing.T) {
		rs := startRunScript(t, nil)
		rs.waitBanner(t)
		baseURL, key := rs.match(t, `OpenAI base URL\s+(\S+)`), rs.match(t, `API key\s+(\S+)`)
		if want := "http://127.0.0.1:" + rs.ports["RUN_PROXY_PORT"] + "/v1"; baseURL != want {
			t.Errorf("printed base URL %q; want %q", baseURL, want)
		}
		if got, _ := os.ReadFile(filepath.Join(rs.dir, "api-key")); strings.TrimSpace(string(got)) != key {
			t.Errorf("printed API key differs from %s/api-key", rs.dir)
		}
		// The printed key is a managed key, and the commands to manage more are printed.
		rs.match(t, `API key\s+\S+\s+\(also in \S+; managed key "(local-[0-9TZ]+)"\)`)
		list := rs.match(t, `(\S+/broker keys list --broker-addr \S+ --admin-key-file \S+)`)
		if out, err := exec.Command("bash", "-c", list).CombinedOutput(); err != nil || !strings.Contains(string(out), "local-") {
			t.Errorf("the printed %q = %v:\n%s", list, err, out)
		}
		for _, f := range []string{"api-key", "admin-key", "broker-key", "broker-keys", "github-token"} {
			if fi, err := os.Stat(filepath.Join(rs.dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, mode %v; want mode 0600", f, err, fi.Mode().Perm())
			}
		}
		// The printed console signs in with the admin key it names.
		consoleURL := rs.match(t, `team console\s+(\S+)`)
		adminKey, _ := os.ReadFile(filepath.Join(rs.dir, "admin-key"))
		resp, err := http.Post(consoleURL+"session", "application/json", strings.NewReader(`{"key":"`+strings.TrimSpace(string(adminKey))+`"}`))
		if err != nil {
			t.Errorf("signing in to the printed console: %v", err)
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"signed_in":true`)) {
				t.Errorf("signing in to the printed console %s with the admin key = %d %s; want a session", consoleURL, resp.StatusCode, body)
			}
		}
		// The OpenAI SDK with what the script printed.
		px := &proxyProc{url: strings.TrimSuffix(baseURL, "/v1"), apiKey: key}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := streamChat(ctx, openAIClient(t, px), "Say hello", nil); err != nil {
			t.Errorf("streamed chat completion with the printed base URL and key: %v", err)
		}
		// The printed curl commands, pasted into a shell.
		if _, err := exec.LookPath("curl"); err != nil {
			t.Log("curl is not installed: the printed curl commands were not run")
		} else {
			for _, c := range rs.curls(t) {
				out, err := exec.CommandContext(ctx, "bash", "-c", c).CombinedOutput()
				if err != nil || !(bytes.Contains(out, []byte("data: [DONE]")) || bytes.Contains(out, []byte("event: message_stop"))) {
					t.Errorf("printed command failed (%v) or its stream did not end properly:\n%s\n---\n%s", err, c, out)
				}
			}
		}
		rs.stop(t, syscall.SIGINT, 130)
	})

	t.Run("terminate", func(t *testing.T) {
		rs := startRunScript(t, nil)
		rs.waitBanner(t)
		rs.stop(t, syscall.SIGTERM, 143)
	})

	t.Run("start-failure", func(t *testing.T) {
		// The sandbox and the broker start; the proxy rejects its
		// configuration and exits.
		rs := startRunScript(t, []string{"PROXY_MAX_BODY_BYTES=not-a-number"})
		err := rs.wait(t, 5*time.Minute)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(rs.stderr(), "proxy exited during start") {
			t.Errorf("run.sh with a bad proxy setting: %v; want exit status 1 and a message naming the proxy\nstderr:\n%s", err, rs.stderr())
		}
		rs.requireStopped(t, "sandbox", "broker", "proxy")
	})

	t.Run("port-taken", func(t *testing.T) {
		rs := newRunScript(t, nil)
		ln, err := net.Listen("tcp", "127.0.0.1:"+rs.ports["RUN_PROXY_PORT"])
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		rs.start(t)
		err = rs.wait(t, time.Minute)
		msg := rs.stderr()
		if err == nil || !strings.Contains(msg, "port "+rs.ports["RUN_PROXY_PORT"]) || !strings.Contains(msg, "RUN_PROXY_PORT") {
			t.Errorf("run.sh with the proxy port taken: %v; want a failure naming the port and RUN_PROXY_PORT\nstderr:\n%s", err, msg)
		}
		if m, _ := filepath.Glob(filepath.Join(rs.dir, "*.pid")); len(m) != 0 {
			t.Errorf("run.sh started processes (%v) although a port was taken; want none", m)
		}
	})
}

// runScript is one run of scripts/run.sh on free ports, in a directory of its
// own, with the sandbox as upstream.
type runScript struct {
	dir   string
	ports map[string]string
	env   []string
	cmd   *exec.Cmd
	done  chan struct{}
	err   error
	out   testutil.SyncBuffer
	errs  testutil.SyncBuffer
}

func newRunScript(t *testing.T, extraEnv []string) *runScript {
	t.Helper()
	rs := &runScript{dir: t.TempDir(), ports: map[string]string{}}
	// The developer's environment minus anything that would point the
	// script at a real GitHub account or change the binaries' settings.
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "GITHUB_TOKEN" || strings.HasPrefix(name, "BROKER_") || strings.HasPrefix(name, "PROXY_") || strings.HasPrefix(name, "RUN_") {
			continue
		}
		rs.env = append(rs.env, kv)
	}
	rs.env = append(rs.env, "RUN_DIR="+rs.dir, "RUN_UPSTREAM=sandbox", "XDG_CONFIG_HOME="+t.TempDir())
	names := []string{"RUN_SANDBOX_PORT", "RUN_GRPC_PORT", "RUN_HTTP_PORT", "RUN_ADMIN_PORT", "RUN_PROXY_PORT", "RUN_PROXY_ADMIN_PORT"}
	for i, port := range freePorts(t, len(names)) {
		rs.ports[names[i]] = port
		rs.env = append(rs.env, names[i]+"="+port)
	}
	rs.env = append(rs.env, extraEnv...)
	return rs
}

func startRunScript(t *testing.T, extraEnv []string) *runScript {
	t.Helper()
	rs := newRunScript(t, extraEnv)
	rs.start(t)
	return rs
}

func (rs *runScript) start(t *testing.T) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "scripts", "run.sh"))
	cmd.Dir = root
	cmd.Env = rs.env
	cmd.Stdout, cmd.Stderr = &rs.out, &rs.errs
	cmd.SysProcAttr = scriptProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting run.sh: %v", err)
	}
	rs.cmd, rs.done = cmd, make(chan struct{})
	go func() {
		rs.err = cmd.Wait()
		close(rs.done)
	}()
	t.Cleanup(func() {
		select {
		case <-rs.done:
		default:
			// Let its trap stop what it started, then make sure.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-rs.done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				<-rs.done
			}
		}
		if t.Failed() {
			t.Logf("---- run.sh stdout ----\n%s\n---- run.sh stderr ----\n%s", rs.out.String(), rs.stderr())
			for _, name := range []string{"sandbox", "broker", "proxy"} {
				if b, err := os.ReadFile(filepath.Join(rs.dir, name+".log")); err == nil {
					t.Logf("---- %s.log ----\n%s", name, tail(b, 60))
				}
			}
		}
	})
}

// waitBanner waits for the script to say it is ready; building the binaries
// on a cold cache takes a while.
func (rs *runScript) waitBanner(t *testing.T) {
	t.Helper()
	deadline := time.After(5 * time.Minute)
	for !strings.Contains(rs.out.String(), "Press Ctrl-C to stop.") {
		select {
		case <-rs.done:
			t.Fatalf("run.sh exited before it was ready: %v", rs.err)
		case <-deadline:
			t.Fatal("run.sh not ready after 5 minutes")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// match returns the first group of re in the script's output.
func (rs *runScript) match(t *testing.T, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(rs.out.String())
	if m == nil {
		t.Fatalf("run.sh output has no %q:\n%s", re, rs.out.String())
	}
	return m[1]
}

// curls returns the printed curl commands, each with its continuation lines.
func (rs *runScript) curls(t *testing.T) []string {
	t.Helper()
	var cmds []string
	var cur []string
	for _, line := range strings.Split(rs.out.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "curl "):
			cur = []string{line}
		case cur != nil:
			cur = append(cur, line)
		}
		if cur != nil && !strings.HasSuffix(line, "\\") {
			cmds = append(cmds, strings.Join(cur, "\n"))
			cur = nil
		}
	}
	if len(cmds) != 2 {
		t.Fatalf("run.sh printed %d curl commands; want 2 (OpenAI and Anthropic):\n%s", len(cmds), rs.out.String())
	}
	return cmds
}

// stop sends sig to the script and checks it exits with code and leaves none
// of its processes running.
func (rs *runScript) stop(t *testing.T, sig syscall.Signal, code int) {
	t.Helper()
	if err := rs.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	err := rs.wait(t, time.Minute)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != code {
		t.Errorf("run.sh after %v: %v; want exit status %d", sig, err, code)
	}
	if !strings.Contains(rs.stderr(), "run: stopped") {
		t.Errorf("run.sh after %v did not report stopping its processes:\n%s", sig, rs.stderr())
	}
	rs.requireStopped(t, "sandbox", "broker", "proxy")
}

// requireStopped checks that the processes named by the script's pid files
// no longer exist.
func (rs *runScript) requireStopped(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(rs.dir, name+".pid"))
		if err != nil {
			t.Errorf("%s.pid: %v; want the script to have started %s", name, err, name)
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s.pid: %v", name, err)
		}
		// The script waited for its children, so they are gone, not zombies.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after run.sh ended (kill -0: %v)", name, pid, err)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (rs *runScript) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-rs.done:
		return rs.err
	case <-time.After(d):
		t.Fatalf("run.sh did not exit within %s", d)
		return nil
	}
}

func (rs *runScript) stderr() string { return rs.errs.String() }

// freePort returns a loopback port that was free a moment ago. Only the
// run.sh tests use it: the script takes fixed ports (RUN_*_PORT), prints
// them in its banner and refuses to start on a port in use, naming the
// variable, so a port taken in between fails loudly rather than silently.
// The binaries themselves are started on port 0 (anyPort).
// freePorts returns n distinct free loopback ports. Every listener is held
// until all are chosen: closing each before binding the next let the
// kernel hand the same port out twice ("RUN_PROXY_PORT and RUN_HTTP_PORT
// are both 44813").
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	ports := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ports = append(ports, port)
	}
	return ports
}
