package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/copilot-broker/copilot-broker/gen/go/copilot/broker/v1"
	"github.com/copilot-broker/copilot-broker/internal/keys"
	"github.com/copilot-broker/copilot-broker/internal/sandbox"
	"github.com/copilot-broker/copilot-broker/internal/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const adminKey = "admin-key-0123456789abcdef"

// adminKeys are the broker keys of the key tests: ops is admin, proxy not.
func adminKeys(t *testing.T) *keys.Set {
	t.Helper()
	set, err := keys.Parse(strings.NewReader("ops:" + adminKey + ":*:admin\nproxy:" + testKey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// storeEngines configure a broker's store: a fresh SQLite directory, or a
// fresh PostgreSQL database that every broker of the test shares.
var storeEngines = []struct {
	name string
	set  func(t *testing.T) func(*Config)
}{
	{"sqlite", func(t *testing.T) func(*Config) {
		dir := t.TempDir()
		return func(c *Config) { c.StateDir = dir }
	}},
	{"postgres", func(t *testing.T) func(*Config) {
		url := pg.NewDatabase(t)
		return func(c *Config) { c.DatabaseURL = url }
	}},
}

func keyClient(e *env) brokerv1.KeyServiceClient { return brokerv1.NewKeyServiceClient(e.conn()) }

func TestKeysManagedByAdmin(t *testing.T) {
	for _, eng := range storeEngines {
		t.Run(eng.name, func(t *testing.T) {
			var logs testutil.SyncBuffer
			cfg := Config{Keys: adminKeys(t), Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			eng.set(t)(&cfg)
			e := start(t, sandbox.Config{}, cfg)
			c := keyClient(e)
			ctx := timeout(t, 30*time.Second)
			admin, proxy := withKey(ctx, adminKey), withKey(ctx, testKey)

			// A proxy's key watches; it manages nothing.
			watch, err := c.WatchKeys(proxy, &brokerv1.WatchKeysRequest{})
			if err != nil {
				t.Fatal(err)
			}
			first, err := watch.Recv()
			if err != nil || len(first.GetKeys()) != 0 {
				t.Fatalf("first WatchKeys = %v, %v; want the empty set", first, err)
			}
			_, err = c.CreateKey(proxy, &brokerv1.CreateKeyRequest{Name: "u1"})
			wantCode(t, "CreateKey(proxy key)", err, codes.PermissionDenied)
			_, err = c.ListKeys(proxy, &brokerv1.ListKeysRequest{})
			wantCode(t, "ListKeys(proxy key)", err, codes.PermissionDenied)
			_, err = c.RevokeKey(proxy, &brokerv1.RevokeKeyRequest{Name: "u1"})
			wantCode(t, "RevokeKey(proxy key)", err, codes.PermissionDenied)
			_, err = c.UpdateKey(proxy, &brokerv1.UpdateKeyRequest{Name: "u1"})
			wantCode(t, "UpdateKey(proxy key)", err, codes.PermissionDenied)

			created, err := c.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "u1", Accounts: "*", Models: []string{"gpt-*"},
				ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))})
			if err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			sec := created.GetSecret()
			if len(sec) < 32 || created.GetKey().GetDigest() == "" || created.GetKey().GetCreatedBy() != "ops" {
				t.Fatalf("CreateKey = %v", created)
			}
			got, err := watch.Recv()
			if err != nil || len(got.GetKeys()) != 1 || got.GetKeys()[0].GetName() != "u1" || got.GetKeys()[0].GetModels()[0] != "gpt-*" {
				t.Fatalf("WatchKeys after create = %v, %v", got, err)
			}

			for _, bad := range []*brokerv1.CreateKeyRequest{
				{Name: "u1"},
				{Name: "bad name"},
				{Name: "u2", Models: []string{"gpt 4"}},
				{Name: "u2", Accounts: "a,,b"},
				{Name: "u2", ExpiresAt: timestamppb.New(time.Now().Add(-time.Hour))},
				{Name: "u2", Secret: "short"},
			} {
				_, err := c.CreateKey(admin, bad)
				want := codes.InvalidArgument
				if bad.GetName() == "u1" {
					want = codes.AlreadyExists
				}
				wantCode(t, "CreateKey("+bad.String()+")", err, want)
			}
			imported := "imported-secret-0123456789"
			resp, err := c.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "u2", Secret: imported})
			if err != nil || resp.GetSecret() != "" {
				t.Fatalf("CreateKey(import) = %v, %v; want no secret echoed", resp, err)
			}
			_, err = c.CreateKey(admin, &brokerv1.CreateKeyRequest{Name: "u3", Secret: imported})
			wantCode(t, "CreateKey(same secret)", err, codes.AlreadyExists)

			upd, err := c.UpdateKey(admin, &brokerv1.UpdateKeyRequest{Name: "u1", Disabled: ptr(true), Models: &brokerv1.ModelList{}, ClearExpiresAt: true})
			if err != nil || upd.GetKey().GetState() != brokerv1.KeyState_KEY_STATE_DISABLED || len(upd.GetKey().GetModels()) != 0 || upd.GetKey().GetExpiresAt() != nil {
				t.Fatalf("UpdateKey = %v, %v", upd, err)
			}
			_, err = c.UpdateKey(admin, &brokerv1.UpdateKeyRequest{Name: "nobody", Disabled: ptr(true)})
			wantCode(t, "UpdateKey(unknown)", err, codes.NotFound)
			if _, err := c.RevokeKey(admin, &brokerv1.RevokeKeyRequest{Name: "u1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.RevokeKey(admin, &brokerv1.RevokeKeyRequest{Name: "u1"}); err != nil {
				t.Fatalf("RevokeKey twice = %v; want OK", err)
			}
			_, err = c.UpdateKey(admin, &brokerv1.UpdateKeyRequest{Name: "u1", Disabled: ptr(false)})
			wantCode(t, "UpdateKey(revoked)", err, codes.FailedPrecondition)
			waitWatch(t, watch, func(r *brokerv1.WatchKeysResponse) bool {
				return len(r.GetKeys()) == 1 && r.GetKeys()[0].GetName() == "u2"
			})
			list, err := c.ListKeys(admin, &brokerv1.ListKeysRequest{})
			if err != nil || len(list.GetKeys()) != 2 || list.GetKeys()[0].GetState() != brokerv1.KeyState_KEY_STATE_REVOKED {
				t.Fatalf("ListKeys = %v, %v; want u1 revoked and u2", list, err)
			}

			for _, m := range []string{`msg="key created" key=u1 by=ops`, `msg="key updated" key=u1 by=ops`, `msg="key revoked" key=u1 by=ops`} {
				if !strings.Contains(logs.String(), m) {
					t.Errorf("log lacks %q", m)
				}
			}
			for _, s := range []string{sec, imported} {
				if strings.Contains(logs.String(), s) || strings.Contains(list.String(), s) {
					t.Errorf("a secret is in the logs or ListKeys")
				}
			}
		})
	}
}

