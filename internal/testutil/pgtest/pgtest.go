// Package pgtest starts a real PostgreSQL server for a test binary, from
// Debian's packaged binaries, in a temporary directory, and hands each test a
// fresh database of its own.
//
// Use it from TestMain:
//
//	var pg *pgtest.Server
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m, &pg)) }
//
// and in a test: url := pg.NewDatabase(t). Without the binaries, NewDatabase
// skips the test with a message saying how to install them, except when
// CI=true: then it fails, so CI never silently skips PostgreSQL.
//
// When the tests run as root (PostgreSQL refuses to), the server runs as the
// user "nobody", which owns the temporary directory. The server listens on a
// unix socket in that directory only: no TCP port to collide with.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"go.uber.org/goleak"
)

// InstallHint says how to get the binaries.
const InstallHint = "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (install them with `apt-get install postgresql`, or set PGTEST_BIN_DIR)"

// Server is a running PostgreSQL server, or the reason there is none.
type Server struct {
	unavailable string // why no server runs
	missing     bool   // because the binaries are not installed: tests skip (outside CI)
	dir         string // temporary directory: data/, the socket, the log
	cmd         *exec.Cmd
	exited      chan struct{}
	admin       *sql.DB
	next        atomic.Int64
}

// Start starts a server, or returns one that skips (fails, in CI) every
// test asking for a database. It never returns nil.
func Start() *Server {
	s, err := start()
	if err != nil {
		return &Server{unavailable: err.Error(), missing: errors.Is(err, errNoBinaries)}
	}
	return s
}

// errNoBinaries marks the missing-binaries case.
var errNoBinaries = errors.New(InstallHint)

func binDir() (string, error) {
	if d := os.Getenv("PGTEST_BIN_DIR"); d != "" {
		return d, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return "", errNoBinaries
	}
	// Newest major version first.
	sort.Slice(found, func(i, j int) bool { return version(found[i]) > version(found[j]) })
	return filepath.Dir(found[0]), nil
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// credential is who runs the server: nil (this process's user) unless
// that is root.
func credential() (*syscall.Credential, int, int, error) {
	if os.Geteuid() != 0 {
		return nil, -1, -1, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, 0, 0, fmt.Errorf("pgtest: running as root and no user 'nobody' to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, gid, nil
}

func start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, uid, gid, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, exited: make(chan struct{})}
	fail := func(err error) (*Server, error) {
		s.Stop()
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(fmt.Errorf("pgtest: %w", err))
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pgtest: initdb: %w\n%s", err, out))
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return fail(fmt.Errorf("pgtest: %w", err))
	}
	defer logf.Close()
	// Durability off: a test server's data lives for one test binary.
	s.cmd = run("postgres", "-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "fsync=off",
		"-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=300")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return fail(fmt.Errorf("pgtest: start postgres: %w", err))
	}
	go s.waitExit()
	admin, err := sql.Open("pgx", s.URL("postgres"))
	if err != nil {
		return fail(fmt.Errorf("pgtest: %w", err))
	}
	s.admin = admin
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := admin.PingContext(ctx)
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			return fail(fmt.Errorf("pgtest: postgres exited at start:\n%s", log))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("pgtest: postgres not ready after 60s: %w", err))
		}
	}
}

// waitExit reaps the server process. (e2e's TestMain names it to goleak:
// it outlives the leak check there.)
func (s *Server) waitExit() { _ = s.cmd.Wait(); close(s.exited) }

// URL is the connection URL of database db on the server.
func (s *Server) URL(db string) string {
	return "postgres://postgres@/" + url.PathEscape(db) + "?host=" + url.QueryEscape(s.dir) + "&sslmode=disable"
}

// Available reports whether a server runs.
func (s *Server) Available() bool { return s != nil && s.unavailable == "" }

// Skip skips (or, with CI=true, fails) t when no server runs.
func (s *Server) Skip(t testing.TB) {
	t.Helper()
	if s.Available() {
		return
	}
	why, missing := InstallHint, true
	if s != nil {
		why, missing = s.unavailable, s.missing
	}
	if !missing {
		t.Fatalf("PostgreSQL test server: %s", why)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("PostgreSQL tests cannot run in CI: %s", why)
	}
	t.Skipf("PostgreSQL tests skipped: %s", why)
}

// NewDatabase creates an empty database for t, dropped when t ends, and
// returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.Skip(t)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.next.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database: %v", err)
		}
	})
	return s.URL(name)
}

// Stop stops the server and removes its directory.
func (s *Server) Stop() {
	if s == nil || s.dir == "" {
		return
	}
	if s.admin != nil {
		s.admin.Close()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		// SIGQUIT: immediate shutdown; the data is thrown away anyway.
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	_ = os.RemoveAll(s.dir)
}

// Log returns the server's log so far (for a failing test's message).
func (s *Server) Log() string {
	if !s.Available() {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return strings.TrimSpace(string(b))
}

// RunMain is a TestMain body for a package whose tests use PostgreSQL and
// check for leaked goroutines: it starts the server into *srv, runs the
// tests, stops the server, then (when the tests passed) fails the run on a
// leaked goroutine, as goleak.VerifyTestMain does. It returns the exit code.
func RunMain(m *testing.M, srv **Server, opts ...goleak.Option) int {
	*srv = Start()
	code := m.Run()
	(*srv).Stop()
	if code == 0 {
		// database/sql's opener goroutine lives until its DB is closed; a
		// test's store closes it, but the check may run a moment before.
		opts = append(opts, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	return code
}
