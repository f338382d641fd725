package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/copilot-broker/copilot-broker/internal/testutil/pgtest"
	"github.com/google/go-cmp/cmp"
)

var pg *pgtest.Server

func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m, &pg)) }

// engines is every engine the suite runs against; each call opens a fresh
// database.
var engines = []struct {
	name string
	cfg  func(t *testing.T) Config
}{
	{"sqlite", func(t *testing.T) Config { return Config{StateDir: t.TempDir()} }},
	{"postgres", func(t *testing.T) Config { return Config{DatabaseURL: pg.NewDatabase(t)} }},
}

// forEngine runs f once per engine with a fresh store.
func forEngine(t *testing.T, f func(t *testing.T, s Store, cfg Config)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			cfg := e.cfg(t)
			now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
			var mu sync.Mutex
			cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(time.Second); return now }
			s, err := Open(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			f(t, s, cfg)
		})
	}
}

func testKey(name string) Key {
	return Key{Name: name, Digest: DigestOf("secret-of-" + name), Accounts: "a,b", Models: []string{"gpt-*", "claude-sonnet-*"},
		ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), CreatedBy: "ops"}
}

func TestKeysCRUD(t *testing.T) {
	forEngine(t, func(t *testing.T, s Store, _ Config) {
		ctx := context.Background()
		v0, err := s.KeysVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := testKey("alice")
		if err := s.CreateKey(ctx, want); err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		got, err := s.Key(ctx, "alice")
		if err != nil {
			t.Fatalf("Key: %v", err)
		}
		want.State, want.CreatedAt, want.UpdatedAt = StateActive, got.CreatedAt, got.UpdatedAt
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Key(alice) (-want +got):\n%s", diff)
		}
		if got.CreatedAt.IsZero() {
			t.Error("CreatedAt not set")
		}

		dup := testKey("alice")
		dup.Digest = DigestOf("other")
		if err := s.CreateKey(ctx, dup); !errors.Is(err, ErrExists) {
			t.Errorf("CreateKey(same name) = %v; want ErrExists", err)
		}
		sameSecret := testKey("bob")
		sameSecret.Digest = want.Digest
		if err := s.CreateKey(ctx, sameSecret); !errors.Is(err, ErrExists) {
			t.Errorf("CreateKey(same secret) = %v; want ErrExists", err)
		}
		if _, err := s.Key(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Key(nobody) = %v; want ErrNotFound", err)
		}

		upd, err := s.UpdateKey(ctx, "alice", func(k *Key) error {
			k.Models, k.State, k.ExpiresAt = nil, StateDisabled, time.Time{}
			k.Name = "renamed" // ignored
			return nil
		})
		if err != nil {
			t.Fatalf("UpdateKey: %v", err)
		}
		if upd.Name != "alice" || upd.State != StateDisabled || upd.Models != nil || !upd.ExpiresAt.IsZero() || !upd.UpdatedAt.After(got.UpdatedAt) {
			t.Errorf("UpdateKey = %+v", upd)
		}
		boom := errors.New("boom")
		if _, err := s.UpdateKey(ctx, "alice", func(k *Key) error { k.State = StateRevoked; return boom }); !errors.Is(err, boom) {
			t.Errorf("UpdateKey(failing func) = %v; want boom", err)
		}
		if _, err := s.UpdateKey(ctx, "nobody", func(*Key) error { return nil }); !errors.Is(err, ErrNotFound) {
			t.Errorf("UpdateKey(nobody) = %v; want ErrNotFound", err)
		}
		if k, _ := s.Key(ctx, "alice"); k.State != StateDisabled {
			t.Errorf("state after failed update = %s; want disabled", k.State)
		}

		if err := s.CreateKey(ctx, testKey("bob")); err != nil {
			t.Fatal(err)
		}
		list, err := s.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Name != "alice" || list[1].Name != "bob" {
			t.Errorf("Keys = %v; want alice, bob", list)
		}
		v1, _ := s.KeysVersion(ctx)
		if v1 != v0+3 { // two creates, one update; failures count nothing
			t.Errorf("KeysVersion = %d after 3 changes from %d", v1, v0)
		}
	})
}