func TestKeysREST(t *testing.T) {
	cfg := Config{Keys: adminKeys(t), StateDir: t.TempDir()}
	e := start(t, sandbox.Config{}, cfg)
	base := "http://" + e.srv.Addrs().HTTP
	hc := httpClient(t)
	do := func(method, path, key, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/keys", `{"name":"u1"}`}, {"GET", "/v1/keys", ""},
		{"PATCH", "/v1/keys/u1", `{"disabled":true}`}, {"DELETE", "/v1/keys/u1", ""},
	} {
		if code, body := do(c.method, c.path, testKey, c.body); code != http.StatusForbidden {
			t.Errorf("%s %s with the proxy's key = %d %s; want 403", c.method, c.path, code, body)
		}
	}
	code, body := do("POST", "/v1/keys", adminKey, `{"name":"u1","models":["claude-*"]}`)
	var created struct {
		Key    struct{ Name, Digest string }
		Secret string
	}
	if err := json.Unmarshal([]byte(body), &created); code != 200 || err != nil || created.Secret == "" {
		t.Fatalf("POST /v1/keys = %d %s", code, body)
	}
	if code, body := do("PATCH", "/v1/keys/u1", adminKey, `{"disabled":true}`); code != 200 || !strings.Contains(body, "KEY_STATE_DISABLED") {
		t.Errorf("PATCH = %d %s", code, body)
	}
	if code, body := do("DELETE", "/v1/keys/nobody", adminKey, ""); code != http.StatusNotFound {
		t.Errorf("DELETE unknown = %d %s; want 404", code, body)
	}
	if code, body := do("POST", "/v1/keys", adminKey, `{"name":"u1"}`); code != http.StatusConflict {
		t.Errorf("POST duplicate = %d %s; want 409", code, body)
	}

	// The proxy's key watches, and sees no secret.
	req, _ := http.NewRequestWithContext(timeout(t, 10*time.Second), "GET", base+"/v1/keys:watch", nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || resp.StatusCode != 200 || !strings.Contains(line, created.Key.Digest) || strings.Contains(line, created.Secret) {
		t.Fatalf("GET /v1/keys:watch = %d %q, %v", resp.StatusCode, line, err)
	}
}

// TestKeysAcrossBrokers: two brokers sharing one PostgreSQL database; a key
// created on one reaches a watcher of the other within a second.
func TestKeysAcrossBrokers(t *testing.T) {
	url := pg.NewDatabase(t)
	sb := startSandbox(t, sandbox.Config{})
	a := startBroker(t, sb, Config{Keys: adminKeys(t), DatabaseURL: url})
	b := startBroker(t, sb, Config{Keys: adminKeys(t), DatabaseURL: url})
	ctx := timeout(t, 30*time.Second)
	watch, err := keyClient(b).WatchKeys(withKey(ctx, testKey), &brokerv1.WatchKeysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := keyClient(a).CreateKey(withKey(ctx, adminKey), &brokerv1.CreateKeyRequest{Name: "u1"}); err != nil {
		t.Fatal(err)
	}
	waitWatch(t, watch, func(r *brokerv1.WatchKeysResponse) bool { return len(r.GetKeys()) == 1 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("the key reached the other broker's watcher after %s; want < 1s", d)
	}
}

// TestKeysKeptAcrossRestart: a broker restarted on the same state directory
// serves the keys it had.
func TestKeysKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	sb := startSandbox(t, sandbox.Config{})
	cfg := Config{Keys: adminKeys(t), StateDir: dir}
	e := startBroker(t, sb, cfg)
	ctx := timeout(t, 30*time.Second)
	if _, err := keyClient(e).CreateKey(withKey(ctx, adminKey), &brokerv1.CreateKeyRequest{Name: "u1"}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := startBroker(t, sb, cfg)
	list, err := keyClient(e2).ListKeys(withKey(ctx, adminKey), &brokerv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 {
		t.Fatalf("ListKeys after restart = %v, %v", list, err)
	}
}

func waitWatch(t *testing.T, w brokerv1.KeyService_WatchKeysClient, ok func(*brokerv1.WatchKeysResponse) bool) {
	t.Helper()
	for {
		r, err := w.Recv()
		if err != nil {
			t.Fatalf("WatchKeys: %v", err)
		}
		if ok(r) {
			return
		}
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Errorf("%s = %v; want %s", what, err, want)
	}
}

func ptr[T any](v T) *T { return &v }

// TestKeysWatchSeesAnsweredChange: once CreateKey, UpdateKey or RevokeKey
// has answered, a WatchKeys started then has the change in its first
// message, with no poll in between (a proxy starting right after a key was
// created checks its file keys against that first message).
func TestKeysWatchSeesAnsweredChange(t *testing.T) {
	e := startBroker(t, startSandbox(t, sandbox.Config{}), Config{Keys: adminKeys(t), StateDir: t.TempDir(), KeysPollInterval: time.Hour})
	ctx := timeout(t, 30*time.Second)
	kc := keyClient(e)
	first := func() *brokerv1.WatchKeysResponse {
		t.Helper()
		wctx, cancel := context.WithCancel(withKey(ctx, testKey))
		defer cancel()
		w, err := kc.WatchKeys(wctx, &brokerv1.WatchKeysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	state := func(r *brokerv1.WatchKeysResponse, name string) string {
		for _, k := range r.GetKeys() {
			if k.GetName() == name {
				return k.GetState().String()
			}
		}
		return "absent"
	}
	for i := range 10 {
		name := fmt.Sprintf("k%d", i)
		if _, err := kc.CreateKey(withKey(ctx, adminKey), &brokerv1.CreateKeyRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		if got := state(first(), name); got == "absent" {
			t.Fatalf("%s: a watch started after CreateKey answered does not have it", name)
		}
		disabled, yes := brokerv1.KeyState_KEY_STATE_DISABLED, true
		if _, err := kc.UpdateKey(withKey(ctx, adminKey), &brokerv1.UpdateKeyRequest{Name: name, Disabled: &yes}); err != nil {
			t.Fatal(err)
		}
		if got := state(first(), name); got != disabled.String() {
			t.Fatalf("%s: a watch started after UpdateKey answered has it %s; want %s", name, got, disabled)
		}
		if _, err := kc.RevokeKey(withKey(ctx, adminKey), &brokerv1.RevokeKeyRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		if got := state(first(), name); got != "absent" {
			t.Fatalf("%s: a watch started after RevokeKey answered has it %s; want it gone", name, got)
		}
	}
}
