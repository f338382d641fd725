package server

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	bserver "github.com/copilot-broker/copilot-broker/internal/broker/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const adminKey = "admin-broker-key-0123456789"

// managedStack is a stack whose broker keeps keys (SQLite in a temporary
// directory) and whose proxy follows them beside its keys file.
func managedStack(t *testing.T, proxy func(*Config)) (*stack, brokerv1.KeyServiceClient, context.Context) {
	t.Helper()
	dir := t.TempDir()
	st := startStack(t, stackOpts{
		broker: func(c *bserver.Config) {
			c.StateDir = dir
			c.Keys = mustKeys(t, "proxy:"+brokerKey+"\nops:"+adminKey+":*:admin\n")
		},
		proxy: func(c *Config) {
			c.KeysFromBroker = true
			if proxy != nil {
				proxy(c)
			}
		},
	})
	cc, err := grpc.NewClient("passthrough:///"+st.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return st, brokerv1.NewKeyServiceClient(cc), metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminKey)
}

// waitStatus polls the proxy until the request with key answers want, for
// at most limit; it returns how long that took.
func (st *stack) waitStatus(key, method, path, body string, want int, limit time.Duration) time.Duration {
	st.t.Helper()
	start := time.Now()
	for {
		resp, b := st.do(method, path, body, map[string]string{"Authorization": "Bearer " + key})
		if resp.StatusCode == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			st.t.Fatalf("%s %s with the key = %d %s after %s; want %d", method, path, resp.StatusCode, b, limit, want)
		}
		time.Sleep(10 * time.Millisecond) // a poll, bounded by limit
	}
}

