package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/secret"
)

// A proxy whose token names an api_base_url it refuses would answer every
// request 503: it must not report ready. The sandbox's tokens name its own
// http://127.0.0.1 URL, which only the --copilot-api-url override accepts.
func TestNotReadyWhenTheTokensBaseURLIsRefused(t *testing.T) {
	st := startStack(t, stackOpts{})
	p, err := Start(context.Background(), Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		BrokerAddr: st.grpc, BrokerKey: secret.New(brokerKey),
		Keys:       mustKeys(t, "alice:"+aliceKey+"\n"),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, ShutdownGrace: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for { // the token is held ...
		if _, err := p.Token(); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no token within 10 s")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := p.Ready(); err == nil || !strings.Contains(err.Error(), "base URL") {
		t.Errorf("Ready() with a refused api_base_url = %v; want an error naming the base URL", err)
	}
	if code, body := get(t, "http://"+p.Addrs().Admin+"/readyz"); code != 503 {
		t.Errorf("/readyz with a refused api_base_url = %d %s; want 503", code, body)
	}
}
