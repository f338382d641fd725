package regfile

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRefusesWhatIsNotARegularFile: a FIFO without a writer, a socket and a
// directory are refused at once (issue 22: a FIFO at the alias or token file
// path blocked the poller forever).
func TestRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("reg", link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, sock, dir} {
		done := make(chan error, 1)
		go func() {
			_, err := Read(path, 10)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("Read(%s) = nil error; want a refusal", path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Read(%s) blocked", path)
		}
	}
	for _, path := range []string{reg, link} {
		if b, err := Read(path, 10); err != nil || string(b) != "ok" {
			t.Errorf("Read(%s) = %q, %v; want ok", path, b, err)
		}
	}
	if _, err := Read(reg, 1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Read over the bound = %v; want ErrTooLarge", err)
	}
	_, err = Open(fifo)
	if !errors.Is(err, ErrNotRegular) {
		t.Errorf("Open(fifo) = %v; want ErrNotRegular", err)
	}
}