func TestManagedKeys(t *testing.T) {
	st, kc, admin := managedStack(t, nil)
	created, err := kc.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "carol", Models: []string{"gpt-5*", "claude-sonnet-*"}})
	if err != nil {
		t.Fatal(err)
	}
	sec := created.GetSecret()
	chat := `{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}`
	if d := st.waitStatus(sec, "POST", "/v1/chat/completions", chat, 200, 5*time.Second); d > time.Second {
		t.Errorf("a new key worked after %s; want < 1s", d)
	}
	// The file key still works beside it.
	if resp, body := st.do("POST", "/v1/chat/completions", chat, nil); resp.StatusCode != 200 {
		t.Fatalf("file key = %d %s", resp.StatusCode, body)
	}

	// Outside the allow list: 403 in the client's dialect, naming what is allowed.
	resp, body := st.do("POST", "/v1/chat/completions", `{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}`, map[string]string{"Authorization": "Bearer " + sec})
	if resp.StatusCode != 403 || !strings.Contains(body, `"code":"model_not_allowed"`) || !strings.Contains(body, "gpt-5*, claude-sonnet-*") {
		t.Errorf("chat outside the allow list = %d %s", resp.StatusCode, body)
	}
	resp, body = st.do("POST", "/v1/messages", `{"model":"claude-opus-4.1","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"Authorization": "", "X-Api-Key": sec, "Anthropic-Version": "2023-06-01"})
	if resp.StatusCode != 403 || !strings.Contains(body, `"type":"permission_error"`) || !strings.Contains(body, "claude-opus-4.1") {
		t.Errorf("messages outside the allow list = %d %s", resp.StatusCode, body)
	}
	// A built-in name resolving into the list is allowed.
	resp, body = st.do("POST", "/v1/messages", `{"model":"claude-sonnet-4-5-20250929","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`,
		map[string]string{"Authorization": "", "X-Api-Key": sec, "Anthropic-Version": "2023-06-01"})
	if resp.StatusCode != 200 {
		t.Errorf("messages with a name resolving into the list = %d %s", resp.StatusCode, body)
	}
	// /v1/models lists only the allowed models.
	resp, body = st.do("GET", "/v1/models", "", map[string]string{"Authorization": "Bearer " + sec})
	if resp.StatusCode != 200 || !strings.Contains(body, `"gpt-5-mini"`) || strings.Contains(body, `"gpt-4.1"`) || strings.Contains(body, `"claude-opus-4.1"`) {
		t.Errorf("/v1/models = %d %s", resp.StatusCode, body)
	}
	if resp, _ := st.do("GET", "/v1/models/gpt-4.1", "", map[string]string{"Authorization": "Bearer " + sec}); resp.StatusCode != 403 {
		t.Errorf("/v1/models/gpt-4.1 = %d; want 403", resp.StatusCode)
	}

	// Disabled, enabled, revoked: each within a second.
	if _, err := kc.UpdateKey(admin, &brokerv1.UpdateKeyRequest{Name: "carol", Disabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if d := st.waitStatus(sec, "POST", "/v1/chat/completions", chat, 401, 5*time.Second); d > time.Second {
		t.Errorf("a disabled key was refused after %s; want < 1s", d)
	}
	if _, err := kc.UpdateKey(admin, &brokerv1.UpdateKeyRequest{Name: "carol", Disabled: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	st.waitStatus(sec, "POST", "/v1/chat/completions", chat, 200, 5*time.Second)
	if _, err := kc.RevokeKey(admin, &brokerv1.RevokeKeyRequest{Name: "carol"}); err != nil {
		t.Fatal(err)
	}
	if d := st.waitStatus(sec, "POST", "/v1/chat/completions", chat, 401, 5*time.Second); d > time.Second {
		t.Errorf("a revoked key was refused after %s; want < 1s", d)
	}
}

func TestManagedKeyExpires(t *testing.T) {
	st, kc, admin := managedStack(t, nil)
	created, err := kc.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "dave"})
	if err != nil {
		t.Fatal(err)
	}
	chat := `{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}`
	st.waitStatus(created.GetSecret(), "POST", "/v1/chat/completions", chat, 200, 5*time.Second)
	exp := time.Now().Add(1500 * time.Millisecond)
	if _, err := kc.UpdateKey(admin, &brokerv1.UpdateKeyRequest{Name: "dave", ExpiresAt: timestampOf(exp)}); err != nil {
		t.Fatal(err)
	}
	st.waitStatus(created.GetSecret(), "POST", "/v1/chat/completions", chat, 401, 10*time.Second)
	if late := time.Since(exp); late > time.Second {
		t.Errorf("an expired key was refused %s after its expiry; want < 1s", late)
	}
}

// TestManagedKeysNameClash: a proxy whose keys file has a name the broker
// manages refuses to start.
func TestManagedKeysNameClash(t *testing.T) {
	st, kc, admin := managedStack(t, nil)
	if _, err := kc.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{
		Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", BrokerAddr: st.grpc, BrokerKey: st.proxy.cfg.BrokerKey,
		Keys: mustKeys(t, "alice:"+aliceKey+"\n"), KeysFromBroker: true, CopilotAPIURL: st.sbURL,
	})
	if err == nil || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("Start with a clashing name = %v; want a refusal naming alice", err)
	}
}

// TestManagedKeysStale: the broker gone longer than --keys-max-stale makes
// managed keys 503 with the cause, file keys keep working; the broker back
// restores them.
func TestManagedKeysStale(t *testing.T) {
	st, kc, admin := managedStack(t, func(c *Config) { c.KeysMaxStale = 300 * time.Millisecond })
	created, err := kc.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "erin"})
	if err != nil {
		t.Fatal(err)
	}
	sec := created.GetSecret()
	chat := `{"model":"gpt-5-mini","messages":[{"role":"user","content":"hi"}]}`
	st.waitStatus(sec, "POST", "/v1/chat/completions", chat, 200, 5*time.Second)
	addr := st.grpc
	if err := st.broker.Close(); err != nil {
		t.Fatal(err)
	}
	st.waitStatus(sec, "POST", "/v1/chat/completions", chat, http.StatusServiceUnavailable, 10*time.Second)
	resp, body := st.do("POST", "/v1/chat/completions", chat, map[string]string{"Authorization": "Bearer " + sec})
	if !strings.Contains(body, "keys-max-stale") {
		t.Errorf("stale managed key = %d %s; want the cause named", resp.StatusCode, body)
	}
	st.startBroker(addr)
	t.Cleanup(func() { st.broker.Close() })
	st.waitStatus(sec, "POST", "/v1/chat/completions", chat, 200, 15*time.Second)
}

func ptr[T any](v T) *T { return &v }

func timestampOf(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }
