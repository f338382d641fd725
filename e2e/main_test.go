package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/testutil/pgtest"
	"go.uber.org/goleak"
)

// bins holds the paths of the binaries TestMain built; tests only read it.
type bins struct {
	sandbox, broker, proxy string
}

// built is set once by TestMain before any test runs and never changed.
var built bins

// pg is the PostgreSQL server of the managed-keys tests, started once by
// TestMain (pgtest: skipped without the binaries, except in CI).
var pg *pgtest.Server

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Said out loud rather than skipped test by test: -short leaves the
		// whole package out, `make test` runs it.
		fmt.Fprintln(os.Stderr, "e2e: skipped under -short (the end-to-end tests take about a minute; make test runs them)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "copilot-broker-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	start := time.Now()
	b, err := buildBinaries(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the binaries:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "e2e: built sandbox, broker and proxy (race=%v) in %s\n", raceEnabled, time.Since(start).Round(time.Millisecond))
	}
	built = b
	pg = pgtest.Start()
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { pg.Stop(); _ = os.RemoveAll(dir) }),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
		// The PostgreSQL server's waiter, stopped by the cleanup after the check.
		goleak.IgnoreAnyFunction("github.com/copilot-broker/copilot-broker/internal/testutil/pgtest.(*Server).waitExit"))
}

// buildBinaries compiles the three commands into dir in one go invocation.
// When this test binary runs under the race detector the commands are built
// with it too, so a data race in the real processes fails the test that saw
// it (see [proc]).
func buildBinaries(dir string) (bins, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return bins{}, err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/sandbox", "./cmd/broker", "./cmd/proxy")
	cmd := exec.Command("go", args...) // go test puts GOROOT/bin first on PATH
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return bins{}, fmt.Errorf("go %v: %w\n%s", args, err, out)
	}
	exe := func(name string) string {
		if runtime.GOOS == "windows" {
			name += ".exe"
		}
		return filepath.Join(dir, name)
	}
	return bins{sandbox: exe("sandbox"), broker: exe("broker"), proxy: exe("proxy")}, nil
}
