package proc

import (
	"os"
	"testing"
	"time"
)

func TestParseCPU(t *testing.T) {
	// Fields after ")" of a real /proc/PID/stat line: utime 250, stime 50.
	f := []string{"S", "1", "1", "1", "0", "-1", "4194560", "100", "0", "0", "0", "250", "50", "0", "0"}
	got, err := parseCPU(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * time.Second; got != want {
		t.Errorf("parseCPU(utime 250, stime 50) = %v; want %v", got, want)
	}
	if _, err := parseCPU(f[:5], nil); err == nil {
		t.Error("parseCPU(short) err = nil; want an error")
	}
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := cpuOf(pid); err != nil {
		t.Errorf("cpuOf(self) err = %v", err)
	}
	rss, err := RSS(pid)
	if err != nil || rss <= 0 {
		t.Errorf("RSS(self) = %d, %v; want > 0", rss, err)
	}
	kids, err := Children(os.Getppid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range kids {
		found = found || k == pid
	}
	if !found {
		t.Errorf("Children(parent) = %v; want it to include %d", kids, pid)
	}
}

func TestStartStop(t *testing.T) {
	p, err := Start(Spec{Name: "sleep", Path: "/bin/sleep", Args: []string{"30"}})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Exited(); ok {
		t.Fatal("sleep exited at once")
	}
	start := time.Now()
	if err := p.Stop(5 * time.Second); err != nil {
		t.Errorf("Stop() = %v; want nil", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Stop took %v; want SIGTERM to end sleep at once", d)
	}
}
