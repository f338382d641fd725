package ops

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantAddr string
		wantErr  bool
	}{
		{"default", nil, nil, "127.0.0.1:1", false},
		{"env", nil, map[string]string{"APP_LISTEN_ADDR": "127.0.0.1:2"}, "127.0.0.1:2", false},
		{"flag beats env", []string{"--listen-addr", "127.0.0.1:3"}, map[string]string{"APP_LISTEN_ADDR": "127.0.0.1:2"}, "127.0.0.1:3", false},
		{"bad env value", nil, map[string]string{"APP_VERBOSE": "maybe"}, "", true},
		{"unbound flag ignores env", nil, map[string]string{"APP_TOKEN": "x"}, "127.0.0.1:1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("app", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			addr := fs.String("listen-addr", "127.0.0.1:1", "where to listen")
			fs.Bool("verbose", false, "more logs")
			tok := fs.String("token", "", "not from env")
			err := ParseFlags(fs, "APP", tt.args, func(k string) string { return tt.env[k] }, "token")
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFlags() error = %v; want error %v", err, tt.wantErr)
			}
			if err == nil && (*addr != tt.wantAddr || *tok != "") {
				t.Errorf("listen-addr = %q, token = %q; want %q, empty", *addr, *tok, tt.wantAddr)
			}
		})
	}
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.String("grpc-addr", "127.0.0.1:50051", "gRPC listen address")
	var buf bytes.Buffer
	PrintUsage(&buf, fs, "BROKER", nil)
	if !strings.Contains(buf.String(), "BROKER_GRPC_ADDR") || !strings.Contains(buf.String(), "127.0.0.1:50051") {
		t.Errorf("PrintUsage() = %q; want env name and default", buf.String())
	}
}

func TestCheckExposure(t *testing.T) {
	tests := []struct {
		addrs          []string
		keys, insecure bool
		wantErr        bool
	}{
		{[]string{"127.0.0.1:1", "[::1]:2", "localhost:3"}, false, false, false},
		{[]string{"127.0.0.1:1", "0.0.0.0:2"}, false, false, true},
		{[]string{":8080"}, false, false, true},
		{[]string{"10.0.0.1:80"}, false, false, true},
		{[]string{"0.0.0.0:2"}, true, false, false},
		{[]string{"0.0.0.0:2"}, false, true, false},
	}
	for _, tt := range tests {
		err := CheckExposure(tt.addrs, tt.keys, tt.insecure, "keys-file")
		if (err != nil) != tt.wantErr {
			t.Errorf("CheckExposure(%v, %v, %v) = %v; want error %v", tt.addrs, tt.keys, tt.insecure, err, tt.wantErr)
		}
		if err != nil && (!errors.Is(err, ErrNoAuthBeyondLoopback) || !strings.Contains(err.Error(), "--keys-file")) {
			t.Errorf("CheckExposure() = %q; want ErrNoAuthBeyondLoopback naming --keys-file", err)
		}
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	l, err := NewLogger(&buf, "json", "warn")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"msg":"shown"`) {
		t.Errorf("log = %q; want only the warning, as JSON", buf.String())
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"json", "loud"}} {
		if _, err := NewLogger(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q) error = nil; want error", bad[0], bad[1])
		}
	}
}

func TestAdminAndServe(t *testing.T) {
	ready := errors.New("no token yet")
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "things_total", Help: "Things."}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &http.Server{Handler: AdminHandler(func() error { return ready }, reg), ReadHeaderTimeout: time.Second}
	go func() { done <- ServeHTTP(ctx, srv, ln, time.Second) }()
	base := "http://" + ln.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d; want 200", code)
	}
	if code, body := get("/readyz"); code != 503 || body != "not ready\n" {
		t.Errorf("/readyz = %d %q; want 503 with the status only (the cause can name the GitHub account)", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "things_total") {
		t.Errorf("/metrics = %d; want 200 with things_total", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeHTTP() after cancel = %v; want nil", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestLoadCertPool(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCertPool(good)
	if err != nil {
		t.Fatalf("LoadCertPool(good) error = %v", err)
	}
	if _, err := srv.Certificate().Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("certificate does not verify against the loaded pool: %v", err)
	}
	for _, path := range []string{empty, filepath.Join(dir, "missing.pem")} {
		if _, err := LoadCertPool(path); err == nil {
			t.Errorf("LoadCertPool(%s) error = nil; want an error", filepath.Base(path))
		}
	}
}