func TestTouchKeys(t *testing.T) {
	forEngine(t, func(t *testing.T, s Store, _ Config) {
		ctx := context.Background()
		if err := s.CreateKey(ctx, testKey("alice")); err != nil {
			t.Fatal(err)
		}
		v0, _ := s.KeysVersion(ctx)
		t1 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
		if err := s.TouchKeys(ctx, map[string]time.Time{"alice": t1, "unknown": t1}); err != nil {
			t.Fatal(err)
		}
		if err := s.TouchKeys(ctx, map[string]time.Time{"alice": t1.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		k, _ := s.Key(ctx, "alice")
		if !k.LastUsedAt.Equal(t1) {
			t.Errorf("LastUsedAt = %v; want %v (never backwards)", k.LastUsedAt, t1)
		}
		if v, _ := s.KeysVersion(ctx); v != v0 {
			t.Errorf("KeysVersion moved on TouchKeys: %d -> %d", v0, v)
		}
	})
}

func TestReopenKeepsKeysAndSchema(t *testing.T) {
	forEngine(t, func(t *testing.T, s Store, cfg Config) {
		ctx := context.Background()
		if err := s.CreateKey(ctx, testKey("alice")); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(ctx, cfg) // migrations are idempotent; a second broker shares the data
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer s2.Close()
		if _, err := s2.Key(ctx, "alice"); err != nil {
			t.Errorf("Key via second store: %v", err)
		}
		v, err := schemaVersion(ctx, s2.(*sqlStore).db)
		if err != nil || v != SchemaVersion() {
			t.Errorf("schema version = %d, %v; want %d", v, err, SchemaVersion())
		}
	})
}

func TestRefusesNewerSchema(t *testing.T) {
	forEngine(t, func(t *testing.T, s Store, cfg Config) {
		ctx := context.Background()
		if _, err := s.(*sqlStore).db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)`, SchemaVersion()+1); err != nil {
			t.Fatal(err)
		}
		_, err := Open(ctx, cfg)
		if !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("Open on a newer schema = %v; want ErrSchemaTooNew", err)
		}
	})
}

func TestConcurrentOpenAndUpdates(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			cfg := e.cfg(t)
			ctx := context.Background()
			// Several brokers starting at once migrate exactly once.
			stores := make([]Store, 4)
			errs := make([]error, len(stores))
			var wg sync.WaitGroup
			for i := range stores {
				wg.Add(1)
				go func() { defer wg.Done(); stores[i], errs[i] = Open(ctx, cfg) }()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("Open %d: %v", i, err)
				}
				defer stores[i].Close()
			}
			v0, _ := stores[0].KeysVersion(ctx)
			const n = 20
			for i := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range n {
						name := fmt.Sprintf("k%d-%d", i, j)
						if err := stores[i].CreateKey(ctx, Key{Name: name, Digest: DigestOf(name)}); err != nil {
							t.Errorf("CreateKey: %v", err)
							return
						}
					}
				}()
			}
			wg.Wait()
			v1, _ := stores[1].KeysVersion(ctx)
			if v1-v0 != int64(len(stores)*n) {
				t.Errorf("KeysVersion grew by %d; want %d", v1-v0, len(stores)*n)
			}
		})
	}
}

func TestDefaultStateDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	got, _ := DefaultStateDir(env(map[string]string{"XDG_STATE_HOME": "/x", "HOME": "/h"}))
	if got != filepath.Join("/x", "copilot-broker") {
		t.Errorf("with XDG_STATE_HOME = %s", got)
	}
	got, _ = DefaultStateDir(env(map[string]string{"HOME": "/h"}))
	if got != "/h/.local/state/copilot-broker" {
		t.Errorf("with HOME = %s", got)
	}
	if got, ok := DefaultStateDir(env(nil)); ok {
		t.Errorf("with neither = %s; want none", got)
	}
}

func TestOpenSQLiteFileMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(context.Background(), Config{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	if _, err := Open(context.Background(), Config{DatabaseURL: "mysql://x"}); err == nil {
		t.Error("Open(mysql://) succeeded")
	}
}
