package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is one running binary. Its stdout and stderr go to a log file that the
// test prints when it fails; t.Cleanup kills whatever is still running.
type proc struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
	err  error         // the Wait result, set before done is closed
}

// startProc starts bin as a separate process with exactly the environment
// env (plus PATH and a private HOME): nothing of the developer's environment,
// such as a real GITHUB_TOKEN, leaks into it.
func startProc(t *testing.T, name, bin string, args, env []string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{
		name:    name,
		bin:     bin,
		args:    args,
		env:     append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "TMPDIR=" + os.TempDir()}, env...),
		logPath: filepath.Join(dir, name+".log"),
	}
	if err := p.launch(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.kill()
		logs, _ := os.ReadFile(p.logPath)
		if bytes.Contains(logs, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s: the race detector reported a data race", name)
		}
		if t.Failed() {
			t.Logf("---- %s log (%s %s) ----\n%s", name, filepath.Base(bin), strings.Join(args, " "), tail(logs, 200))
		}
	})
	return p
}

// launch starts (or restarts) the process, appending to its log.
func (p *proc) launch() error {
	f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== %s start %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return err
	}
	// The child holds its own copy of the descriptor.
	_ = f.Close()
	p.cmd, p.done, p.err = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		p.err = cmd.Wait()
		close(done)
	}()
	return nil
}

// restart starts the same command again after the previous run has ended.
func (p *proc) restart(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	default:
		t.Fatalf("restart %s: still running", p.name)
	}
	if err := p.launch(); err != nil {
		t.Fatalf("restarting %s: %v", p.name, err)
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits up to d for the process to end and returns its Wait error.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %s", p.name, d)
		return nil
	}
}

// kill ends the process at once (SIGKILL) and waits for it.
func (p *proc) kill() {
	if p.cmd == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// logs returns what the process has written so far.
func (p *proc) logs() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines]\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "")
}

// anyPort is the listen address every binary is started with: the kernel
// picks a free port, and the binary prints the address it bound
// ([proc.boundAddrs]). No port is chosen by the test and then released,
// which another process could take in between.
const anyPort = "127.0.0.1:0"

// boundAddrs waits until the process has printed a line matching re (whose
// groups are the bound addresses, e.g. "broker listening: grpc=(\S+) ...")
// and returns the groups. The latest start's line counts: after a restart,
// the log holds the earlier runs' lines before it.
func (p *proc) boundAddrs(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	var groups []string
	waitFor(t, startTimeout, p.name+" to print its listen addresses", func() bool {
		if p.exited() {
			t.Fatalf("%s exited before printing its listen addresses\n---- %s log ----\n%s", p.name, p.name, tail([]byte(p.logs()), 60))
		}
		logs := p.logs()
		if i := strings.LastIndex(logs, "==== "+p.name+" start "); i >= 0 {
			logs = logs[i:]
		}
		if m := re.FindStringSubmatch(logs); m != nil {
			groups = m[1:]
			return true
		}
		return false
	})
	return groups
}

// pinArgs replaces, in the process's arguments, each value of flag with
// the address it bound, so a restart listens where clients already connect
// (a restarted broker keeps its ports, as behind a Service).
func (p *proc) pinArgs(bound map[string]string) {
	for i := 0; i+1 < len(p.args); i++ {
		if addr, ok := bound[p.args[i]]; ok {
			p.args[i+1] = addr
		}
	}
}

// waitHTTP polls url until it answers 200, the process exits or timeout
// passes.
func waitHTTP(t *testing.T, p *proc, url string, timeout time.Duration) {
	t.Helper()
	if err := pollHTTP(p, url, timeout); err != nil {
		t.Fatalf("%s not ready: %v\n---- %s log ----\n%s", p.name, err, p.name, tail([]byte(p.logs()), 60))
	}
}

func pollHTTP(p *proc, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("GET %s: %s", url, resp.Status)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited (%v); last probe: %s", p.err, last)
		case <-ctx.Done():
			return errors.New("timed out; last probe: " + last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
